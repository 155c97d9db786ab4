//! What an application sets and reads on a mirror: [`MirrorOptions`] (bounds, prefixes,
//! reconnect backoff, an event hook), the [`MirrorEvent`]s the hook receives, and the
//! [`MirrorStats`] counters. Kept apart from the map so that the public knobs read on one page.

use std::sync::Arc;
use std::time::Duration;

/// Default for [`MirrorOptions::max_staleness`].
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_millis(500);

/// Something that happened to the mirror's Watch stream, for [`MirrorOptions::on_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorEvent {
    /// The Watch stream is open (`reconnect` is false for the very first connection).
    Connected {
        /// Whether an earlier stream had been open before.
        reconnect: bool,
    },
    /// The Watch stream ended or failed; the mirror is untrusted until it is back.
    Disconnected {
        /// Why the stream ended.
        reason: String,
    },
    /// The mirror was emptied because invalidations may have been lost.
    Resync {
        /// Why (the sidecar's reason, or the stream gap).
        reason: String,
    },
}

/// A callback for [`MirrorEvent`]s; runs on the mirror's Watch task, so keep it short.
pub type MirrorHook = Arc<dyn Fn(&MirrorEvent) + Send + Sync>;

/// How a [`MirroredClient`](super::MirroredClient) behaves. Start from [`MirrorOptions::default`].
///
/// ```
/// use std::time::Duration;
/// use coherence_client::{MirrorEvent, MirrorOptions};
///
/// let options = MirrorOptions::default()
///     .max_staleness(Duration::from_millis(250))
///     .prefixes(["item:", "content"])
///     .reconnect_backoff(Duration::from_millis(20), Duration::from_secs(1))
///     .on_event(|event| {
///         if let MirrorEvent::Resync { reason } = event {
///             eprintln!("mirror dropped: {reason}");
///         }
///     });
/// ```
#[derive(Clone)]
pub struct MirrorOptions {
    pub(super) max_staleness: Duration,
    pub(super) prefixes: Vec<String>,
    pub(super) backoff_min: Duration,
    pub(super) backoff_max: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) max_entries: usize,
    pub(super) hook: Option<MirrorHook>,
    pub(super) audit_sample_rate: f64,
    pub(super) strong_leases: bool,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            max_staleness: DEFAULT_MAX_STALENESS,
            prefixes: Vec::new(),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            max_entries: 1_000_000,
            hook: None,
            audit_sample_rate: 0.001,
            strong_leases: true,
        }
    }
}

impl std::fmt::Debug for MirrorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorOptions")
            .field("max_staleness", &self.max_staleness)
            .field("prefixes", &self.prefixes)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_entries", &self.max_entries)
            .field("hook", &self.hook.is_some())
            .field("audit_sample_rate", &self.audit_sample_rate)
            .field("strong_leases", &self.strong_leases)
            .finish()
    }
}

impl MirrorOptions {
    /// Fraction (0 to 1, default 0.001) of the local answers calling a version current that are
    /// handed to the sidecar's consistency auditor (`coherence.v1.Observer/SubmitAnswers`, once
    /// a second), so that the mirror's answers are measured, not assumed. 0 turns it off. Costs
    /// one random draw per such answer (about 1 ns); a sampled one, a clock read, a lock and two
    /// string copies (a few hundred ns): the default keeps that under 1 % of a ~50 ns local hit
    /// (BENCHMARKS.md, "Consistency observer").
    pub fn audit_sample_rate(mut self, rate: f64) -> Self {
        self.audit_sample_rate = rate;
        self
    }

    /// Local answers reflect every bump completed more than this long before the check
    /// (default 500 ms). Past it the mirror falls back to the sidecar.
    pub fn max_staleness(mut self, max_staleness: Duration) -> Self {
        self.max_staleness = max_staleness;
        self
    }

    /// Mirror only keys under these prefixes (default: every key). Checks of other keys always
    /// go to the sidecar.
    pub fn prefixes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, prefixes: I) -> Self {
        self.prefixes = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// Reconnect backoff: starts at `min`, doubles up to `max` (defaults 50 ms and 2 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// A stream silent for this long (no event, not even a heartbeat) is treated as dead and
    /// reopened (default 3 s; keep it well above the sidecar's `heartbeat_interval_ms`).
    pub fn idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Most keys the mirror holds (default 1,000,000); a full mirror drops an arbitrary eighth
    /// of its keys, which are asked of the sidecar when next needed.
    pub fn max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries.max(1);
        self
    }

    /// Answer `Consistency::Strong` checks locally under a read lease from the sidecar when
    /// it grants one (default true; sidecars grant them when `read_lease_ms` > 0). The mirror
    /// then acknowledges every invalidation it applies, and bumps anywhere in the namespace
    /// wait for that (about a loopback call), or for its lease to run out if this process
    /// stops reading its stream. docs/client-protocol.md, rules 16–19.
    pub fn strong_leases(mut self, on: bool) -> Self {
        self.strong_leases = on;
        self
    }

    /// Called on every connect, disconnect and resync (for metrics or logs).
    pub fn on_event(mut self, hook: impl Fn(&MirrorEvent) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }
}

/// Counters of one mirror, from [`MirroredClient::stats`](super::MirroredClient::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// Times the Watch stream was reopened after it had been open.
    pub reconnects: u64,
    /// Times the mirror was emptied (sidecar `Resync`, stream gap).
    pub resyncs: u64,
    /// Keys dropped because the mirror was full (`max_entries`).
    pub evictions: u64,
    /// Checks and gets answered locally.
    pub hits: u64,
    /// Checks and gets that had to ask the sidecar.
    pub misses: u64,
    /// Strong checks answered locally under a read lease (counted in `hits` too).
    pub strong_hits: u64,
    /// Sidecar fallbacks that failed (answered "not current").
    pub fallback_failures: u64,
    /// Invalidations applied from the stream.
    pub invalidations: u64,
    /// Fills refused because an invalidation or resync raced them.
    pub fills_refused: u64,
}
