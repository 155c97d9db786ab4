//! Mirror leases: this sidecar's read leases passed on to the client mirrors beside it, so that
//! an app answers strong checks in its own memory (docs/design.md, "Read leases in client
//! mirrors"; docs/client-protocol.md, rules 16–19).
//!
//! A mirror opens its Watch stream with a `lease_id`; the stream then records, per ring item it
//! passes, how far it has read and which positions it delivered that change a mirror's map
//! (`Invalidated`, `Resync`). The mirror acknowledges the position it applied with
//! `MirrorLease`, which also renews its lease. Before the holder acknowledges a shard position
//! to Redis it waits (`wait_applied`) until every mirror lease it counts live has applied every
//! ring item pushed before that position was recorded, or has run out by this sidecar's clock.
//!
//! Bounds: at most `max_mirror_leases` tracked streams (a stream beyond it is served without
//! leases; one with a lease id already tracked is refused, since its renewals would be judged on
//! the other stream's progress); per stream at most [`MAX_UNACKED`] delivered
//! but unacknowledged positions — beyond, the stream counts as never caught up (bumps wait its
//! lease out) and is refused renewals until its mirror acknowledged everything delivered. A
//! closed stream's record is kept until its last lease has run out.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::versions::leases::LeaseSettings;

/// Most delivered positions a stream remembers until its mirror acknowledges them.
pub const MAX_UNACKED: usize = 4_096;

/// Why a renewal granted nothing (sent to the client as `refused`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("read leases are off on this sidecar (read_lease_ms = 0 or max_mirror_leases = 0)")]
    Off,
    #[error("no Watch stream is open with this lease_id (open one with it first)")]
    UnknownStream,
    #[error("the Watch stream of this lease_id has ended")]
    StreamEnded,
    #[error("the mirror has not acknowledged what its stream delivered")]
    Behind,
    #[error("the sidecar holds no read lease covering every shard now")]
    NotHolding,
}

/// A Watch stream asked for a lease id another stream uses (docs/client-protocol.md, rule 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lease_id: another Watch stream uses this lease id (choose a new random one per stream)")]
pub struct LeaseIdInUse;

/// A granted mirror lease, as answered to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorGrant {
    /// The client counts it from the instant it sent its request.
    pub granted: Duration,
    /// The mirror may answer under it only once it applied events up to this position.
    pub min_position: u64,
}

/// Every tracked stream.
pub struct MirrorLeases {
    settings: LeaseSettings,
    max: usize,
    streams: Mutex<HashMap<String, Arc<Mutex<Tracked>>>>,
    /// A mirror acknowledged, or a stream read further.
    progress: Notify,
}

/// What one stream delivered and its mirror acknowledged.
#[derive(Debug, Default)]
struct Tracked {
    /// Ring items with an index below this have been passed by the stream (delivered or not).
    read_through: u64,
    /// Positions delivered (that change a map) and not yet acknowledged, in order.
    unacked: VecDeque<u64>,
    /// The latest position delivered that changes a map.
    last_delivered: u64,
    /// The mirror's latest acknowledged position.
    acked: u64,
    /// More than [`MAX_UNACKED`] delivered unacknowledged: never caught up until fully acked.
    overflowed: bool,
    /// Until when this sidecar counts the stream's latest lease possibly live.
    live_until: Option<Instant>,
    open: bool,
}

impl Tracked {
    fn ack(&mut self, applied: u64) {
        self.acked = self.acked.max(applied);
        while self.unacked.front().is_some_and(|&p| p <= self.acked) {
            self.unacked.pop_front();
        }
        if self.overflowed && self.acked >= self.last_delivered {
            self.overflowed = false;
            self.unacked.clear();
        }
    }

    /// Whether the mirror has applied everything of the ring before index `head`.
    fn caught_up(&self, head: u64) -> bool {
        !self.overflowed
            && self.read_through >= head
            && self.unacked.front().is_none_or(|&p| p > head)
    }

    fn live(&self, now: Instant) -> bool {
        self.live_until.is_some_and(|until| now < until)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl MirrorLeases {
    /// `max` tracked streams at most; 0 (or leases off) tracks none.
    pub fn new(settings: LeaseSettings, max: usize) -> MirrorLeases {
        MirrorLeases {
            max: if settings.enabled() { max } else { 0 },
            settings,
            streams: Mutex::default(),
            progress: Notify::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max > 0
    }

    /// Starts tracking the Watch stream opened with `lease_id`, whose ring reader starts at
    /// `read_from`. `Ok(None)` (the stream is served without leases) when mirror leases are off
    /// or the table is full; [`LeaseIdInUse`] when the id is tracked already (by an open stream,
    /// or a closed one whose lease may still be live).
    pub fn track(
        self: &Arc<Self>,
        lease_id: &str,
        read_from: u64,
    ) -> Result<Option<StreamTracker>, LeaseIdInUse> {
        if !self.enabled() {
            return Ok(None);
        }
        let now = Instant::now();
        let mut streams = lock(&self.streams);
        streams.retain(|_, t| {
            let t = lock(t);
            t.open || t.live(now)
        });
        if streams.contains_key(lease_id) {
            return Err(LeaseIdInUse);
        }
        if streams.len() >= self.max {
            return Ok(None);
        }
        let tracked = Arc::new(Mutex::new(Tracked {
            read_through: read_from,
            open: true,
            ..Tracked::default()
        }));
        streams.insert(lease_id.to_string(), Arc::clone(&tracked));
        Ok(Some(StreamTracker {
            tracked,
            leases: Arc::clone(self),
        }))
    }

    /// A mirror's `MirrorLease` call at `now`: acknowledges `applied`, and with `renew` grants
    /// a lease if `grant` says this sidecar may (the least time left of its own grants over every
    /// shard, and the Watch ring's head after that was decided).
    pub fn renew(
        &self,
        lease_id: &str,
        applied: u64,
        renew: bool,
        now: Instant,
        grant: impl FnOnce() -> Option<(Duration, u64)>,
    ) -> Result<Option<MirrorGrant>, Refused> {
        if !self.enabled() {
            return Err(Refused::Off);
        }
        let tracked = lock(&self.streams).get(lease_id).cloned();
        let Some(tracked) = tracked else {
            return Err(Refused::UnknownStream);
        };
        let mut t = lock(&tracked);
        t.ack(applied);
        self.progress.notify_waiters();
        if !renew {
            return Ok(None);
        }
        if !t.open {
            return Err(Refused::StreamEnded);
        }
        if t.overflowed {
            return Err(Refused::Behind);
        }
        let (left, head) = grant().ok_or(Refused::NotHolding)?;
        let granted = crate::versions::leases::slower(left).saturating_sub(self.settings.margin);
        let granted = Duration::from_millis(granted.as_millis() as u64);
        if granted.is_zero() {
            return Err(Refused::NotHolding);
        }
        let live_until = now + self.settings.bumper_bound(granted);
        t.live_until = Some(t.live_until.map_or(live_until, |u| u.max(live_until)));
        let min_position = if t.caught_up(head) { 0 } else { head };
        Ok(Some(MirrorGrant {
            granted,
            min_position,
        }))
    }

    /// Whether any mirror lease may be live at `now` (by this sidecar's reckoning).
    pub fn any_live(&self, now: Instant) -> bool {
        self.live(now) > 0
    }

    /// Mirror leases live now.
    pub fn live(&self, now: Instant) -> usize {
        lock(&self.streams)
            .values()
            .filter(|t| lock(t).live(now))
            .count()
    }

    /// Waits until every mirror lease live by this sidecar's reckoning has applied everything
    /// of the Watch ring before index `head`, or has run out. Returns whether it waited for any
    /// to run out. Bounded by the longest lease granted (at most `read_lease_ms` plus drift).
    pub async fn wait_applied(&self, head: u64) -> bool {
        let mut waited_out = false;
        // Each stream is waited for at most until the end of the lease it held when the wait
        // began: a renewal granted later carries min_position >= head unless the mirror is
        // caught up, so it need not be waited for.
        let mut deadlines: HashMap<usize, Instant> = HashMap::new();
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let now = Instant::now();
            let pending = lock(&self.streams)
                .values()
                .filter_map(|t| {
                    let key = Arc::as_ptr(t) as usize;
                    let t = lock(t);
                    let until = *deadlines.entry(key).or_insert(t.live_until?);
                    (now < until && !t.caught_up(head)).then_some(until)
                })
                .min();
            let Some(until) = pending else {
                return waited_out;
            };
            tokio::select! {
                _ = progress => {}
                _ = tokio::time::sleep_until(until.into()) => waited_out = true,
            }
        }
    }
}

/// A tracked Watch stream's side: what it passed and delivered.
pub struct StreamTracker {
    tracked: Arc<Mutex<Tracked>>,
    leases: Arc<MirrorLeases>,
}

impl StreamTracker {
    /// The stream took ring items up to (not including) `read_through`; `delivered` is the
    /// position of the one it delivers now when that changes a map.
    pub fn passed(&self, read_through: u64, delivered: Option<u64>) {
        {
            let mut t = lock(&self.tracked);
            t.read_through = t.read_through.max(read_through);
            if let Some(position) = delivered {
                t.last_delivered = position;
                if t.unacked.len() >= MAX_UNACKED {
                    t.overflowed = true;
                } else if !t.overflowed {
                    t.unacked.push_back(position);
                }
            }
        }
        self.leases.progress.notify_waiters();
    }
}

impl Drop for StreamTracker {
    fn drop(&mut self) {
        lock(&self.tracked).open = false;
        self.leases.progress.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LeaseSettings {
        LeaseSettings {
            period: Duration::from_millis(1_000),
            margin: Duration::from_millis(20),
        }
    }

    fn holding() -> Option<(Duration, u64)> {
        Some((Duration::from_millis(900), 10))
    }

    #[test]
    fn a_grant_is_shorter_than_what_the_sidecar_holds_and_waits_for_acknowledgements() {
        let leases = Arc::new(MirrorLeases::new(settings(), 4));
        let stream = leases.track("m1", 0).expect("tracked").expect("tracked");
        assert_eq!(
            leases.track("m1", 0).err(),
            Some(LeaseIdInUse),
            "an id is tracked once"
        );
        let now = Instant::now();
        let grant = leases
            .renew("m1", 0, true, now, holding)
            .expect("granted")
            .expect("a grant");
        assert!(grant.granted < Duration::from_millis(900 - 20));
        assert_eq!(
            grant.min_position, 10,
            "the stream has not read up to the head"
        );
        assert!(leases.any_live(now));
        stream.passed(10, None);
        stream.passed(12, Some(12));
        let t = lock(&leases.streams)["m1"].clone();
        assert!(
            !lock(&t).caught_up(12),
            "position 12 delivered, not acknowledged"
        );
        assert!(
            lock(&t).caught_up(11),
            "nothing delivered before index 11 is unacknowledged"
        );
        leases
            .renew("m1", 12, false, now, holding)
            .expect("acknowledged");
        assert!(lock(&t).caught_up(12));
        let grant = leases
            .renew("m1", 12, true, now, holding)
            .expect("granted")
            .expect("a grant");
        assert_eq!(
            grant.min_position, 0,
            "already applied everything before the head"
        );
    }

    #[test]
    fn refusals_name_their_reason() {
        let off = Arc::new(MirrorLeases::new(settings(), 0));
        assert!(matches!(off.track("m", 0), Ok(None)));
        assert_eq!(
            off.renew("m", 0, true, Instant::now(), holding),
            Err(Refused::Off)
        );
        let leases = Arc::new(MirrorLeases::new(settings(), 1));
        assert_eq!(
            leases.renew("nope", 0, true, Instant::now(), holding),
            Err(Refused::UnknownStream)
        );
        let stream = leases.track("m", 0).expect("tracked").expect("tracked");
        assert!(
            matches!(leases.track("other", 0), Ok(None)),
            "the table is full"
        );
        assert_eq!(
            leases.renew("m", 0, true, Instant::now(), || None),
            Err(Refused::NotHolding)
        );
        drop(stream);
        assert_eq!(
            leases.renew("m", 0, true, Instant::now(), holding),
            Err(Refused::StreamEnded)
        );
        assert!(
            matches!(leases.track("other", 0), Ok(Some(_))),
            "a closed stream without a live lease is forgotten"
        );
    }

    #[test]
    fn a_mirror_that_never_acknowledges_is_bounded_and_never_counts_as_caught_up() {
        let leases = Arc::new(MirrorLeases::new(settings(), 1));
        let stream = leases.track("m", 0).expect("tracked").expect("tracked");
        for p in 1..=(MAX_UNACKED as u64 + 10) {
            stream.passed(p, Some(p));
        }
        let t = lock(&leases.streams)["m"].clone();
        assert!(lock(&t).unacked.len() <= MAX_UNACKED);
        assert!(
            !lock(&t).caught_up(1),
            "overflowed: only its lease's end releases bumps"
        );
        assert_eq!(
            leases.renew("m", 5, true, Instant::now(), holding),
            Err(Refused::Behind)
        );
        let last = MAX_UNACKED as u64 + 10;
        leases
            .renew("m", last, false, Instant::now(), holding)
            .expect("acknowledged");
        assert!(lock(&t).caught_up(last));
    }

    #[tokio::test]
    async fn waiting_ends_on_acknowledgement_or_at_the_lease_end() {
        let leases = Arc::new(MirrorLeases::new(settings(), 2));
        let stream = leases.track("m", 0).expect("tracked").expect("tracked");
        let granted_at = Instant::now();
        let grant = leases
            .renew("m", 0, true, granted_at, holding)
            .expect("granted")
            .expect("a grant");
        stream.passed(5, Some(5));
        let waiter = {
            let leases = Arc::clone(&leases);
            tokio::spawn(async move { leases.wait_applied(5).await })
        };
        tokio::task::yield_now().await;
        leases
            .renew("m", 5, false, Instant::now(), holding)
            .expect("acknowledged");
        let waited_out = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the acknowledgement ends the wait")
            .expect("task");
        assert!(!waited_out);
        stream.passed(7, Some(7));
        let waited_out = tokio::time::timeout(Duration::from_secs(10), leases.wait_applied(7))
            .await
            .expect("the lease's end ends the wait");
        assert!(waited_out);
        assert!(
            granted_at.elapsed() >= grant.granted,
            "waited the lease out"
        );
    }
}
