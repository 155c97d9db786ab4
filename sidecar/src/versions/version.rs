//! The version token `<epoch>.<seq>.<nonce>`, and what the sidecar knows about a version.
//!
//! Every version is issued by `shard.lua`: the shard's epoch (a random token, replaced
//! whenever the shard's history may have been lost), the sequence number the version took in
//! that epoch, and a nonce the caller drew (a random token too), so that no two issues ever give
//! the same token. Apps compare tokens for equality only. The sidecar reads their parts, and
//! only here: to keep mirror entries as two integers ([`Version::parse`]) and to tell whether a
//! token may be newer than what the mirror knows ([`Version::position`]). A version written into
//! Redis by hand need not have this form; it is then compared as text and never parsed.

use std::sync::Arc;

#[cfg(test)]
use crate::token::random_token;

/// A version string shared between the mirror, callers and watchers.
pub type VersionStr = Arc<str>;

/// A version known to be its key's current one as of sequence `as_of` of its shard's `epoch`:
/// what the sidecar tells clients with every version, so that they can order what they learn
/// about a key (docs/client-protocol.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionAt {
    pub version: VersionStr,
    pub epoch: Arc<str>,
    pub as_of: u64,
}

impl std::fmt::Display for VersionAt {
    /// The version token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.version)
    }
}

/// The parts of a version token in the form `shard.lua` issues: the epoch, the sequence in
/// decimal without leading zeros, and the nonce as exactly 16 lowercase hex digits. Parsing
/// and [`Display`](std::fmt::Display) are exact inverses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version<'a> {
    pub epoch: &'a str,
    pub seq: u64,
    pub nonce: u64,
}

impl<'a> Version<'a> {
    /// The parts of `token`, if it has exactly the form the shard script issues.
    pub fn parse(token: &'a str) -> Option<Version<'a>> {
        let (epoch, rest) = token.split_once('.')?;
        let (seq, nonce) = rest.split_once('.')?;
        let canonical_seq = !seq.is_empty()
            && seq.bytes().all(|b| b.is_ascii_digit())
            && (seq == "0" || !seq.starts_with('0'));
        let canonical_nonce = nonce.len() == 16
            && nonce
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !canonical_seq || !canonical_nonce {
            return None;
        }
        Some(Version {
            epoch,
            seq: seq.parse().ok()?,
            nonce: u64::from_str_radix(nonce, 16).ok()?,
        })
    }

    /// The epoch `token` names and the sequence it claims (`None` when that part is not a
    /// number), read leniently whatever the rest looks like: enough to tell whether it could
    /// be newer than a version known as of a position. `None` for a token without two parts.
    pub fn position(token: &str) -> Option<(&str, Option<u64>)> {
        let mut parts = token.splitn(3, '.');
        let (Some(epoch), Some(seq)) = (parts.next(), parts.next()) else {
            return None;
        };
        Some((epoch, seq.parse().ok()))
    }
}

impl std::fmt::Display for Version<'_> {
    /// The token, exactly as the shard script writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{:016x}", self.epoch, self.seq, self.nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_what_the_script_issues_and_renders_it_back() {
        for token in [
            "0123456789abcdef.7.00000000000000ff",
            "0123456789abcdef.0.ffffffffffffffff",
            "0123456789abcdef.18446744073709551615.0000000000000001",
        ] {
            let version = Version::parse(token).unwrap();
            assert_eq!(version.to_string(), token);
        }
        for token in [
            "0123456789abcdef.07.00000000000000ff",
            "0123456789abcdef.+7.00000000000000ff",
            "0123456789abcdef.7.00000000000000FF",
            "0123456789abcdef.7.ff",
            "0123456789abcdef.7.00000000000000ff.x",
            "0123456789abcdef..00000000000000ff",
            "0123456789abcdef.18446744073709551616.00000000000000ff",
            "hand-written",
        ] {
            assert_eq!(Version::parse(token), None, "{token}");
        }
        let nonce = random_token();
        let token = format!("e1.3.{nonce}");
        assert_eq!(Version::parse(&token).map(|v| v.seq), Some(3));
    }

    use coherence_testkit::fuzz;
    use proptest::prelude::*;

    /// Tokens near the issued form: three dot-separated parts, often almost right.
    fn near_tokens() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            "[0-9a-f]{16}",
            "[0-9a-fA-F]{0,18}",
            "[+-]?[0-9]{0,21}",
            "\\PC{0,6}",
        ];
        proptest::collection::vec(part, 1..5).prop_map(|parts| parts.join("."))
    }

    /// What a client or Redis hands in: no panic, the parts are pieces of the token, and a
    /// token that parses is exactly the rendering of its parts.
    fn check_any_token(token: &str) -> Result<(), TestCaseError> {
        if let Some(version) = Version::parse(token) {
            prop_assert_eq!(version.to_string(), token);
            prop_assert!(!version.epoch.contains('.'));
        }
        if let Some((epoch, seq)) = Version::position(token) {
            prop_assert!(token.starts_with(epoch) && !epoch.contains('.'));
            if let Some(version) = Version::parse(token) {
                prop_assert_eq!((epoch, seq), (version.epoch, Some(version.seq)));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        #[test]
        fn fuzz_version_token_any(token in "\\PC{0,64}") {
            check_any_token(&token)?;
        }

        #[test]
        fn fuzz_version_token_near_format(token in near_tokens()) {
            check_any_token(&token)?;
        }

        #[test]
        fn fuzz_version_token_round_trip(epoch in "[^.]{0,24}", seq in any::<u64>(), nonce in any::<u64>()) {
            let version = Version { epoch: &epoch, seq, nonce };
            let token = version.to_string();
            prop_assert_eq!(Version::parse(&token), Some(version));
        }
    }
}
