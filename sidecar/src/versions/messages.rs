//! The messages sidecars receive on their subscription.
//!
//! They are produced by `versions/shard.lua` and parsed here. Text, `|`-separated, with the cache
//! key last so that it may contain any character:
//!
//! - invalidation, on a shard's channel: `i|<epoch>|<seq>|<bumped_at_unix_ms>|<version>|<key>`
//! - heartbeat fence, on its sender's own fence channel: `f|<nonce>|<epoch>|<seq>|…`, one
//!   epoch and sequence per fenced shard, in the order the sender named them

/// One message received on a shard channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMessage {
    Invalidation(InvalidationMessage),
    Fence(FenceMessage),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidationMessage {
    pub epoch: String,
    pub seq: u64,
    pub bumped_at_unix_ms: u64,
    pub version: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceMessage {
    pub nonce: String,
    /// Epoch and sequence of each fenced shard.
    pub shards: Vec<(String, u64)>,
}

impl ChannelMessage {
    /// Parses a channel payload; `None` for anything that is not ours.
    pub fn parse(payload: &[u8]) -> Option<ChannelMessage> {
        let text = std::str::from_utf8(payload).ok()?;
        let (kind, rest) = text.split_once('|')?;
        match kind {
            "i" => {
                let mut parts = rest.splitn(5, '|');
                let epoch = parts.next()?.to_string();
                let seq = parts.next()?.parse().ok()?;
                let bumped_at_unix_ms = parts.next()?.parse().ok()?;
                let version = parts.next()?.to_string();
                let key = parts.next()?.to_string();
                Some(ChannelMessage::Invalidation(InvalidationMessage {
                    epoch,
                    seq,
                    bumped_at_unix_ms,
                    version,
                    key,
                }))
            }
            "f" => {
                let mut parts = rest.split('|');
                let nonce = parts.next()?.to_string();
                let mut shards = Vec::new();
                while let Some(epoch) = parts.next() {
                    let seq = parts.next()?.parse().ok()?;
                    shards.push((epoch.to_string(), seq));
                }
                Some(ChannelMessage::Fence(FenceMessage { nonce, shards }))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_invalidations_with_separators_in_the_key() {
        let msg = ChannelMessage::parse(b"i|e1|42|1700000000000|e1.42.ab|member|7").unwrap();
        assert_eq!(
            msg,
            ChannelMessage::Invalidation(InvalidationMessage {
                epoch: "e1".into(),
                seq: 42,
                bumped_at_unix_ms: 1_700_000_000_000,
                version: "e1.42.ab".into(),
                key: "member|7".into(),
            })
        );
    }

    #[test]
    fn parses_fences_and_rejects_garbage() {
        let msg = ChannelMessage::parse(b"f|n1|e1|7|e2|0").unwrap();
        assert_eq!(
            msg,
            ChannelMessage::Fence(FenceMessage {
                nonce: "n1".into(),
                shards: vec![("e1".into(), 7), ("e2".into(), 0)],
            })
        );
        assert_eq!(ChannelMessage::parse(b"f|n1|e1|7|e2"), None);
        assert_eq!(ChannelMessage::parse(b"f|n1|e1|x"), None);
        assert_eq!(ChannelMessage::parse(b"i|e1|notanumber|1|v|k"), None);
        assert_eq!(ChannelMessage::parse(b"x|y"), None);
        assert_eq!(ChannelMessage::parse(&[0xff, 0xfe]), None);
    }

    use coherence_testkit::fuzz;
    use proptest::prelude::*;

    /// The wire form of `msg`, written the way `shard.lua` writes it (the script is the real
    /// encoder; this one lets the parser be checked against the format above).
    fn render(msg: &ChannelMessage) -> String {
        match msg {
            ChannelMessage::Invalidation(m) => format!(
                "i|{}|{}|{}|{}|{}",
                m.epoch, m.seq, m.bumped_at_unix_ms, m.version, m.key
            ),
            ChannelMessage::Fence(m) => {
                let mut out = format!("f|{}", m.nonce);
                for (epoch, seq) in &m.shards {
                    out.push_str(&format!("|{epoch}|{seq}"));
                }
                out
            }
        }
    }

    /// Bytes of the parsed strings: none may exceed what was received.
    fn parsed_bytes(msg: &ChannelMessage) -> usize {
        match msg {
            ChannelMessage::Invalidation(m) => m.epoch.len() + m.version.len() + m.key.len(),
            ChannelMessage::Fence(m) => {
                m.nonce.len() + m.shards.iter().map(|(e, _)| e.len()).sum::<usize>()
            }
        }
    }

    /// Payloads near the format: `|`-joined pieces that are often, not always, what a field
    /// wants, so that the parser's every branch is reached, not only its first check.
    fn near_messages() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just("i".to_string()),
            Just("f".to_string()),
            "[0-9]{1,21}",
            "[+-]?[0-9a-f.]{0,20}",
            "\\PC{0,8}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.join("|").into_bytes())
    }

    fn messages() -> impl Strategy<Value = ChannelMessage> {
        let field = "[^|]{0,16}";
        prop_oneof![
            (field, any::<u64>(), any::<u64>(), field, "\\PC{0,32}").prop_map(
                |(epoch, seq, bumped_at_unix_ms, version, key)| {
                    ChannelMessage::Invalidation(InvalidationMessage {
                        epoch,
                        seq,
                        bumped_at_unix_ms,
                        version,
                        key,
                    })
                }
            ),
            (
                field,
                proptest::collection::vec((field, any::<u64>()), 0..8)
            )
                .prop_map(|(nonce, shards)| ChannelMessage::Fence(FenceMessage { nonce, shards })),
        ]
    }

    /// Anything a shared Redis can deliver: no panic, nothing larger than what came in, and
    /// what parses renders to a payload that parses the same.
    fn check_any_payload(payload: &[u8]) -> Result<(), TestCaseError> {
        let Some(msg) = ChannelMessage::parse(payload) else {
            return Ok(());
        };
        prop_assert!(parsed_bytes(&msg) <= payload.len());
        if let ChannelMessage::Fence(fence) = &msg {
            prop_assert!(fence.shards.len() <= payload.len() / 2);
        }
        prop_assert_eq!(ChannelMessage::parse(render(&msg).as_bytes()), Some(msg));
        Ok(())
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        #[test]
        fn fuzz_channel_message_bytes(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            check_any_payload(&payload)?;
        }

        #[test]
        fn fuzz_channel_message_near_format(payload in near_messages()) {
            check_any_payload(&payload)?;
        }

        #[test]
        fn fuzz_channel_message_round_trip(msg in messages()) {
            prop_assert_eq!(ChannelMessage::parse(render(&msg).as_bytes()), Some(msg));
        }
    }
}
