//! Heartbeat fences: how the sidecar proves its mirror fresh with its own clock only.
//!
//! Every `heartbeat_interval` the sidecar runs the fence of `versions/shard.lua` once per group of
//! shards that share a Redis node (one call for all shards on a standalone Redis), which
//! publishes one heartbeat carrying every fenced shard's epoch and sequence on this sidecar's
//! own fence channel. The send instant is remembered (monotonic clock). When the heartbeat comes
//! back through our own subscription, every bump completed before that instant has been
//! delivered before it (one connection receives a node's messages in publish order); the
//! subscription brings each shard up to the carried sequence and marks it fresh as of the send
//! instant (design guarantee 2). No clock agreement between machines is assumed. Because only
//! the sender subscribes to its fence channel, a fleet of N sidecars costs N script calls and N
//! deliveries per interval, not N × shards calls each delivered N times.
//!
//! Each round also sends a `Heartbeat` to Watch streams, so that clients can tell a quiet
//! stream from a dead one, and refreshes the fence-age and mirror-size gauges. The fences in
//! flight are the shared state's ([`crate::versions::state::Fences`]): the subscription takes
//! them back.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::redis::keyspace::FenceGroup;
use crate::redis::link::LinkError;
use crate::versions::shard_script;
use crate::versions::state::{VersionsState, WatchItem};

/// Sends fences and watch heartbeats until `shutdown`.
pub async fn run(state: Arc<VersionsState>, mut shutdown: watch::Receiver<bool>) {
    let interval = state.settings.heartbeat_interval;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut all_fenced_at = state.started_at;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.fences.nudged() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if state.link.is_connected() {
            tokio::spawn(fence_round(Arc::clone(&state)));
        }
        let now = Instant::now();
        state
            .fences
            .forget_older_than(now.checked_sub(interval * 50).unwrap_or(now));
        let fence_age = state.mirror.oldest_fence_age(now);
        // While a shard is unsynced there is no fence to age; export the time since every
        // shard last had one, which keeps growing (a finite number: Prometheus's text
        // format has no `inf` and alerts compare it with a threshold).
        if let Some(age) = fence_age {
            all_fenced_at = now.checked_sub(age).unwrap_or(all_fenced_at);
        }
        state
            .metrics
            .fence_age
            .set(now.saturating_duration_since(all_fenced_at).as_secs_f64());
        state.record_mirror_size();
        let sent_at_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        state.publish(WatchItem::Heartbeat {
            // Rounded up: a client must never think the fence younger than it is.
            fence_age_ms: fence_age.map_or(u64::MAX, |a| {
                u64::try_from(a.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
            }),
            sent_at_unix_us,
        });
    }
}

/// One fence per group of shards, sent concurrently.
async fn fence_round(state: Arc<VersionsState>) {
    let groups = state.keyspace.fence_groups(&state.settings.server_id);
    let fences = groups.iter().map(|group| fence(&state, group));
    for result in futures::future::join_all(fences).await {
        if let Err(err) = result {
            tracing::debug!(error = %err, "heartbeat fence not sent");
        }
    }
}

/// Sends one fence for `group`, telling the script the newest state seen of each shard.
async fn fence(state: &VersionsState, group: &FenceGroup) -> Result<(), LinkError> {
    let timeout = state.settings.max_staleness.max(Duration::from_millis(100));
    let keyspace = &state.keyspace;
    let scripts = state.link.scripts();
    let nonce = &state.fences.register(group.shards.clone(), Instant::now());
    let lease_ms = state.settings.leases.period.as_millis() as u64;
    let seen: &Vec<shard_script::Seen> = &group
        .shards
        .iter()
        .map(|&shard| state.mirror.newest_seen(shard))
        .collect();
    state
        .link
        .run("fence", timeout, |mut conn| async move {
            shard_script::fence(
                scripts,
                &mut conn,
                keyspace,
                &group.shards,
                &group.channel,
                nonce,
                seen,
                lease_ms,
            )
            .await
        })
        .await
}
