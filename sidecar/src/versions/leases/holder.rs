//! The holder's side of read leases: grants, the local strong answer's rule, and acknowledgements.
//!
//! Every third of `read_lease_ms`, while the subscription is live and every shard synced and
//! fenced within `max_staleness`, the holder renews its grant on every shard, one shard-script
//! call per Redis node ("lease" mode), with a value never written before
//! (`<counter>|<read_lease_ms>`). It notes the instant `t_send` before sending; the grant is
//! valid until `t_send + read_lease_ms · (1 − ρ) − margin` and carries the shard's `(epoch,
//! seq)` at the grant. A strong check may be answered from the mirror only while a grant is
//! valid *and* the mirror is in that epoch and has applied at least that sequence (see
//! [`Holder::allows`]); an unhealthy holder stops renewing, so its grants run out.
//!
//! After the subscription applies anything to a shard, the holder acknowledges its applied
//! position on the shard's channel; one acknowledgement call is in flight at a time and later
//! moves coalesce into the next (the set of moved shards is bounded by the shard count).
//! With client mirrors holding leases from this sidecar ([`super::mirrors`]) it first waits
//! until they applied what the Watch ring held when the position was recorded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::fault_injection::{off, Mechanism};
use crate::token::random_token;
use crate::versions::leases::LeaseSettings;
use crate::versions::shard_script::{self, HolderPosition, ShardState};
use crate::versions::state::VersionsState;

/// One grant: valid until `until` (local monotonic clock) for a mirror in `epoch` that has
/// applied at least `seq`.
#[derive(Debug, Clone)]
struct Grant {
    epoch: Arc<str>,
    seq: u64,
    until: Instant,
}

/// This sidecar's read leases.
pub struct Holder {
    /// `<server_id>|<instance>`: unique to this process.
    pub id: String,
    settings: LeaseSettings,
    /// Per shard, the newest grant and the one before (still valid for a while, and satisfied
    /// by a mirror that has not yet caught up with the newest).
    grants: Vec<RwLock<[Option<Grant>; 2]>>,
    counter: AtomicU64,
    moved: Mutex<Moved>,
    /// Per shard, the latest applied position recorded for acknowledgement (after its events
    /// reached the Watch ring): what mirror leases are granted on.
    announced: Vec<RwLock<Option<Position>>>,
    nudge: Notify,
}

/// A shard's epoch and applied sequence.
type Position = (Arc<str>, u64);

/// Positions to acknowledge, per shard, and the Watch ring's head when the latest was recorded.
#[derive(Default)]
struct Moved {
    positions: BTreeMap<u32, (String, u64)>,
    ring_head: u64,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    match lock.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Holder {
    pub fn new(server_id: &str, shards: u32, settings: LeaseSettings) -> Holder {
        Holder {
            id: format!("{server_id}|{}", random_token()),
            settings,
            grants: (0..shards).map(|_| RwLock::new([None, None])).collect(),
            counter: AtomicU64::new(0),
            moved: Mutex::default(),
            announced: (0..shards).map(|_| RwLock::new(None)).collect(),
            nudge: Notify::new(),
        }
    }

    /// Whether a mirror shard in `epoch` that has applied `applied` may answer a strong check
    /// at `now`: some grant is still valid and was granted in that epoch at or before `applied`.
    pub fn allows(&self, shard: u32, now: Instant, epoch: &str, applied: u64) -> bool {
        self.time_left(shard, now, epoch, applied).is_some()
    }

    /// How long, from `now`, some grant allows the shard at that position (see [`Holder::allows`]).
    fn time_left(&self, shard: u32, now: Instant, epoch: &str, applied: u64) -> Option<Duration> {
        let grants = read(self.grants.get(shard as usize)?);
        grants
            .iter()
            .flatten()
            .filter(|g| now < g.until && &*g.epoch == epoch && applied >= g.seq)
            .map(|g| g.until - now)
            .max()
    }

    /// How long a client mirror's lease may last from `now`: the least time left of the grants
    /// allowing every shard at the position last recorded for acknowledgement (whose events are
    /// in the Watch ring), each shard's mirror also trusted (`trusted`); `None` if any is not.
    pub fn time_left_everywhere(
        &self,
        now: Instant,
        trusted: impl Fn(u32) -> bool,
    ) -> Option<Duration> {
        let mut least: Option<Duration> = None;
        for (shard, announced) in self.announced.iter().enumerate() {
            let shard = shard as u32;
            let (epoch, seq) = read(announced).clone()?;
            if !trusted(shard) {
                return None;
            }
            let left = self.time_left(shard, now, &epoch, seq)?;
            least = Some(least.map_or(left, |l| l.min(left)));
        }
        least
    }

    /// Shards under a valid grant at `now`.
    pub fn held(&self, now: Instant) -> usize {
        self.grants
            .iter()
            .filter(|g| match g.read() {
                Ok(g) => g.iter().flatten().any(|g| now < g.until),
                Err(_) => false,
            })
            .count()
    }

    fn install(&self, shard: u32, at_grant: ShardState, sent_at: Instant) {
        let Some(slot) = self.grants.get(shard as usize) else {
            return;
        };
        let grant = Grant {
            epoch: Arc::from(at_grant.epoch),
            seq: at_grant.seq,
            until: sent_at + self.settings.holder_term(),
        };
        let mut slot = match slot.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        slot[1] = slot[0].take();
        slot[0] = Some(grant);
    }

    /// Stops every local strong answer at once (shutdown).
    pub fn drop_all(&self) {
        for slot in &self.grants {
            if let Ok(mut slot) = slot.write() {
                *slot = [None, None];
            }
        }
    }

    /// The subscription applied `shard` up to `position` and pushed its events to the Watch
    /// ring, whose head is now `ring_head`: acknowledge it. Called only by the one task that
    /// applies invalidations, after the push.
    pub fn moved(&self, shard: u32, position: (String, u64), ring_head: u64) {
        if let Some(announced) = self.announced.get(shard as usize) {
            if let Ok(mut announced) = announced.write() {
                *announced = Some((Arc::from(position.0.as_str()), position.1));
            }
        }
        if let Ok(mut moved) = self.moved.lock() {
            moved.positions.insert(shard, position);
            moved.ring_head = moved.ring_head.max(ring_head);
        }
        self.nudge.notify_one();
    }

    fn take_moved(&self) -> Moved {
        match self.moved.lock() {
            Ok(mut moved) => Moved {
                positions: std::mem::take(&mut moved.positions),
                ring_head: moved.ring_head,
            },
            Err(_) => Moved::default(),
        }
    }
}

/// Renews grants and sends acknowledgements until `shutdown`, then releases the grants.
pub async fn run(state: Arc<VersionsState>, shutdown: watch::Receiver<bool>) {
    let Some(holder) = state.leases.holder.as_ref() else {
        return;
    };
    let acks = tokio::spawn(acknowledge(Arc::clone(&state), shutdown.clone()));
    renew(&state, holder, shutdown).await;
    holder.drop_all();
    state.metrics.read_leases_held.set(0);
    acks.abort();
    // Client mirrors may still answer under leases cut from our grants: bumpers must keep
    // waiting for our grants until those have run out (no new one is granted after drop_all).
    while state.leases.mirrors.any_live(Instant::now()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release(&state, holder).await;
}

async fn renew(state: &Arc<VersionsState>, holder: &Holder, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(holder.settings.period / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let now = Instant::now();
        let healthy = state.is_synced()
            && state
                .mirror
                .oldest_fence_age(now)
                .is_some_and(|age| age <= state.settings.max_staleness);
        if healthy {
            let groups = state.keyspace.fence_groups(&state.settings.server_id);
            let grants = groups
                .iter()
                .map(|group| grant(state, holder, &group.shards));
            futures::future::join_all(grants).await;
        }
        let now = Instant::now();
        let metrics = &state.metrics;
        metrics.read_leases_held.set(holder.held(now) as i64);
        metrics
            .mirror_leases_held
            .set(state.leases.mirrors.live(now) as i64);
    }
}

/// Takes (renews) the grant on `shards`, all on one Redis node.
async fn grant(state: &VersionsState, holder: &Holder, shards: &[u32]) {
    let counter = holder.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let value = format!("{counter}|{}", holder.settings.period.as_millis());
    let positions = positions(state, shards);
    let keyspace = &state.keyspace;
    let scripts = state.link.scripts();
    let lease_ms = holder.settings.period.as_millis() as u64;
    let sent_at = Instant::now();
    let result = state
        .link
        .run("lease", state.settings.request_timeout, |mut conn| {
            let (value, positions) = (&value, &positions);
            async move {
                shard_script::lease(
                    scripts, &mut conn, keyspace, &holder.id, value, positions, lease_ms,
                )
                .await
            }
        })
        .await;
    match result {
        Ok(states) => {
            for (&shard, at_grant) in shards.iter().zip(states) {
                match at_grant {
                    Some(at_grant) => holder.install(shard, at_grant, sent_at),
                    None => tracing::debug!(shard, "read lease refused: quarantined"),
                }
            }
        }
        Err(err) => tracing::debug!(error = %err, "read lease not renewed"),
    }
}

fn positions(state: &VersionsState, shards: &[u32]) -> Vec<HolderPosition> {
    shards
        .iter()
        .map(|&shard| HolderPosition {
            shard,
            seen: state.mirror.newest_seen(shard),
            applied: state
                .mirror
                .position(shard)
                .unwrap_or_else(|| (String::new(), 0)),
        })
        .collect()
}

/// Publishes the applied position of every shard that moved, one call per Redis node at a time.
async fn acknowledge(state: Arc<VersionsState>, mut shutdown: watch::Receiver<bool>) {
    let Some(holder) = state.leases.holder.as_ref() else {
        return;
    };
    loop {
        tokio::select! {
            _ = holder.nudge.notified() => {}
            _ = shutdown.changed() => return,
        }
        let Moved {
            positions,
            ring_head,
        } = holder.take_moved();
        if positions.is_empty() {
            continue;
        }
        let mirrors = &state.leases.mirrors;
        if mirrors.enabled() && !off(Mechanism::MirrorAckWait) {
            let started = Instant::now();
            let waited_out = mirrors.wait_applied(ring_head).await;
            let metrics = &state.metrics;
            metrics
                .mirror_ack_wait
                .observe(started.elapsed().as_secs_f64());
            if waited_out {
                metrics.mirror_leases_waited_out.inc();
            }
        }
        let positions: Vec<(u32, String, u64)> = positions
            .into_iter()
            .map(|(shard, (epoch, seq))| (shard, epoch, seq))
            .collect();
        let calls: Vec<Vec<(u32, String, u64)>> = if state.keyspace.one_call_covers_every_shard() {
            vec![positions]
        } else {
            positions.into_iter().map(|p| vec![p]).collect()
        };
        for positions in calls {
            let keyspace = &state.keyspace;
            let scripts = state.link.scripts();
            let result = state
                .link
                .run("ack", state.settings.request_timeout, |mut conn| {
                    let positions = &positions;
                    async move {
                        shard_script::ack(scripts, &mut conn, keyspace, &holder.id, positions).await
                    }
                })
                .await;
            if let Err(err) = result {
                tracing::debug!(error = %err, "read-lease acknowledgement not sent");
            }
        }
    }
}

/// Removes this holder from every shard's lease table (best effort: bumpers otherwise wait
/// its grants out once).
async fn release(state: &VersionsState, holder: &Holder) {
    let keyspace = &state.keyspace;
    let scripts = state.link.scripts();
    for group in state.keyspace.fence_groups(&state.settings.server_id) {
        let positions = positions(state, &group.shards);
        let _ = state
            .link
            .run("lease", state.settings.request_timeout, |mut conn| {
                let positions = &positions;
                async move {
                    shard_script::lease(scripts, &mut conn, keyspace, &holder.id, "", positions, 0)
                        .await
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_grant_serves_only_its_epoch_from_its_sequence_on_and_only_until_its_term() {
        let settings = LeaseSettings {
            period: Duration::from_millis(1_000),
            margin: Duration::from_millis(20),
        };
        let h = Holder::new("a", 2, settings);
        let t0 = Instant::now();
        assert!(!h.allows(0, t0, "e", 5));
        h.install(
            0,
            ShardState {
                epoch: "e".into(),
                seq: 5,
            },
            t0,
        );
        assert!(h.allows(0, t0, "e", 5));
        assert!(!h.allows(0, t0, "e", 4), "not caught up with the grant");
        assert!(!h.allows(0, t0, "f", 9), "another epoch");
        assert!(!h.allows(1, t0, "e", 5), "another shard");
        let term = settings.holder_term();
        assert!(h.allows(0, t0 + term - Duration::from_millis(1), "e", 5));
        assert!(!h.allows(0, t0 + term, "e", 5), "the term is over");
        h.install(
            0,
            ShardState {
                epoch: "e".into(),
                seq: 9,
            },
            t0 + Duration::from_millis(300),
        );
        assert!(
            h.allows(0, t0 + Duration::from_millis(400), "e", 5),
            "the older grant still serves"
        );
        assert_eq!(h.held(t0), 1);
        h.drop_all();
        assert!(!h.allows(0, t0, "e", 9));
    }
}
