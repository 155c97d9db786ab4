//! Random tokens: unpredictable names for things that must never be confused with one another
//! — a shard's epoch, the nonce that makes each version unique, a sidecar process's
//! incarnation in the server registry.

/// A random token of 16 lowercase hex digits.
pub fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}
