//! The state the cache-version tasks share: their settings, the Redis link and keyspace, the
//! mirror, the fences in flight, and the hub that feeds Watch streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::buffers::ring::ByteRing;
use crate::metrics::Metrics;
use crate::redis::keyspace::Keyspace;
use crate::redis::link::RedisLink;
use crate::token::random_token;
use crate::versions::audit::clock::ClockOffset;
use crate::versions::audit::sampler::Auditor;
use crate::versions::leases::{LeaseSettings, Leases};
use crate::versions::mirror::Mirror;
use crate::versions::version::VersionStr;

/// The settings of the cache-version tasks (see the configuration reference for each).
#[derive(Debug, Clone)]
pub struct VersionsSettings {
    /// Names this sidecar's own fence channels.
    pub server_id: String,
    pub max_staleness: Duration,
    pub heartbeat_interval: Duration,
    pub check_deadline: Duration,
    pub request_timeout: Duration,
    pub reconcile_interval: Duration,
    pub replay_log_len: u64,
    pub version_ttl_ms: u64,
    pub mirror_max_keys: usize,
    /// Read leases (`read_lease_ms`, `read_lease_margin_ms`).
    pub leases: LeaseSettings,
    /// How many client mirrors may hold leases from this sidecar (`max_mirror_leases`).
    pub max_mirror_leases: usize,
    pub mirror_max_bytes: usize,
    /// The Watch ring's budget (see [`WatchItem::weight`]).
    pub watch_buffer_bytes: usize,
    /// The invalidation subscription's push queue budget.
    pub push_buffer_bytes: usize,
    /// Each batcher's admission budget (see [`crate::versions::batcher`]).
    pub batch_queue_bytes: usize,
    /// Fraction of current answers the auditor samples (0 turns it off).
    pub audit_sample_rate: f64,
    /// How often the propagation prober bumps this sidecar's canary key (zero: never).
    pub canary_interval: Duration,
}

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

impl WatchItem {
    /// What the item weighs in the Watch ring: its text and a fixed overhead for the rest
    /// (the `Arc`s, the ring slot, the numbers).
    pub fn weight(&self) -> usize {
        const OVERHEAD: usize = 128;
        OVERHEAD
            + match self {
                WatchItem::Invalidated(inv) => inv.key.len() + inv.version.len() + inv.epoch.len(),
                WatchItem::Resync(reason) => reason.len(),
                WatchItem::Heartbeat { .. } => 0,
            }
    }
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

/// Heartbeat fences sent and not yet returned, by nonce (see [`crate::versions::fences`]).
#[derive(Default)]
pub struct Fences {
    pending: Mutex<HashMap<String, (Vec<u32>, Instant)>>,
    last_returned: Mutex<Option<Instant>>,
    nudge: Notify,
}

impl Fences {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<u32>, Instant)>> {
        match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Registers a fence of `shards` about to be sent; returns its nonce.
    pub(super) fn register(&self, shards: Vec<u32>, sent_at: Instant) -> String {
        let nonce = random_token();
        self.pending().insert(nonce.clone(), (shards, sent_at));
        nonce
    }

    /// The shards and send instant of our fence `nonce`, if it is still pending.
    pub fn take(&self, nonce: &str) -> Option<(Vec<u32>, Instant)> {
        let taken = self.pending().remove(nonce)?;
        if let Ok(mut last) = self.last_returned.lock() {
            *last = Some(Instant::now());
        }
        Some(taken)
    }

    /// When one of our fences last came back.
    pub fn last_returned(&self) -> Option<Instant> {
        self.last_returned.lock().ok().and_then(|g| *g)
    }

    /// Asks the heartbeat loop to fence every shard now (after a resubscribe).
    pub fn fence_now(&self) {
        self.nudge.notify_one();
    }

    /// Resolves when [`Fences::fence_now`] was called.
    pub(super) async fn nudged(&self) {
        self.nudge.notified().await
    }

    pub(super) fn forget_older_than(&self, limit: Instant) {
        self.pending().retain(|_, (_, sent)| *sent >= limit);
    }
}

/// Everything the cache-version tasks share.
pub struct VersionsState {
    pub settings: VersionsSettings,
    pub keyspace: Keyspace,
    pub link: RedisLink,
    pub mirror: Mirror,
    pub metrics: Metrics,
    pub fences: Fences,
    pub leases: Leases,
    /// What Watch streams read, bounded by `watch_buffer_bytes`.
    pub events: Arc<ByteRing<WatchItem>>,
    pub subscription_live: AtomicBool,
    pub started_at: Instant,
    /// The consistency auditor's sampling side (its task is `audit::run`).
    pub audit: Auditor,
    /// The propagation prober's clock-offset estimate (its task is `audit::canary::run`).
    pub canary_clock: ClockOffset,
    /// Test-only faults (the `fault-injection` feature, compiled out of release builds).
    #[cfg(feature = "fault-injection")]
    pub faults: crate::versions::faults::Faults,
}

impl VersionsState {
    pub fn new(
        settings: VersionsSettings,
        keyspace: Keyspace,
        link: RedisLink,
        metrics: Metrics,
    ) -> Arc<VersionsState> {
        let events = ByteRing::new(settings.watch_buffer_bytes, metrics.buffer("watch"));
        let mirror = Mirror::new(keyspace.shard_count(), settings.max_staleness)
            .with_max_keys(settings.mirror_max_keys, metrics.mirror_evictions.clone())
            .with_max_bytes(settings.mirror_max_bytes);
        let audit = Auditor::new(settings.audit_sample_rate, metrics.audit.clone());
        let leases = Leases::new(
            &settings.server_id,
            keyspace.shard_count(),
            settings.leases,
            settings.max_mirror_leases,
        );
        Arc::new(VersionsState {
            mirror,
            keyspace,
            link,
            metrics,
            fences: Fences::default(),
            leases,
            events,
            subscription_live: AtomicBool::new(false),
            started_at: Instant::now(),
            audit,
            canary_clock: ClockOffset::default(),
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
            settings,
        })
    }

    /// Whether versions can be vouched for: Redis verified, subscription live, every shard
    /// synced. (The sidecar is ready when this holds, its server_id is its own and it is
    /// not shutting down.)
    pub fn is_synced(&self) -> bool {
        self.link.is_connected()
            && self.subscription_live.load(Ordering::SeqCst)
            && self.mirror.all_synced()
    }

    /// Updates the mirror's gauges (`coherence_mirror_keys`, `coherence_buffer_bytes{buffer="mirror"}`).
    pub fn record_mirror_size(&self) {
        let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.mirror_keys.set(to_i64(self.mirror.len()));
        self.metrics
            .buffer("mirror")
            .set(to_i64(self.mirror.bytes()));
    }

    /// Sends an event to every Watch stream (none listening is fine).
    pub fn publish(&self, item: WatchItem) {
        let weight = item.weight();
        self.events.push(item, weight);
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
