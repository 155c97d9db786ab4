//! The propagation prober: every `canary_interval_ms` each sidecar bumps its own canary key,
//! `__coherence__/canary/<server_id>`, and every sidecar records how long its mirror took to
//! apply each canary bump (`coherence_canary_propagation_seconds`): the fleet's end-to-end
//! invalidation latency, measured all the time, per receiving sidecar.
//!
//! The bump carries Redis's `TIME` when it ran; the receiver compares it with its own wall clock
//! corrected by an estimate of the offset between the two clocks, taken by a `TIME` call before
//! each of its own canary bumps (error at most half that call's round trip, plus Redis's
//! millisecond rounding). Canary keys never reach Watch streams: client mirrors have no use
//! for them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::versions::audit::clock::wall_us;
use crate::versions::batcher::Batcher;
use crate::versions::state::VersionsState;

/// The prefix of every canary key (reserved: Watch streams never carry it).
pub const CANARY_PREFIX: &str = "__coherence__/canary/";

/// Whether `key` is a canary key.
pub fn is_canary(key: &str) -> bool {
    key.starts_with(CANARY_PREFIX)
}

/// Bumps this sidecar's canary key every `interval` while the sidecar is synced, until
/// `shutdown` (the task the sidecar spawns when `canary_interval_ms` > 0).
pub async fn run(
    state: Arc<VersionsState>,
    bumper: Arc<Batcher>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = format!("{CANARY_PREFIX}{}", state.settings.server_id);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
        if !state.is_synced() {
            continue;
        }
        if let Some(offset) = measure_offset(&state).await {
            state.canary_clock.set_offset(offset);
        }
        if bumper.run(vec![key.clone()]).await.is_ok() {
            state.metrics.audit.canary_bumps.inc();
        }
    }
}

/// Redis's `TIME` minus the midpoint of our wall clock around the call, in microseconds.
async fn measure_offset(state: &VersionsState) -> Option<i64> {
    let before = wall_us();
    let (secs, micros): (i64, i64) = state
        .link
        .run(
            "time",
            state.settings.request_timeout,
            |mut conn| async move { redis::cmd("TIME").query_async(&mut conn).await },
        )
        .await
        .ok()?;
    let after = wall_us();
    Some(secs * 1_000_000 + micros - (before + after) / 2)
}
