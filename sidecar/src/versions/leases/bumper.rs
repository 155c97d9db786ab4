//! The bumper's side of read leases: a call that issued versions completes only when safe.
//!
//! The shard script answers, atomically with the versions it issued, the shard's lease table.
//! For every holder in it (other than this sidecar's own), the call waits until the holder
//! acknowledges the shard's new sequence (`a|…` on the shard's channel, received by the
//! subscription) or until the holder's grant has run out by this sidecar's reckoning: first
//! sight of that grant value plus `period · (1 + ρ) + margin`, by its own monotonic clock.
//! A grant value is never written twice, so a value seen before was granted before it was
//! first seen — in any shard: one grant call writes one value into every shard it covers, so
//! a sighting in one shard dates the grant in all of them, and a frozen holder delays bumps
//! of all its shards by one lease period together, not one period per shard. A holder waited out is replaced in the table by a marker (`q|<epoch>|<seq>|…`)
//! that refuses it a new grant until it has applied the bump it missed, so that it delays
//! bumps at most once; the quarantine after a new epoch (`!q`) is waited out and removed.
//!
//! Bounds: acknowledgements are kept per shard for at most [`MAX_HOLDERS_PER_SHARD`] holders,
//! first sightings for at most [`MAX_SIGHTINGS`] grant values (beyond, the map is cleared:
//! waits become longer, never shorter); every wait ends at its holder's deadline, at most
//! `10 s · (1 + ρ) + margin`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use crate::versions::leases::{entry_kind, period_of, Entry, LeaseSettings};
use crate::versions::messages::AckMessage;
use crate::versions::shard_script;
use crate::versions::state::VersionsState;

/// Most holders whose acknowledgements are remembered per shard.
pub const MAX_HOLDERS_PER_SHARD: usize = 4_096;

/// Most `(field, value)` first sightings remembered.
pub const MAX_SIGHTINGS: usize = 65_536;

/// A shard whose lease table a versions call answered, with the state the call left it in.
#[derive(Debug, Clone)]
pub struct IssuedIn {
    pub shard: u32,
    pub epoch: String,
    pub seq: u64,
    pub table: Vec<(String, String)>,
}

/// Sightings and acknowledgements of every shard's lease holders.
pub struct Bumper {
    settings: LeaseSettings,
    /// This sidecar's own holder id, never waited for (its mirror learnt the versions first);
    /// `None` when client mirrors hold leases from it, which learn only once it acknowledged.
    own: Option<String>,
    /// When each `(field, value)` of any shard's table was first seen.
    first_seen: Mutex<HashMap<(String, String), Instant>>,
    acks: Vec<Mutex<HashMap<String, (String, u64)>>>,
    acked: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// One lease a call waits for.
struct Wait {
    field: String,
    value: String,
    kind: Entry,
    deadline: Instant,
}

impl Bumper {
    pub fn new(shards: u32, settings: LeaseSettings, own: Option<String>) -> Bumper {
        Bumper {
            settings,
            own,
            first_seen: Mutex::default(),
            acks: (0..shards).map(|_| Mutex::default()).collect(),
            acked: Notify::new(),
        }
    }

    /// A holder acknowledged having applied `shard` up to `msg.seq` of `msg.epoch`.
    pub fn on_ack(&self, shard: u32, msg: AckMessage) {
        let Some(acks) = self.acks.get(shard as usize) else {
            return;
        };
        {
            let mut acks = lock(acks);
            if acks.len() >= MAX_HOLDERS_PER_SHARD && !acks.contains_key(&msg.holder) {
                acks.clear();
            }
            let entry = acks.entry(msg.holder).or_insert((msg.epoch.clone(), 0));
            if entry.0 != msg.epoch || entry.1 < msg.seq {
                *entry = (msg.epoch, msg.seq);
            }
        }
        self.acked.notify_waiters();
    }

    fn has_acked(&self, shard: u32, holder: &str, epoch: &str, seq: u64) -> bool {
        self.acks.get(shard as usize).is_some_and(|acks| {
            lock(acks)
                .get(holder)
                .is_some_and(|(e, s)| e == epoch && *s >= seq)
        })
    }

    /// The leases of `table` to wait for, each with its deadline; records first sightings (at
    /// `received`, when the table arrived).
    fn plan(&self, table: &[(String, String)], received: Instant) -> Vec<Wait> {
        let mut seen = lock(&self.first_seen);
        if seen.len() + table.len() > MAX_SIGHTINGS {
            seen.clear();
        }
        let mut waits = Vec::new();
        for (field, value) in table.iter().take(MAX_HOLDERS_PER_SHARD) {
            if self.own.as_deref() == Some(field.as_str()) {
                continue;
            }
            let first = *seen
                .entry((field.clone(), value.clone()))
                .or_insert(received);
            let kind = entry_kind(field, value);
            let bound = self.settings.bumper_bound(period_of(value));
            // A marker is not waited for; it is removed once it has stood two bounds.
            let deadline = first
                + if kind == Entry::Marker {
                    bound * 2
                } else {
                    bound
                };
            waits.push(Wait {
                field: field.clone(),
                value: value.clone(),
                kind,
                deadline,
            });
        }
        waits
    }

    /// Waits until `lease` is acknowledged past `seq` of `epoch` or its deadline passed;
    /// returns whether it was acknowledged.
    async fn wait_one(&self, shard: u32, epoch: &str, seq: u64, lease: &Wait) -> bool {
        if lease.kind == Entry::Marker {
            return false;
        }
        loop {
            let notified = self.acked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lease.kind == Entry::Holder && self.has_acked(shard, &lease.field, epoch, seq) {
                return true;
            }
            if Instant::now() >= lease.deadline {
                return false;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(lease.deadline.into()) => {}
            }
        }
    }
}

/// Waits until every lease listed in `issued` is acknowledged or run out (the tables arrived
/// at `received`); records the wait and prunes what was waited out. Returns when the versions
/// issued may be returned.
pub async fn wait_for_holders(state: Arc<VersionsState>, issued: Vec<IssuedIn>, received: Instant) {
    let bumper = &state.leases.bumper;
    let mut waited_out = Vec::new();
    let mut waits = Vec::new();
    for shard in &issued {
        for lease in bumper.plan(&shard.table, received) {
            waits.push((shard, lease));
        }
    }
    if waits.is_empty() {
        return;
    }
    let acked = futures::future::join_all(
        waits
            .iter()
            .map(|(shard, lease)| bumper.wait_one(shard.shard, &shard.epoch, shard.seq, lease)),
    )
    .await;
    let mut expired = false;
    for ((shard, lease), acked) in waits.iter().zip(acked) {
        if acked {
            continue;
        }
        // Counted only when the call did wait for it (not for a lease already run out).
        let waited = lease.deadline > received;
        let replacement = match lease.kind {
            Entry::Holder => {
                expired |= waited;
                format!(
                    "q|{}|{}|{}",
                    shard.epoch,
                    shard.seq,
                    period_of(&lease.value).as_millis()
                )
            }
            Entry::Quarantine => {
                expired |= waited;
                String::new()
            }
            // Removed only once it has stood two bounds (a holder still catching up may
            // otherwise take a grant before it applied the bump it missed; harmless, as its
            // grant's sequence keeps it from answering, but it would delay bumps again).
            Entry::Marker if Instant::now() >= lease.deadline => String::new(),
            Entry::Marker => continue,
        };
        waited_out.push((
            shard.shard,
            lease.field.clone(),
            lease.value.clone(),
            replacement,
        ));
    }
    let took = received.elapsed();
    state.metrics.bump_ack_wait.observe(took.as_secs_f64());
    if expired {
        state.metrics.bumps_waited_for_expiry.inc();
    }
    if !waited_out.is_empty() {
        tokio::spawn(prune(Arc::clone(&state), waited_out));
    }
}

/// Replaces leases waited out by markers, and removes quarantines and old markers.
async fn prune(state: Arc<VersionsState>, entries: Vec<(u32, String, String, String)>) {
    let keyspace = &state.keyspace;
    let scripts = state.link.scripts();
    for (shard, field, value, replacement) in &entries {
        let result = state
            .link
            .run(
                "prune_lease",
                state.settings.request_timeout,
                |mut conn| async move {
                    shard_script::prune(
                        scripts,
                        &mut conn,
                        keyspace,
                        *shard,
                        field,
                        value,
                        replacement,
                    )
                    .await
                },
            )
            .await;
        if let Err(err) = result {
            tracing::debug!(error = %err, shard, "lease not pruned; the next bump retries");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bumper() -> Bumper {
        Bumper::new(
            2,
            LeaseSettings {
                period: Duration::from_millis(1_000),
                margin: Duration::from_millis(20),
            },
            Some("me|1".into()),
        )
    }

    #[test]
    fn a_grant_seen_before_keeps_its_first_sighting_and_a_new_one_starts_afresh() {
        let b = bumper();
        let t0 = Instant::now();
        let table = vec![
            ("h|1".to_string(), "1|1000".to_string()),
            ("me|1".to_string(), "1|1000".to_string()),
        ];
        let first = b.plan(&table, t0);
        assert_eq!(first.len(), 1, "never waits for itself");
        let bound = Duration::from_millis(1_021);
        assert_eq!(first[0].deadline, t0 + bound);
        let later = b.plan(&table, t0 + Duration::from_millis(500));
        assert_eq!(later[0].deadline, t0 + bound, "same grant: same deadline");
        let renewed = vec![("h|1".to_string(), "2|1000".to_string())];
        let t1 = t0 + Duration::from_millis(600);
        assert_eq!(b.plan(&renewed, t1)[0].deadline, t1 + bound);
    }

    #[tokio::test]
    async fn an_acknowledgement_past_the_sequence_ends_the_wait() {
        let b = Arc::new(bumper());
        let t0 = Instant::now();
        let table = vec![("h|1".to_string(), "1|1000".to_string())];
        let lease = b.plan(&table, t0).remove(0);
        let waiter = {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.wait_one(1, "e", 5, &lease).await })
        };
        b.on_ack(
            1,
            AckMessage {
                epoch: "e".into(),
                seq: 4,
                holder: "h|1".into(),
            },
        );
        b.on_ack(
            1,
            AckMessage {
                epoch: "other".into(),
                seq: 9,
                holder: "h|1".into(),
            },
        );
        b.on_ack(
            1,
            AckMessage {
                epoch: "e".into(),
                seq: 5,
                holder: "h|1".into(),
            },
        );
        let acked = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the wait ends")
            .expect("no panic");
        assert!(acked);
    }
}
