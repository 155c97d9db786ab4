//! Periodic reconciliation: the last line of defence against a silent loss.
//!
//! Heartbeats already compare every shard's sequence with Redis many times a second; this task
//! additionally re-reads every mirrored version from Redis every `reconcile_interval` and
//! corrects (and counts) any that differ — a version key deleted or rewritten by hand changes
//! no sequence, so only this can notice it.

use std::sync::Arc;

use tokio::sync::watch;

use crate::fault_injection::{off, Mechanism};
use crate::versions::batcher::Batcher;
use crate::versions::state::{Invalidated, VersionsState, WatchItem};

const CHUNK: usize = 1_000;

pub async fn run(
    state: Arc<VersionsState>,
    reader: Arc<Batcher>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(state.settings.reconcile_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if off(Mechanism::Reconciliation) {
            continue;
        }
        let mismatches = reconcile_once(&state, &reader).await;
        if mismatches > 0 {
            tracing::warn!(
                mismatches,
                "reconciliation corrected mirrored versions that differed from redis"
            );
        }
    }
}

/// Compares every mirrored version with Redis once; returns how many differed.
///
/// Reads go through the read batcher, which writes nothing to Redis (a key without a version
/// — expired or deleted — is dropped from the mirror by the read itself). A difference counts
/// only when no invalidation was in flight (see [`crate::versions::mirror::Mirror::correct`]); then the
/// correction is announced to watchers as an invalidation at the shard's sequence, in order
/// with every other announcement.
pub async fn reconcile_once(state: &VersionsState, reader: &Arc<Batcher>) -> u64 {
    let mut mismatches = 0;
    for shard in 0..state.keyspace.shard_count() {
        let keys = state.mirror.keys(shard);
        for chunk in keys.chunks(CHUNK) {
            let position = state.mirror.position(shard);
            let before: Vec<_> = chunk.iter().map(|k| state.mirror.peek(shard, k)).collect();
            let Ok(reads) = reader.run(chunk.to_vec()).await else {
                return mismatches;
            };
            for ((key, before), read) in chunk.iter().zip(before).zip(reads) {
                let Some(version) = read.version else {
                    continue;
                };
                let corrected = state.mirror.correct(
                    shard,
                    &position,
                    (&read.epoch, read.seq),
                    key,
                    before.as_deref(),
                    &version,
                    |seq| {
                        state.publish(WatchItem::Invalidated(Arc::new(Invalidated {
                            key: key.clone(),
                            version: version.clone(),
                            epoch: Arc::clone(&read.epoch),
                            seq,
                            shard,
                            bumped_at_unix_ms: 0,
                        })))
                    },
                );
                if corrected {
                    mismatches += 1;
                    state.metrics.reconcile_mismatches.inc();
                }
            }
        }
    }
    mismatches
}
