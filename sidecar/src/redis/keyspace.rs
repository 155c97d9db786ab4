//! Where a namespace's state lives in Redis.
//!
//! A namespace is split into a fixed number of logical shards; a key belongs to the shard
//! `fnv1a64(key) mod shards`. Everything one bump touches (the version key, the shard's epoch,
//! sequence and replay log, and its invalidation channel) carries the same hash tag
//! `{<namespace>:<shard>}`, so one script call covers it and the layout runs unchanged on Redis
//! Cluster. The hash function is part of the fleet's contract: every sidecar of a namespace must
//! map keys to the same shards.

/// The Redis names of one namespace.
#[derive(Debug, Clone)]
pub struct Keyspace {
    namespace: String,
    shards: u32,
    sharded_channels: bool,
}

/// Shards fenced together by one script call, and the channel the fence comes back on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceGroup {
    pub shards: Vec<u32>,
    pub channel: String,
}

/// Redis names of one shard's state.
#[derive(Debug, Clone)]
pub struct ShardKeys {
    /// Random token created when the shard's state is (re)created; part of every version.
    pub epoch: String,
    /// Per-shard invalidation sequence number.
    pub seq: String,
    /// Capped stream of recent invalidations, for gap repair.
    pub log: String,
    /// The Redis run id the shard's epoch was last verified against (restart detection).
    pub incarnation: String,
    /// Pub/sub channel of the shard's invalidations.
    pub channel: String,
}

impl Keyspace {
    pub fn new(namespace: &str, shards: u32) -> Self {
        Keyspace {
            namespace: namespace.to_string(),
            shards: shards.max(1),
            sharded_channels: false,
        }
    }

    /// Uses sharded pub/sub (SPUBLISH/SSUBSCRIBE), as on Redis Cluster, where a plain PUBLISH
    /// would be broadcast to every node.
    pub fn with_sharded_channels(mut self, sharded: bool) -> Self {
        self.sharded_channels = sharded;
        self
    }

    pub fn sharded_channels(&self) -> bool {
        self.sharded_channels
    }

    /// The command the scripts publish with.
    pub fn publish_command(&self) -> &'static str {
        if self.sharded_channels {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// The logical shard of a key.
    pub fn shard_of(&self, key: &str) -> u32 {
        (fnv1a64(key.as_bytes()) % u64::from(self.shards)) as u32
    }

    fn prefix(&self, shard: u32) -> String {
        format!("coh:{{{}:{}}}", self.namespace, shard)
    }

    pub fn shard_keys(&self, shard: u32) -> ShardKeys {
        let p = self.prefix(shard);
        ShardKeys {
            epoch: format!("{p}:epoch"),
            seq: format!("{p}:seq"),
            log: format!("{p}:log"),
            incarnation: format!("{p}:inc"),
            channel: format!("{p}:inv"),
        }
    }

    /// The Redis key holding a cache key's current version.
    pub fn version_key(&self, shard: u32, key: &str) -> String {
        format!("{}:v:{}", self.prefix(shard), key)
    }

    /// Every shard's channel, in shard order.
    pub fn channels(&self) -> Vec<String> {
        (0..self.shards)
            .map(|s| self.shard_keys(s).channel)
            .collect()
    }

    /// Whether one script call may touch several shards: yes when every shard lives on one
    /// Redis; no on a cluster (sharded channels), where one script call reaches one slot.
    pub fn one_call_covers_every_shard(&self) -> bool {
        !self.sharded_channels
    }

    /// What one heartbeat fence of `server_id` covers, group by group: all shards when they
    /// live on one Redis; one each on a cluster (sharded channels), where one script call
    /// reaches one slot. Each group's fences come back on a channel only that sidecar
    /// subscribes to, so a fence costs one delivery, not one per sidecar; it carries the group's
    /// first shard's hash tag, so that on a cluster it lives on the shard's node and reaches the
    /// subscription connection that receives the shard's invalidations.
    pub fn fence_groups(&self, server_id: &str) -> Vec<FenceGroup> {
        let groups: Vec<Vec<u32>> = if self.one_call_covers_every_shard() {
            vec![(0..self.shards).collect()]
        } else {
            (0..self.shards).map(|s| vec![s]).collect()
        };
        groups
            .into_iter()
            .map(|shards| FenceGroup {
                channel: format!("{}:fence:{server_id}", self.prefix(shards[0])),
                shards,
            })
            .collect()
    }

    /// The shard a channel name belongs to, if it is one of ours.
    pub fn shard_of_channel(&self, channel: &str) -> Option<u32> {
        let rest = channel.strip_prefix("coh:{")?.strip_suffix("}:inv")?;
        let (ns, shard) = rest.rsplit_once(':')?;
        if ns != self.namespace {
            return None;
        }
        // Exactly the name `shard_keys` gives: u32's parser also takes "+3" and "03".
        let number: u32 = shard.parse().ok()?;
        (number < self.shards && number.to_string() == shard).then_some(number)
    }
}

/// Checks a namespace name: it becomes part of every Redis key and hash tag.
pub fn validate_namespace(namespace: &str) -> Result<(), String> {
    if namespace.is_empty() || namespace.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !namespace
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{namespace:?} may only contain ASCII letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// 64-bit FNV-1a: tiny, stable across platforms and releases, and easy to reimplement in any
/// language that needs to agree with us on shards.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_one_hash_tag_per_shard() {
        let ks = Keyspace::new("app", 16);
        let s = ks.shard_of("content");
        let keys = ks.shard_keys(s);
        let tag = format!("{{app:{s}}}");
        for name in [&keys.epoch, &keys.seq, &keys.log, &keys.channel] {
            assert!(name.contains(&tag), "{name}");
        }
        assert!(ks.version_key(s, "content").contains(&tag));
        assert_eq!(ks.shard_of_channel(&keys.channel), Some(s));
        let fence = &ks
            .clone()
            .with_sharded_channels(true)
            .fence_groups("server-a")[s as usize];
        assert!(fence.channel.contains(&tag), "{fence:?}");
        assert_eq!(ks.shard_of_channel(&fence.channel), None);
        assert_eq!(ks.shard_of_channel("coh:{other:1}:inv"), None);
    }

    #[test]
    fn one_fence_covers_every_shard_unless_channels_are_sharded() {
        let shards = |ks: &Keyspace| -> Vec<Vec<u32>> {
            ks.fence_groups("a").into_iter().map(|g| g.shards).collect()
        };
        let ks = Keyspace::new("app", 4);
        assert_eq!(shards(&ks), vec![vec![0, 1, 2, 3]]);
        assert_eq!(
            shards(&ks.with_sharded_channels(true)),
            vec![vec![0], vec![1], vec![2], vec![3]]
        );
    }

    #[test]
    fn shards_are_stable_and_spread() {
        let ks = Keyspace::new("app", 16);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            seen.insert(ks.shard_of(&format!("key:{i}")));
        }
        assert_eq!(seen.len(), 16);
    }

    use coherence_testkit::fuzz;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(fuzz::config())]

        /// A channel name from a push message: no panic, and a shard only for exactly the
        /// name of that shard's channel.
        #[test]
        fn fuzz_channel_names(
            channel in prop_oneof![
                "\\PC{0,40}",
                "coh:\\{(app|ap|app:1|)[:]?[+0-9]{0,4}\\}:(inv|in|inv:x)?",
            ],
        ) {
            let ks = Keyspace::new("app", 16);
            if let Some(shard) = ks.shard_of_channel(&channel) {
                prop_assert!(shard < 16);
                prop_assert_eq!(ks.shard_keys(shard).channel, channel);
            }
        }
    }
}
