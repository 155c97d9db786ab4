//! Periodic reconciliation: the last line of defence against a silent loss.
//!
//! Heartbeats already compare every shard's sequence with Redis many times a second; this task
//! additionally re-reads every mirrored version from Redis every `reconcile_interval` and
//! corrects (and counts) any that differ — a version key deleted or rewritten by hand changes
//! no sequence, so only this can notice it.

use std::sync::Arc;

use tokio::sync::watch;

use crate::batcher::Batcher;
use crate::state::{Invalidated, SidecarState, WatchItem};

const CHUNK: usize = 1_000;

pub async fn run(
    state: Arc<SidecarState>,
    reader: Arc<Batcher>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(state.config.reconcile_interval());
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
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
pub async fn reconcile_once(state: &SidecarState, reader: &Arc<Batcher>) -> u64 {
    let mut mismatches = 0;
    for shard in 0..state.keyspace.shard_count() {
        let keys = state.mirror.keys(shard);
        for chunk in keys.chunks(CHUNK) {
            let position = state.mirror.position(shard);
            let before: Vec<_> = chunk.iter().map(|k| state.mirror.peek(shard, k)).collect();
            let Ok(current) = reader.run(chunk.to_vec()).await else {
                return mismatches;
            };
            if state.mirror.position(shard) != position {
                // Invalidations arrived meanwhile: a difference could be one of them. The next
                // round looks again.
                continue;
            }
            let seq = position.map_or(0, |(_, seq)| seq);
            for ((key, old), new) in chunk.iter().zip(before).zip(current) {
                if old.as_deref() != Some(&*new) {
                    mismatches += 1;
                    state.metrics.reconcile_mismatches.inc();
                    state.publish(WatchItem::Invalidated(Arc::new(Invalidated {
                        key: key.clone(),
                        version: new,
                        seq,
                        shard,
                        bumped_at_unix_ms: 0,
                    })));
                }
            }
        }
    }
    mismatches
}
