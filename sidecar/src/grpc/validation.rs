//! Request validation for every gRPC service: what a request may contain, and the
//! `INVALID_ARGUMENT` that names the field (and index) of the first thing wrong with it. Keys,
//! prefixes, job and topic names, and durations are checked here and nowhere else.

use tonic::Status;

/// Longest version token accepted, in bytes. The sidecar's own tokens are at most 54 bytes
/// (`<16 hex>.<u64>.<16 hex>`); a longer one cannot be current, and is refused rather than
/// carried into a Redis read.
pub const MAX_TOKEN_BYTES: usize = 128;

/// The limits from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_batch_keys: usize,
    /// Most prefixes one Watch may name.
    pub max_watch_prefixes: usize,
    /// Most bytes all prefixes of one Watch may add up to.
    pub max_watch_prefix_bytes: usize,
}

impl Limits {
    /// The limits of `max_key_bytes` and `max_batch_keys` alone, the Watch limits as large
    /// (for tests and tools that care about keys only).
    pub fn for_keys(max_key_bytes: usize, max_batch_keys: usize) -> Limits {
        Limits {
            max_key_bytes,
            max_batch_keys,
            max_watch_prefixes: max_batch_keys,
            max_watch_prefix_bytes: max_batch_keys.saturating_mul(max_key_bytes),
        }
    }

    /// Checks the prefixes of a Watch: each at most `max_key_bytes` (empty allowed: every
    /// key), at most `max_watch_prefixes` of them and `max_watch_prefix_bytes` in all.
    pub fn check_prefixes(&self, prefixes: &[String]) -> Result<(), Status> {
        self.check_stream_filters("prefixes", prefixes)?;
        for (i, prefix) in prefixes.iter().enumerate() {
            self.check_key(&format!("prefixes[{i}]"), prefix, true)?;
        }
        Ok(())
    }

    /// Checks the topics of a Subscribe: at least one, each a valid name, and the same count
    /// and byte limits as Watch prefixes (a stream holds them while open).
    pub fn check_topics(&self, topics: &[String]) -> Result<(), Status> {
        if topics.is_empty() {
            return Err(Status::invalid_argument("topics: name at least one topic"));
        }
        self.check_stream_filters("topics", topics)?;
        for (i, topic) in topics.iter().enumerate() {
            self.check_name(&format!("topics[{i}]"), topic)?;
        }
        Ok(())
    }

    /// What a stream keeps for its whole life: at most `max_watch_prefixes` items of
    /// `max_watch_prefix_bytes` in all.
    fn check_stream_filters(&self, field: &str, items: &[String]) -> Result<(), Status> {
        if items.len() > self.max_watch_prefixes {
            return Err(Status::invalid_argument(format!(
                "{field}: {} items, more than max_watch_prefixes ({})",
                items.len(),
                self.max_watch_prefixes
            )));
        }
        let total: usize = items.iter().map(String::len).sum();
        if total > self.max_watch_prefix_bytes {
            return Err(Status::invalid_argument(format!(
                "{field}: {total} bytes in all, more than max_watch_prefix_bytes ({})",
                self.max_watch_prefix_bytes
            )));
        }
        Ok(())
    }

    /// Checks a version token named `field`: at most [`MAX_TOKEN_BYTES`].
    pub fn check_token(&self, field: &str, token: &str) -> Result<(), Status> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Status::invalid_argument(format!(
                "{field}: token is {} bytes, longer than {MAX_TOKEN_BYTES}",
                token.len()
            )));
        }
        Ok(())
    }

    /// Checks a list of keys (or prefixes, with `allow_empty`) named `field`.
    pub fn check_keys<'a>(
        &self,
        field: &str,
        keys: impl ExactSizeIterator<Item = &'a str>,
        allow_empty: bool,
    ) -> Result<(), Status> {
        self.check_count(field, keys.len())?;
        for (i, key) in keys.enumerate() {
            self.check_key(&format!("{field}[{i}]"), key, allow_empty)?;
        }
        Ok(())
    }

    pub fn check_count(&self, field: &str, count: usize) -> Result<(), Status> {
        if count > self.max_batch_keys {
            return Err(Status::invalid_argument(format!(
                "{field}: {count} items, more than max_batch_keys ({})",
                self.max_batch_keys
            )));
        }
        Ok(())
    }

    pub fn check_key(&self, field: &str, key: &str, allow_empty: bool) -> Result<(), Status> {
        if key.is_empty() && !allow_empty {
            return Err(Status::invalid_argument(format!("{field}: key is empty")));
        }
        if key.len() > self.max_key_bytes {
            return Err(Status::invalid_argument(format!(
                "{field}: key is {} bytes, longer than max_key_bytes ({})",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    /// Checks a job or topic name: non-empty, at most `max_key_bytes`, and no '{' or '}' (the
    /// name becomes part of a Redis hash tag).
    pub fn check_name(&self, field: &str, name: &str) -> Result<(), Status> {
        self.check_key(field, name, false)?;
        if name.contains(['{', '}']) {
            return Err(Status::invalid_argument(format!(
                "{field}: must not contain '{{' or '}}'"
            )));
        }
        Ok(())
    }

    /// The largest request message these limits allow, for tonic's decoder.
    pub fn max_message_bytes(&self) -> usize {
        let per_key = self.max_key_bytes + 256;
        self.max_batch_keys
            .saturating_mul(per_key)
            .saturating_add(64 * 1024)
            .max(4 * 1024 * 1024)
    }
}

/// Checks a duration field in milliseconds: 1..=`max`, or 0 when `zero_ok`.
pub fn check_ms(field: &str, value: u64, max: u64, zero_ok: bool) -> Result<(), Status> {
    if value == 0 && !zero_ok {
        return Err(Status::invalid_argument(format!(
            "{field}: must be greater than 0"
        )));
    }
    if value > max {
        return Err(Status::invalid_argument(format!(
            "{field}: {value} ms is more than the maximum ({max} ms)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_field_and_index() {
        let limits = Limits::for_keys(4, 2);
        let err = limits
            .check_keys("keys", ["a", ""].into_iter(), false)
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("keys[1]"), "{}", err.message());
        let err = limits
            .check_keys("keys", ["abcde"].into_iter(), false)
            .unwrap_err();
        assert!(err.message().contains("max_key_bytes"), "{}", err.message());
        let err = limits
            .check_keys("keys", ["a", "b", "c"].into_iter(), false)
            .unwrap_err();
        assert!(
            err.message().contains("max_batch_keys"),
            "{}",
            err.message()
        );
        assert!(limits
            .check_keys("prefixes", [""].into_iter(), true)
            .is_ok());
        assert!(limits
            .check_token("t", &"a".repeat(MAX_TOKEN_BYTES))
            .is_ok());
        let err = limits
            .check_token("entries[3].version.token", &"a".repeat(MAX_TOKEN_BYTES + 1))
            .unwrap_err();
        assert!(err.message().contains("entries[3]"), "{}", err.message());
    }

    #[test]
    fn watch_prefixes_are_limited_in_count_and_bytes() {
        let limits = Limits {
            max_watch_prefixes: 2,
            max_watch_prefix_bytes: 5,
            ..Limits::for_keys(4, 10)
        };
        let strings = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(limits.check_prefixes(&strings(&["ab", "cd"])).is_ok());
        let err = limits
            .check_prefixes(&strings(&["a", "b", "c"]))
            .unwrap_err();
        assert!(
            err.message().contains("max_watch_prefixes"),
            "{}",
            err.message()
        );
        let err = limits
            .check_prefixes(&strings(&["abc", "def"]))
            .unwrap_err();
        assert!(
            err.message().contains("max_watch_prefix_bytes"),
            "{}",
            err.message()
        );
        let err = limits.check_prefixes(&strings(&["abcde"])).unwrap_err();
        assert!(err.message().contains("prefixes[0]"), "{}", err.message());
        let err = limits.check_topics(&strings(&["a", "b", "c"])).unwrap_err();
        assert!(
            err.message().contains("max_watch_prefixes"),
            "{}",
            err.message()
        );
        let err = limits.check_topics(&[]).unwrap_err();
        assert!(err.message().contains("at least one"), "{}", err.message());
    }
}
