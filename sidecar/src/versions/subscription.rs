//! The subscription: applies every shard's invalidations to the mirror, in order, and repairs
//! whatever was lost (design guarantee 5).
//!
//! One dedicated RESP3 connection (one per node on a cluster) subscribes to every shard channel
//! and to this sidecar's own fence channels, and sends no other command. Its push messages are
//! handled one at a time by this task:
//!
//! - an invalidation is applied if it is the next sequence of its shard; a gap is repaired
//!   from the shard's replay log, or, when the log no longer holds the missing entries, the
//!   shard is dropped and watchers are told to `Resync`;
//! - our heartbeat fence coming back carries each fenced shard's epoch and sequence: a mirror
//!   that is behind repairs, one that diverged (new epoch, counters gone backwards) is dropped,
//!   and the shard is marked fresh as of the fence's send instant (see `heartbeat`).
//! - a `Disconnection` push (the only sign redis-rs gives of a dropped connection), a closed
//!   channel or heartbeats that stop coming back end the session: every shard is suspended,
//!   the task reconnects with backoff and resubscribes, and each shard is synced again by its
//!   next returned heartbeat (subscribe first, then read sequences, then serve).
//! - messages that arrive faster than they are applied queue up to `push_buffer_bytes`
//!   ([`PushQueue`]); past it the session ends the same way, and resyncing repairs what was
//!   dropped.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::watch;

use crate::buffers::push::{PushQueue, Pushed};
use crate::fault_injection::{off, Mechanism};
use crate::redis::link::LinkError;
use crate::versions::audit::canary::is_canary;
use crate::versions::messages::{ChannelMessage, FenceMessage, InvalidationMessage};
use crate::versions::mirror::{Applied, FenceCheck};
use crate::versions::shard_script;
use crate::versions::state::{Invalidated, VersionsState, WatchItem};
use crate::versions::version::VersionStr;

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot subscribe: {0}")]
    Connect(#[from] redis::RedisError),
    #[error("subscription connection dropped")]
    Disconnected,
    #[error("server ended our subscription ({0:?})")]
    Unsubscribed(PushKind),
    #[error("no heartbeat came back for {0:?}; the subscription is presumed dead")]
    Stalled(Duration),
    #[error("redis operation failed: {0}")]
    Redis(#[from] LinkError),
    #[error("invalidations arrived faster than they were applied, past push_buffer_bytes")]
    Overflowed,
}

/// Keeps the subscription alive until `shutdown`.
pub async fn run(state: Arc<VersionsState>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(50);
    let mut sessions = 0u64;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !state.link.is_connected() {
            // Syncing needs the command connection; wait for it rather than spin.
            tokio::select! {
                _ = state.link.wait_connected(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let result = session(&state, &mut shutdown, &mut sessions).await;
        state.subscription_live.store(false, Ordering::SeqCst);
        state.metrics.set_connected("subscription", false);
        state.mirror.suspend_all();
        match result {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "subscription lost; invalidations may have been missed, will repair")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
        if sessions > 0 && state.subscription_live.load(Ordering::SeqCst) {
            backoff = Duration::from_millis(50);
        }
    }
}

async fn session(
    state: &Arc<VersionsState>,
    shutdown: &mut watch::Receiver<bool>,
    sessions: &mut u64,
) -> Result<(), SessionError> {
    let pushes = PushQueue::new(
        state.settings.push_buffer_bytes,
        state.metrics.buffer("push_invalidations"),
        state.metrics.limit_counter("push_buffer_bytes"),
    );
    let config = AsyncConnectionConfig::new()
        .set_push_sender(pushes.sender())
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let keyspace = &state.keyspace;
    let mut channels = keyspace.channels();
    channels.extend(
        keyspace
            .fence_groups(&state.settings.server_id)
            .into_iter()
            .map(|group| group.channel),
    );
    let plan = state
        .link
        .run(
            "subscription_plan",
            state.settings.request_timeout,
            |mut conn| {
                let channels = &channels;
                async move {
                    state
                        .link
                        .target()
                        .subscription_plan(&mut conn, channels)
                        .await
                }
            },
        )
        .await?;
    let subscribe = if state.keyspace.sharded_channels() {
        "SSUBSCRIBE"
    } else {
        "SUBSCRIBE"
    };
    // Kept alive for the session; they send nothing but subscriptions.
    let mut _connections = Vec::with_capacity(plan.len());
    for (url, node_channels) in plan {
        let mut conn = state
            .link
            .target()
            .client(&url)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // One channel per command, so that each reply is exactly one confirmation.
        for channel in node_channels {
            redis::cmd(subscribe)
                .arg(&channel)
                .query_async::<Value>(&mut conn)
                .await?;
        }
        _connections.push(conn);
    }
    *sessions += 1;
    if *sessions > 1 {
        state
            .metrics
            .redis_reconnects
            .get_or_create(&[("connection", "subscription")])
            .inc();
    }
    state.subscription_live.store(true, Ordering::SeqCst);
    state.metrics.set_connected("subscription", true);
    tracing::info!(channels = channels.len(), "subscribed; syncing shards");
    state.fences.fence_now();

    let session_start = Instant::now();
    let stall_limit = (state.settings.max_staleness * 4).max(Duration::from_secs(2));
    let mut stall_check = tokio::time::interval(stall_limit / 4);
    loop {
        tokio::select! {
            push = pushes.recv() => match push {
                Pushed::Message(push) => handle_push(state, push).await?,
                Pushed::Overflowed => return Err(SessionError::Overflowed),
            },
            _ = stall_check.tick() => {
                let last = state.fences.last_returned().map_or(session_start, |t| t.max(session_start));
                if state.link.is_connected() && last.elapsed() > stall_limit {
                    return Err(SessionError::Stalled(last.elapsed()));
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return Ok(());
                }
            }
        }
    }
}

async fn handle_push(state: &Arc<VersionsState>, push: PushInfo) -> Result<(), SessionError> {
    match push.kind {
        PushKind::Message | PushKind::SMessage => {}
        PushKind::Disconnection => return Err(SessionError::Disconnected),
        PushKind::Unsubscribe | PushKind::SUnsubscribe => {
            return Err(SessionError::Unsubscribed(push.kind))
        }
        _ => return Ok(()),
    }
    let mut data = push.data.into_iter();
    let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
        return Ok(());
    };
    let (Some(channel), Some(payload)) = (bytes(channel), bytes(payload)) else {
        return Ok(());
    };
    let shard = std::str::from_utf8(&channel)
        .ok()
        .and_then(|c| state.keyspace.shard_of_channel(c));
    match (ChannelMessage::parse(&payload), shard) {
        (Some(ChannelMessage::Invalidation(msg)), Some(shard)) => {
            on_invalidation(state, shard, msg).await
        }
        // Only we subscribe to our fence channels; the nonce proves the fence is ours.
        (Some(ChannelMessage::Fence(msg)), None) => on_fence(state, msg).await,
        (Some(ChannelMessage::Ack(msg)), Some(shard)) => {
            state.leases.bumper.on_ack(shard, msg);
            Ok(())
        }
        _ => {
            tracing::debug!(?shard, "ignoring a message that is not ours");
            Ok(())
        }
    }
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    redis::from_redis_value(value).ok()
}

async fn on_invalidation(
    state: &Arc<VersionsState>,
    shard: u32,
    msg: InvalidationMessage,
) -> Result<(), SessionError> {
    #[cfg(feature = "fault-injection")]
    if state.faults.skips(&msg.key) && state.mirror.skip_applying(shard, &msg.epoch, msg.seq) {
        return Ok(());
    }
    let mut applied = state
        .mirror
        .apply(shard, &msg.epoch, msg.seq, &msg.key, &msg.version);
    if let Applied::Gap { from, to } = applied {
        state.metrics.gaps_detected.inc();
        tracing::warn!(shard, from, to, "invalidation sequence gap");
        repair(state, shard, &msg.epoch, from, to).await?;
        applied = state
            .mirror
            .apply(shard, &msg.epoch, msg.seq, &msg.key, &msg.version);
    }
    match applied {
        Applied::InOrder => {}
        Applied::EpochChanged => state.resync_watchers("epoch_changed"),
        _ => return Ok(()),
    }
    announce(
        state,
        Invalidated {
            key: msg.key,
            version: VersionStr::from(msg.version),
            epoch: Arc::from(msg.epoch),
            seq: msg.seq,
            shard,
            bumped_at_unix_ms: msg.bumped_at_unix_ms,
        },
    );
    acknowledge(state, shard);
    Ok(())
}

/// Our fence came back: every invalidation published before it was sent has been applied or
/// is repaired now, so each fenced shard is synced to the carried sequence and fresh as of the
/// send instant.
///
/// A shard that cannot be brought up to the fence by replaying what it missed is dropped and
/// restarted at the fence's state — including a shard synced for the first time, whose missed
/// invalidations are unknown: bumps made before the subscription came up may have reached no
/// one. Watch streams may already be open (and their clients may have filled entries from Get
/// answers meanwhile), so every such drop is announced with one `Resync`, sent before any
/// shard of this fence is marked fresh and so before any heartbeat vouches past it (the watch
/// contract, docs/design.md).
async fn on_fence(state: &Arc<VersionsState>, msg: FenceMessage) -> Result<(), SessionError> {
    let Some((shards, sent_at)) = state.fences.take(&msg.nonce) else {
        return Ok(());
    };
    if shards.len() != msg.shards.len() {
        tracing::warn!(
            expected = shards.len(),
            got = msg.shards.len(),
            "malformed fence ignored"
        );
        return Ok(());
    }
    let mut dropped: Option<&'static str> = None;
    let mut moved = Vec::new();
    for (&shard, (epoch, seq)) in shards.iter().zip(&msg.shards) {
        let before = state.mirror.position(shard);
        let synced_before = before.is_some();
        let drop_reason = match state.mirror.compare(shard, epoch, *seq) {
            FenceCheck::Fresh => None,
            _ if !synced_before => Some("first_sync"),
            FenceCheck::Behind { .. } if off(Mechanism::GapRepair) => None,
            FenceCheck::Behind { from, to } => {
                state.metrics.gaps_detected.inc();
                repair(state, shard, epoch, from, to).await?;
                None
            }
            FenceCheck::Diverged => Some("epoch_changed"),
        };
        if let Some(reason) = drop_reason {
            state.mirror.reset(shard, epoch, *seq);
            dropped = dropped.or(Some(reason));
        }
        if state.mirror.position(shard) != before {
            moved.push(shard);
        }
    }
    if let Some(reason) = dropped {
        if !(reason == "first_sync" && off(Mechanism::FirstSyncResync)) {
            state.resync_watchers(reason);
        }
    }
    for shard in shards {
        state.mirror.mark_fresh(shard, sent_at);
    }
    for shard in moved {
        acknowledge(state, shard);
    }
    Ok(())
}

/// Has a read-lease holder acknowledge what the shard has applied (no-op without leases).
/// Called after the events that moved it were pushed to the Watch ring: client mirrors holding
/// leases must apply everything before the ring's head first (docs/design.md, "Read leases in
/// client mirrors").
fn acknowledge(state: &VersionsState, shard: u32) {
    if let Some(holder) = &state.leases.holder {
        if let Some(position) = state.mirror.position(shard) {
            holder.moved(shard, position, state.events.next_index());
        }
    }
}

/// Brings a shard from `from - 1` up to `to` from its replay log, or drops it when the log no
/// longer holds those entries.
async fn repair(
    state: &Arc<VersionsState>,
    shard: u32,
    epoch: &str,
    from: u64,
    to: u64,
) -> Result<(), SessionError> {
    let keyspace = &state.keyspace;
    let entries =
        state
            .link
            .run(
                "read_log",
                state.settings.request_timeout,
                |mut conn| async move {
                    shard_script::read_log(&mut conn, keyspace, shard, from, to).await
                },
            )
            .await?;
    let prefix = format!("{epoch}.");
    let complete = entries.len() as u64 == to + 1 - from
        && entries.iter().all(|e| e.version.starts_with(&prefix));
    let repaired = complete
        && state.mirror.apply_repair(
            shard,
            epoch,
            &entries
                .iter()
                .map(|e| (e.seq, e.key.as_str(), e.version.as_str()))
                .collect::<Vec<_>>(),
        );
    if repaired {
        state.metrics.repairs_from_log.inc();
        tracing::info!(shard, from, to, "gap repaired from the replay log");
        let epoch = Arc::<str>::from(epoch);
        for e in entries {
            announce(
                state,
                Invalidated {
                    key: e.key,
                    version: VersionStr::from(e.version),
                    epoch: Arc::clone(&epoch),
                    seq: e.seq,
                    shard,
                    bumped_at_unix_ms: e.bumped_at_unix_ms,
                },
            );
        }
        state.mirror.mark_synced(shard);
    } else {
        state.mirror.reset(shard, epoch, to);
        state.resync_watchers("gap_beyond_log");
    }
    Ok(())
}

/// Counts an applied invalidation and hands it to watchers.
fn announce(state: &VersionsState, invalidated: Invalidated) {
    state.metrics.invalidations_received.inc();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if invalidated.bumped_at_unix_ms > 0 {
        state
            .metrics
            .propagation_delay
            .observe(now_ms.saturating_sub(invalidated.bumped_at_unix_ms) as f64 / 1000.0);
    }
    if is_canary(&invalidated.key) {
        state.canary_clock.observe(
            &state.metrics.audit.canary_propagation,
            invalidated.bumped_at_unix_ms,
        );
    }
    state.publish(WatchItem::Invalidated(Arc::new(invalidated)));
}
