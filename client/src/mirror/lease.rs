//! The mirror's read lease: strong checks answered in the app's own memory
//! (docs/client-protocol.md, rules 16–19).
//!
//! Each Watch stream is opened with a fresh random `lease_id`. While it is open, a task renews
//! the lease (`MirrorLease` with `renew`) about four times per grant, and acknowledges the
//! stream position the map has applied whenever the Watch loop applied an invalidation or a
//! resync (one call in flight, later positions coalesced into the next call): the sidecar
//! holds back its acknowledgements to Redis — and so every bump of the namespace — until this
//! mirror applied them or its lease ran out. A grant counts from the instant the request was
//! sent, less the 0.1 % clock-rate allowance, so it always ends before the sidecar stops
//! counting it. When the stream ends the lease ends with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::client::{Client, MirrorLeaseAnswer};

/// How much slower than real time a clock may run (ρ = 0.1 %), as in the sidecar.
const DRIFT_PPM: u32 = 1_000;

/// How soon to ask again after a first refusal or failed call; doubled after each one more, up
/// to [`RETRY_MAX`] (a sidecar with leases off refuses until it restarts, which ends the stream).
const RETRY: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// One grant: answers allowed until `until` once the map applied `min_position`.
#[derive(Debug, Clone, Copy)]
struct Grant {
    until: Instant,
    min_position: u64,
}

/// The lease of the current Watch stream, shared by the Watch loop, its lease task and the
/// app's strong checks.
#[derive(Default)]
pub(super) struct MirrorLease {
    /// The grant, and the stream (counted by [`MirrorLease::reset`]) it was granted on.
    grant: RwLock<(u64, Option<Grant>)>,
    /// The position of the last event the map finished applying, on the current stream.
    applied: AtomicU64,
    /// The Watch loop applied something the sidecar waits for.
    nudge: Notify,
}

impl MirrorLease {
    /// Whether a strong check starting `now` may be answered from the map (if it is trusted and
    /// knows the key).
    pub(super) fn allows(&self, now: Instant) -> bool {
        let (_, grant) = match self.grant.read() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        };
        grant.is_some_and(|g| {
            now < g.until && self.applied.load(Ordering::Acquire) >= g.min_position
        })
    }

    /// The map applied the stream up to `position`; `acknowledge` when the sidecar waits for it
    /// (an invalidation or a resync, not a heartbeat).
    pub(super) fn applied(&self, position: u64, acknowledge: bool) {
        self.applied.fetch_max(position, Ordering::AcqRel);
        if acknowledge {
            self.nudge.notify_one();
        }
    }

    /// A new stream opens (or the last one ended): no grant, nothing applied. Returns the new
    /// stream's number, which its lease task hands to [`MirrorLease::set`].
    pub(super) fn reset(&self) -> u64 {
        let mut g = match self.grant.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = (g.0 + 1, None);
        self.applied.store(0, Ordering::Release);
        g.0
    }

    /// Records a grant made on stream `stream`, unless another stream has opened since (a task
    /// being aborted may still finish a call).
    fn set(&self, stream: u64, grant: Grant) {
        let mut g = match self.grant.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.0 == stream {
            g.1 = Some(grant);
        }
    }
}

/// A lease id never used before: 128 random bits in hex.
pub(super) fn new_lease_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Renews the lease of the stream opened with `lease_id` and acknowledges what the map
/// applied, until aborted (when the stream ends).
pub(super) async fn run(lease: Arc<MirrorLease>, stream: u64, client: Client, lease_id: String) {
    let mut renew_at = Instant::now();
    let mut retry = RETRY;
    // Acknowledgements matter only once the sidecar granted something on this stream.
    let mut granted_once = false;
    loop {
        let due = tokio::time::sleep_until(renew_at.into());
        tokio::select! {
            _ = due => {}
            _ = lease.nudge.notified(), if granted_once => {}
        }
        let sent_at = Instant::now();
        let renew = sent_at >= renew_at;
        let applied = lease.applied.load(Ordering::Acquire);
        match client.mirror_lease(&lease_id, applied, renew).await {
            Ok(MirrorLeaseAnswer::Granted {
                granted,
                min_position,
            }) => {
                let term = granted - granted * DRIFT_PPM / 1_000_000;
                lease.set(
                    stream,
                    Grant {
                        until: sent_at + term,
                        min_position,
                    },
                );
                renew_at = sent_at + (term / 4).max(Duration::from_millis(10));
                granted_once = true;
                retry = RETRY;
            }
            Ok(MirrorLeaseAnswer::Refused(reason)) => {
                if renew {
                    tracing::debug!(
                        reason,
                        "mirror lease refused; strong checks ask the sidecar"
                    );
                    renew_at = sent_at + retry;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "mirror lease call failed");
                renew_at = renew_at.max(sent_at + retry);
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}
