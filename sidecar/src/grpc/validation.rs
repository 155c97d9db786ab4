//! Request validation for every gRPC service: what a request may contain, and the
//! `INVALID_ARGUMENT` that names the field (and index) of the first thing wrong with it. Keys,
//! prefixes, job and topic names, and durations are checked here and nowhere else.
//!
//! A field's name (`entries[4711].key`) is formatted only when it is reported: a 10,000-key
//! call is checked without 10,000 allocations (`format_args!` at the call sites).

use std::fmt::Display;

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
            self.check_key(format_args!("prefixes[{i}]"), prefix, true)?;
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
            self.check_name(format_args!("topics[{i}]"), topic)?;
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
    pub fn check_token(&self, field: impl Display, token: &str) -> Result<(), Status> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Status::invalid_argument(format!(
                "{field}: token is {} bytes, longer than {MAX_TOKEN_BYTES}",
                token.len()
            )));
        }
        Ok(())
    }

    /// Checks a client mirror's `lease_id` (docs/client-protocol.md, rule 16): 16 to 128
    /// characters of `A-Z a-z 0-9 _ -`; empty (no leases) only where `allow_empty`.
    pub fn check_lease_id(&self, lease_id: &str, allow_empty: bool) -> Result<(), Status> {
        if lease_id.is_empty() && allow_empty {
            return Ok(());
        }
        let valid = (16..=128).contains(&lease_id.len())
            && lease_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(Status::invalid_argument(format!(
                "lease_id: must be 16 to 128 characters of A-Z a-z 0-9 _ - (got {} bytes)",
                lease_id.len()
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
            self.check_key(format_args!("{field}[{i}]"), key, allow_empty)?;
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

    pub fn check_key(
        &self,
        field: impl Display,
        key: &str,
        allow_empty: bool,
    ) -> Result<(), Status> {
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
    pub fn check_name(&self, field: impl Display, name: &str) -> Result<(), Status> {
        self.check_key(&field, name, false)?;
        if name.contains(['{', '}']) {
            return Err(Status::invalid_argument(format!(
                "{field}: must not contain '{{' or '}}'"
            )));
        }
        Ok(())
    }

    /// The largest request message these limits allow, for tonic's decoder.
    pub fn max_message_bytes(&self) -> usize {
        // Saturating: `max_key_bytes` is any count the configuration accepts (fuzzing found
        // that 2^64 - 1 overflowed here, a panic at start in a debug build).
        let per_key = self.max_key_bytes.saturating_add(256);
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

    /// From the long fuzz run: a 2-byte-tagged enum whose varint decodes negative.
    #[test]
    fn a_negative_enum_re_encodes_longer_but_bounded() {
        let bytes = [16, 128, 128, 128, 128, 216, 0];
        let req = pb::GetRequest::decode(&bytes[..]).unwrap();
        assert!(req.consistency < 0);
        assert_eq!(req.encoded_len(), 11);
    }

    #[test]
    fn the_largest_limits_do_not_overflow_the_message_size() {
        let limits = Limits::for_keys(usize::MAX, usize::MAX);
        assert_eq!(limits.max_message_bytes(), usize::MAX);
    }

    use coherence_proto::v1 as pb;
    use coherence_testkit::fuzz;
    use proptest::prelude::*;
    use prost::Message;

    /// Longest message a refusal may have beyond the field's name: it names the field and the
    /// limit, never quotes the (possibly huge) input.
    const MESSAGE_BYTES: usize = 128;

    fn limits() -> impl Strategy<Value = Limits> {
        (
            prop_oneof![1usize..64, Just(usize::MAX)],
            prop_oneof![1usize..8, Just(usize::MAX)],
            prop_oneof![0usize..8, Just(usize::MAX)],
            prop_oneof![0usize..64, Just(usize::MAX)],
        )
            .prop_map(
                |(max_key_bytes, max_batch_keys, max_watch_prefixes, max_watch_prefix_bytes)| {
                    Limits {
                        max_key_bytes,
                        max_batch_keys,
                        max_watch_prefixes,
                        max_watch_prefix_bytes,
                    }
                },
            )
    }

    /// A list of keys against the limits, with the answer worked out independently.
    fn check_keys_against(
        limits: &Limits,
        field: &str,
        keys: &[String],
        allow_empty: bool,
    ) -> Result<(), TestCaseError> {
        let expected = keys.len() <= limits.max_batch_keys
            && keys
                .iter()
                .all(|k| (allow_empty || !k.is_empty()) && k.len() <= limits.max_key_bytes);
        let result = limits.check_keys(field, keys.iter().map(String::as_str), allow_empty);
        prop_assert_eq!(result.is_ok(), expected, "{:?}", result);
        if let Err(status) = result {
            prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
            prop_assert!(status.message().starts_with(field));
            prop_assert!(
                status.message().len() <= field.len() + MESSAGE_BYTES,
                "{}",
                status.message()
            );
        }
        Ok(())
    }

    /// Watch prefixes (or, `topics`, Subscribe topics) against the limits, with the answer
    /// worked out independently.
    fn check_filters_against(
        limits: &Limits,
        items: &[String],
        topics: bool,
    ) -> Result<(), TestCaseError> {
        let total: usize = items.iter().map(String::len).sum();
        let expected = items.len() <= limits.max_watch_prefixes
            && total <= limits.max_watch_prefix_bytes
            && (!topics || !items.is_empty())
            && items.iter().all(|i| {
                i.len() <= limits.max_key_bytes
                    && (!topics || (!i.is_empty() && !i.contains(['{', '}'])))
            });
        let (field, result) = if topics {
            ("topics", limits.check_topics(items))
        } else {
            ("prefixes", limits.check_prefixes(items))
        };
        prop_assert_eq!(result.is_ok(), expected, "{:?}", result);
        if let Err(status) = result {
            prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
            prop_assert!(status.message().starts_with(field));
            prop_assert!(status.message().len() <= field.len() + MESSAGE_BYTES);
        }
        Ok(())
    }

    /// Decodes `bytes` as a request: no panic, and nothing much bigger than what came in. Not
    /// "no bigger": a negative `int32` (an enum) re-encodes as 10 bytes however short its
    /// varint came (the long run found a 7-byte request that re-encodes as 11), so a field of
    /// at least 2 bytes grows at most 5.5 times.
    fn decode<M: Message + Default>(bytes: &[u8]) -> Result<Option<M>, TestCaseError> {
        match M::decode(bytes) {
            Ok(message) => {
                prop_assert!(message.encoded_len() <= 6 * bytes.len());
                Ok(Some(message))
            }
            Err(_) => Ok(None),
        }
    }

    /// Bytes near a request: a valid encoding of some keys with bytes flipped or cut.
    fn near_requests() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec("\\PC{0,12}", 0..6),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(keys, flips, cut)| {
                let mut bytes = pb::GetRequest {
                    keys,
                    consistency: 1,
                }
                .encode_to_vec();
                for (at, byte) in flips {
                    if !bytes.is_empty() {
                        let i = at.index(bytes.len());
                        bytes[i] = byte;
                    }
                }
                bytes.truncate(cut.index(bytes.len() + 1));
                bytes
            })
    }

    /// Every request message the services take, decoded from `bytes` and validated the way
    /// their handlers do.
    fn check_request_bytes(limits: &Limits, bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Some(req) = decode::<pb::GetRequest>(bytes)? {
            check_keys_against(limits, "keys", &req.keys, false)?;
        }
        if let Some(req) = decode::<pb::BumpRequest>(bytes)? {
            check_keys_against(limits, "keys", &req.keys, false)?;
        }
        if let Some(req) = decode::<pb::WatchRequest>(bytes)? {
            check_filters_against(limits, &req.prefixes, false)?;
        }
        if let Some(req) = decode::<pb::CheckRequest>(bytes)? {
            for entry in &req.entries {
                let token = entry.version.as_ref().map_or("", |v| v.token.as_str());
                let result = limits.check_token("token", token);
                prop_assert_eq!(result.is_ok(), token.len() <= MAX_TOKEN_BYTES);
            }
            let keys: Vec<String> = req.entries.into_iter().map(|e| e.key).collect();
            check_keys_against(limits, "entries", &keys, false)?;
        }
        if let Some(req) = decode::<pb::PublishRequest>(bytes)? {
            let _ = limits.check_name("topic", &req.topic);
        }
        if let Some(req) = decode::<pb::SubscribeRequest>(bytes)? {
            check_filters_against(limits, &req.topics, true)?;
        }
        decode::<pb::TryAcquireRequest>(bytes)?;
        decode::<pb::RenewRequest>(bytes)?;
        decode::<pb::ReleaseRequest>(bytes)?;
        decode::<pb::ClaimRunRequest>(bytes)?;
        Ok(())
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        #[test]
        fn fuzz_request_bytes(limits in limits(), bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            check_request_bytes(&limits, &bytes)?;
        }

        #[test]
        fn fuzz_request_bytes_near_format(limits in limits(), bytes in near_requests()) {
            check_request_bytes(&limits, &bytes)?;
        }

        #[test]
        fn fuzz_key_limits(
            limits in limits(),
            keys in proptest::collection::vec("\\PC{0,80}", 0..10),
            allow_empty in any::<bool>(),
        ) {
            check_keys_against(&limits, "keys", &keys, allow_empty)?;
            let _ = limits.max_message_bytes();
            for name in &keys {
                let expected = !name.is_empty()
                    && name.len() <= limits.max_key_bytes
                    && !name.contains(['{', '}']);
                prop_assert_eq!(limits.check_name("job", name).is_ok(), expected);
            }
        }

        #[test]
        fn fuzz_durations(value in any::<u64>(), max in any::<u64>(), zero_ok in any::<bool>()) {
            let expected = (value > 0 || zero_ok) && value <= max;
            let result = check_ms("ttl_ms", value, max, zero_ok);
            prop_assert_eq!(result.is_ok(), expected);
            if let Err(status) = result {
                prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
            }
        }
    }
}
