//! The mirror's map and its trust state ([`MirrorState`]), shared by the app's handle and the
//! Watch task: fills from sidecar answers, invalidations from the stream, generations and
//! positions that decide which of the two wins, eviction at `max_entries`, and how long a
//! heartbeat lets the map answer alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use super::options::{MirrorOptions, MirrorStats};
use crate::client::{Position, Version};

#[derive(Default)]
pub(super) struct Counters {
    pub(super) reconnects: AtomicU64,
    pub(super) resyncs: AtomicU64,
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) strong_hits: AtomicU64,
    pub(super) fallback_failures: AtomicU64,
    pub(super) invalidations: AtomicU64,
    pub(super) fills_refused: AtomicU64,
    pub(super) evictions: AtomicU64,
}

pub(super) fn bump_counter(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One key's entry: the version last learnt, the generation it was learnt at and the position
/// it is known current as of. A `None` version is a tombstone: the key changed while a fill was
/// in flight and is unknown until the next invalidation or a fill from a newer position.
struct Entry {
    version: Option<Version>,
    generation: u64,
    at: Option<At>,
}

/// A [`Position`] as the map keeps it: the epoch hashed (with per-process random keys, so
/// two epochs collide with probability 2^-64) and the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    epoch: u64,
    sequence: u64,
}

/// How two positions of one key compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// The new knowledge is as new as the entry's or newer.
    NotOlder,
    /// The entry knows something newer.
    Older,
    /// Different epochs: neither can be trusted over the other.
    Unordered,
    /// A position is missing (a sidecar of an earlier release): generations decide.
    Unknown,
}

fn order(entry: Option<At>, new: Option<At>) -> Order {
    match (entry, new) {
        (Some(e), Some(n)) if e.epoch != n.epoch => Order::Unordered,
        (Some(e), Some(n)) if n.sequence < e.sequence => Order::Older,
        (Some(_), Some(_)) => Order::NotOlder,
        _ => Order::Unknown,
    }
}

/// The map and its trust state, shared by the client handle and the Watch task.
pub(crate) struct MirrorState {
    /// foldhash rather than SipHash: the keys come from the application itself, and hashing
    /// a key is a good part of a local check (23 ns in BENCHMARKS.md's latest full run).
    entries: DashMap<String, Entry, foldhash::fast::RandomState>,
    /// Hashes epochs into [`At`].
    epochs: foldhash::quality::RandomState,
    /// Taken by every invalidation and resync; fills compare against it.
    generation: AtomicU64,
    /// The generation of the latest resync or eviction: fills of keys the map does not hold
    /// that began before it are refused (what was dropped may have been newer than they are).
    fill_floor: AtomicU64,
    /// Nanoseconds since `base` until which local answers are allowed; 0 = untrusted.
    trusted_until: AtomicU64,
    /// Whether the Watch stream is open and the sidecar has vouched for it (a heartbeat with a
    /// fence age): fills are accepted only then.
    pub(super) vouching: AtomicBool,
    /// The TSC-based clock of `quanta` where the CPU has an invariant TSC (the OS clock
    /// otherwise): reading it is a good part of a local check, and `Instant::now` costs
    /// 40-60 ns on some virtual machines.
    clock: quanta::Clock,
    base: quanta::Instant,
    max_staleness: Duration,
    max_entries: usize,
    prefixes: Vec<String>,
    pub(super) counters: Counters,
}

impl MirrorState {
    pub(crate) fn new(options: &MirrorOptions) -> MirrorState {
        let clock = quanta::Clock::new();
        MirrorState {
            entries: DashMap::default(),
            epochs: foldhash::quality::RandomState::default(),
            generation: AtomicU64::new(1),
            fill_floor: AtomicU64::new(1),
            trusted_until: AtomicU64::new(0),
            vouching: AtomicBool::new(false),
            base: clock.now(),
            clock,
            max_staleness: options.max_staleness,
            max_entries: options.max_entries,
            prefixes: options.prefixes.clone(),
            counters: Counters::default(),
        }
    }

    fn nanos_since_base(&self, at: quanta::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether local answers are allowed right now.
    pub(crate) fn is_trusted(&self) -> bool {
        let until = self.trusted_until.load(Ordering::Acquire);
        until != 0 && self.nanos_since_base(self.clock.now()) < until
    }

    fn mirrors(&self, key: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// The version of `key` if it can be answered locally.
    pub(super) fn local_version(&self, key: &str) -> Option<Version> {
        if !self.is_trusted() {
            return None;
        }
        self.entries.get(key).and_then(|e| e.version.clone())
    }

    /// `Some(current)` when `key` can be answered locally, `None` when the sidecar must answer.
    pub(crate) fn local_check(&self, key: &str, version: &Version) -> Option<bool> {
        if !self.is_trusted() {
            return None;
        }
        let entry = self.entries.get(key)?;
        entry.version.as_ref().map(|known| known == version)
    }

    /// The generation to remember before asking the sidecar (see [`MirrorState::fill`]).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn at(&self, position: Option<&Position>) -> Option<At> {
        position.map(|p| At {
            epoch: std::hash::BuildHasher::hash_one(&self.epochs, &p.epoch),
            sequence: p.sequence,
        })
    }

    /// Records `version` as `key`'s current version, learnt from a sidecar answer to a request
    /// sent after `asked_at` was read from [`MirrorState::generation`], known current as of
    /// `position`. Positions decide when both are known (a newer or equal one replaces the
    /// entry, an older one is refused, different epochs make the key unknown); without them
    /// the fill is refused when the key changed since it was asked, and a disagreeing newer
    /// entry becomes a tombstone. A key the map does not hold is refused when the map dropped
    /// entries (resync, eviction) since it was asked.
    pub(crate) fn fill(
        &self,
        key: &str,
        version: Version,
        asked_at: u64,
        position: Option<&Position>,
    ) {
        if !self.mirrors(key) || !self.vouching.load(Ordering::SeqCst) {
            return;
        }
        let at = self.at(position);
        self.make_room();
        match self.entries.entry(key.to_string()) {
            MapEntry::Occupied(mut occupied) => {
                let entry = occupied.get_mut();
                match order(entry.at, at) {
                    Order::NotOlder => {
                        entry.version = Some(version);
                        entry.generation = entry.generation.max(asked_at);
                        entry.at = at;
                    }
                    Order::Older => bump_counter(&self.counters.fills_refused),
                    Order::Unordered => {
                        *entry = Entry {
                            version: None,
                            generation: entry.generation.max(asked_at),
                            at: None,
                        };
                        bump_counter(&self.counters.fills_refused);
                    }
                    Order::Unknown if entry.generation > asked_at => {
                        if entry.version.as_ref() != Some(&version) {
                            entry.version = None;
                            bump_counter(&self.counters.fills_refused);
                        }
                    }
                    Order::Unknown => {
                        *entry = Entry {
                            version: Some(version),
                            generation: asked_at,
                            at,
                        };
                    }
                }
            }
            MapEntry::Vacant(vacant) => {
                // Read under the shard lock: a resync or eviction raises the floor before it
                // removes entries, so either we see it here or its removal sees what we insert.
                if self.fill_floor.load(Ordering::SeqCst) > asked_at {
                    bump_counter(&self.counters.fills_refused);
                } else {
                    vacant.insert(Entry {
                        version: Some(version),
                        generation: asked_at,
                        at,
                    });
                }
            }
        }
    }

    /// Applies one invalidation from the stream: the key is now at `version`, as of
    /// `position`. An entry that knows a newer position of the same epoch stays (the app's
    /// own bump, answered before an older bump's invalidation arrived); one of another epoch
    /// becomes unknown (the stream's `Resync` for the new epoch is on its way).
    pub(crate) fn invalidate(&self, key: &str, version: Version, position: Option<&Position>) {
        let at = self.at(position);
        self.make_room();
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        bump_counter(&self.counters.invalidations);
        match self.entries.entry(key.to_string()) {
            MapEntry::Occupied(mut occupied) => match order(occupied.get().at, at) {
                Order::Older => {}
                Order::Unordered => {
                    // Unknown until a fill asked after now (or the next invalidation).
                    occupied.insert(Entry {
                        version: None,
                        generation,
                        at: None,
                    });
                }
                Order::NotOlder | Order::Unknown => {
                    occupied.insert(Entry {
                        version: Some(version),
                        generation,
                        at,
                    });
                }
            },
            MapEntry::Vacant(vacant) => {
                vacant.insert(Entry {
                    version: Some(version),
                    generation,
                    at,
                });
            }
        }
    }

    /// The stream's first vouching heartbeat: from now on fills are accepted, but none asked
    /// before (the map is emptied and the fill floor raised first).
    pub(crate) fn vouch(&self) {
        self.clear();
        self.vouching.store(true, Ordering::SeqCst);
    }

    /// Empties the map and counts a resync.
    pub(crate) fn resync(&self, reason: &str) {
        self.clear();
        bump_counter(&self.counters.resyncs);
        tracing::debug!(reason, "client mirror emptied");
    }

    /// Empties the map: anything learnt before now may be superseded without our knowing.
    /// The fill floor is raised before clearing (see [`MirrorState::fill`]).
    pub(super) fn clear(&self) {
        self.raise_fill_floor();
        self.entries.clear();
    }

    /// When the map is full, drops an arbitrary eighth of it (the order of DashMap's randomly
    /// keyed table), so that eviction costs O(1) per insert, amortised. Fills in flight are
    /// refused afterwards, as after a resync: an entry dropped may have known a newer version
    /// than theirs.
    fn make_room(&self) {
        if self.entries.len() < self.max_entries {
            return;
        }
        self.raise_fill_floor();
        let mut to_drop = self.max_entries.div_ceil(8);
        let dropped = to_drop as u64;
        self.entries.retain(|_, _| {
            if to_drop == 0 {
                return true;
            }
            to_drop -= 1;
            false
        });
        let dropped = dropped - to_drop as u64;
        self.counters
            .evictions
            .fetch_add(dropped, Ordering::Relaxed);
    }

    fn raise_fill_floor(&self) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.fill_floor.fetch_max(generation, Ordering::SeqCst);
    }

    /// A heartbeat received now, vouching for the sidecar's mirror as of `fence_age` ago; the
    /// sidecar's own bound, when it sends one, caps ours.
    pub(crate) fn heartbeat(&self, fence_age: Option<Duration>, sidecar_bound: Option<Duration>) {
        let bound = sidecar_bound.map_or(self.max_staleness, |b| b.min(self.max_staleness));
        let until = match fence_age {
            Some(age) if age < bound => {
                let received = self.nanos_since_base(self.clock.now());
                let allowance = u64::try_from((bound - age).as_nanos()).unwrap_or(u64::MAX);
                received.saturating_add(allowance).max(1)
            }
            _ => 0,
        };
        self.trusted_until.store(until, Ordering::Release);
    }

    pub(super) fn untrust(&self) {
        self.trusted_until.store(0, Ordering::Release);
    }

    /// Number of keys held (tombstones included).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn stats(&self) -> MirrorStats {
        let c = &self.counters;
        MirrorStats {
            reconnects: c.reconnects.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            strong_hits: c.strong_hits.load(Ordering::Relaxed),
            fallback_failures: c.fallback_failures.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            fills_refused: c.fills_refused.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
