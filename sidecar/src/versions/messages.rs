//! The messages sidecars receive on their subscription.
//!
//! They are produced by `versions/shard.lua` and parsed here. Text, `|`-separated, with the cache
//! key last so that it may contain any character:
//!
//! - invalidation, on a shard's channel: `i|<epoch>|<seq>|<bumped_at_unix_ms>|<version>|<key>`
//! - heartbeat fence, on its sender's own fence channel: `f|<nonce>|<epoch>|<seq>|…`, one
//!   epoch and sequence per fenced shard, in the order the sender named them
//! - read-lease acknowledgement, on a shard's channel: `a|<epoch>|<seq>|<holder>`, the holder
//!   has applied the shard up to `seq` of `epoch` (sidecars of earlier releases ignore it)

/// One message received on a shard channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMessage {
    Invalidation(InvalidationMessage),
    Fence(FenceMessage),
    Ack(AckMessage),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckMessage {
    pub epoch: String,
    pub seq: u64,
    pub holder: String,
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
            "a" => {
                let mut parts = rest.splitn(3, '|');
                let epoch = parts.next()?.to_string();
                let seq = parts.next()?.parse().ok()?;
                let holder = parts.next()?.to_string();
                Some(ChannelMessage::Ack(AckMessage { epoch, seq, holder }))
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
        assert_eq!(
            ChannelMessage::parse(b"a|e1|9|srv|inst").unwrap(),
            ChannelMessage::Ack(AckMessage {
                epoch: "e1".into(),
                seq: 9,
                holder: "srv|inst".into(),
            })
        );
        assert_eq!(ChannelMessage::parse(b"a|e1|x|srv|inst"), None);
        assert_eq!(ChannelMessage::parse(&[0xff, 0xfe]), None);
    }
}
