//! The messages sidecars exchange on a shard's pub/sub channel.
//!
//! They are produced by the Lua scripts (`lua/versions.lua` and `lua/fence.lua`) and parsed
//! here. Text, `|`-separated, with the cache key last so that it may contain any character:
//!
//! - invalidation: `i|<epoch>|<seq>|<bumped_at_unix_ms>|<version>|<key>`
//! - heartbeat fence: `h|<epoch>|<seq>|<sender>|<nonce>`

/// One message received on a shard channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMessage {
    Invalidation(InvalidationMessage),
    Heartbeat(HeartbeatMessage),
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
pub struct HeartbeatMessage {
    pub epoch: String,
    pub seq: u64,
    pub sender: String,
    pub nonce: String,
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
            "h" => {
                let mut parts = rest.splitn(4, '|');
                let epoch = parts.next()?.to_string();
                let seq = parts.next()?.parse().ok()?;
                let sender = parts.next()?.to_string();
                let nonce = parts.next()?.to_string();
                Some(ChannelMessage::Heartbeat(HeartbeatMessage {
                    epoch,
                    seq,
                    sender,
                    nonce,
                }))
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
    fn parses_heartbeats_and_rejects_garbage() {
        let msg = ChannelMessage::parse(b"h|e1|7|server-a|n1").unwrap();
        assert!(
            matches!(msg, ChannelMessage::Heartbeat(h) if h.seq == 7 && h.sender == "server-a")
        );
        assert_eq!(ChannelMessage::parse(b"i|e1|notanumber|1|v|k"), None);
        assert_eq!(ChannelMessage::parse(b"x|y"), None);
        assert_eq!(ChannelMessage::parse(&[0xff, 0xfe]), None);
    }
}
