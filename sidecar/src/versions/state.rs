//! The state one sidecar's tasks share: configuration, Redis link, mirror, metrics and the
//! event hub that feeds Watch streams.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::process::config::Config;
use crate::redis::keyspace::Keyspace;
use crate::redis::link::RedisLink;
use crate::redis::target::RedisTarget;
use crate::versions::fences::Fences;
use crate::versions::mirror::{Mirror, VersionStr};

/// An event for Watch streams.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// A key moved to a new version.
    Invalidated(Arc<Invalidated>),
    /// Invalidations may have been lost: watchers drop what they cached.
    Resync(Arc<str>),
    /// Periodic liveness signal with the age of the sidecar's oldest fence (rounded up) and
    /// the wall-clock time it was sent.
    Heartbeat {
        fence_age_ms: u64,
        sent_at_unix_us: u64,
    },
}

#[derive(Debug)]
pub struct Invalidated {
    pub key: String,
    pub version: VersionStr,
    /// The shard's epoch: `version` is the key's current version as of `seq` in it.
    pub epoch: Arc<str>,
    pub seq: u64,
    pub shard: u32,
    pub bumped_at_unix_ms: u64,
}

/// Everything the sidecar's tasks share.
pub struct SidecarState {
    pub config: Config,
    pub keyspace: Keyspace,
    pub link: RedisLink,
    pub mirror: Mirror,
    pub metrics: Metrics,
    pub fences: Fences,
    pub events: broadcast::Sender<WatchItem>,
    pub subscription_live: AtomicBool,
    pub shutting_down: AtomicBool,
    /// This sidecar registered its server_id as its own (no other live process has it).
    pub registered: AtomicBool,
    pub started_at: Instant,
}

impl SidecarState {
    pub fn new(config: Config, metrics: Metrics) -> redis::RedisResult<Arc<SidecarState>> {
        let s = &config.settings;
        let target = RedisTarget::parse(&s.redis_url)?.with_access(config.redis_access.clone());
        let keyspace =
            Keyspace::new(&s.namespace, s.shards).with_sharded_channels(target.is_cluster());
        let link = RedisLink::new(
            target,
            &s.redis_url,
            s.allow_evicting_policy,
            metrics.clone(),
        );
        let (events, _) = broadcast::channel(65_536);
        let mirror = Mirror::new(s.shards, config.max_staleness())
            .with_max_keys(s.mirror_max_keys, metrics.mirror_evictions.clone());
        Ok(Arc::new(SidecarState {
            mirror,
            keyspace,
            link,
            metrics,
            fences: Fences::default(),
            events,
            subscription_live: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            registered: AtomicBool::new(false),
            started_at: Instant::now(),
            config,
        }))
    }

    /// Ready to serve: Redis verified, subscription live, every shard synced, not draining,
    /// server_id registered as ours.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::SeqCst)
            && self.registered.load(Ordering::SeqCst)
            && self.link.is_connected()
            && self.subscription_live.load(Ordering::SeqCst)
            && self.mirror.all_synced()
    }

    /// Sends an event to every Watch stream (none listening is fine).
    pub fn publish(&self, item: WatchItem) {
        let _ = self.events.send(item);
    }

    /// Tells every watcher to drop what it cached, and counts why.
    pub fn resync_watchers(&self, reason: &'static str) {
        self.metrics
            .resyncs
            .get_or_create(&[("reason", reason)])
            .inc();
        if reason == "first_sync" {
            tracing::info!("mirror synced for the first time; telling early watchers to resync");
        } else {
            tracing::warn!(reason, "mirror shard dropped; telling watchers to resync");
        }
        self.publish(WatchItem::Resync(Arc::from(reason)));
    }
}
