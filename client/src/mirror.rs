//! The in-process mirror: most `is_current` checks answered in the app's own memory.
//!
//! A gRPC `Check` over loopback costs tens of microseconds; a lookup in a local map costs tens
//! of nanoseconds. [`MirroredClient`] keeps one `Watch` stream open to its sidecar and a map
//! key → current version, filled from the sidecar's own answers (`Get`, `Check`, `Bump`) and
//! overwritten by every invalidation the stream delivers. It answers locally only while it
//! can prove the map fresh: the sidecar's Watch heartbeats carry the age `a` of its oldest
//! fence and their send time, so a heartbeat sent `d` ago proves the map reflects every bump
//! that completed before `now - d - a`; the mirror trusts itself while `d + a < max_staleness`,
//! time in queues and in transit included (see `fence_age_on_receipt`). Everything else
//! (unknown keys, untrusted periods, strong checks) goes to the sidecar, and a failed sidecar
//! call answers "not current" (fail closed). Events and heartbeats travel on one ordered
//! stream, so a heartbeat never overtakes an invalidation sent before it.
//!
//! A stream counts only once the sidecar vouches for it with its first heartbeat that carries
//! a fence age: a sidecar that is not yet subscribed to Redis serves `Watch` and `Get` but
//! cannot announce bumps it never heard of. Fills are refused until then, and fills asked
//! before then are refused after (docs/client-protocol.md, rules on connecting).
//!
//! The one race that matters is between filling the map from a sidecar answer and an
//! invalidation arriving on the stream while that answer was in flight: the answer may predate
//! the invalidation. Every invalidation and every resync takes a new *generation*; a fill
//! remembers the generation before it asked, and is refused if the key (or the whole map) has
//! changed since. When a fill and a newer entry disagree the key is marked unknown (a
//! tombstone), so it can only be answered by the sidecar until the next invalidation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use futures::StreamExt;

use crate::client::{CheckSource, Client, Consistency, Position, Version, WatchEvent};
use crate::error::Error;
use crate::freshness::Freshness;
use crate::observer::AnswerSampler;

/// Default for [`MirrorOptions::max_staleness`].
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_millis(500);

/// Something that happened to the mirror's Watch stream, for [`MirrorOptions::on_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorEvent {
    /// The Watch stream is open (`reconnect` is false for the very first connection).
    Connected {
        /// Whether an earlier stream had been open before.
        reconnect: bool,
    },
    /// The Watch stream ended or failed; the mirror is untrusted until it is back.
    Disconnected {
        /// Why the stream ended.
        reason: String,
    },
    /// The mirror was emptied because invalidations may have been lost.
    Resync {
        /// Why (the sidecar's reason, or the stream gap).
        reason: String,
    },
}

/// A callback for [`MirrorEvent`]s; runs on the mirror's Watch task, so keep it short.
pub type MirrorHook = Arc<dyn Fn(&MirrorEvent) + Send + Sync>;

/// How a [`MirroredClient`] behaves. Start from [`MirrorOptions::default`].
///
/// ```
/// use std::time::Duration;
/// use coherence_client::{MirrorEvent, MirrorOptions};
///
/// let options = MirrorOptions::default()
///     .max_staleness(Duration::from_millis(250))
///     .prefixes(["item:", "content"])
///     .reconnect_backoff(Duration::from_millis(20), Duration::from_secs(1))
///     .on_event(|event| {
///         if let MirrorEvent::Resync { reason } = event {
///             eprintln!("mirror dropped: {reason}");
///         }
///     });
/// ```
#[derive(Clone)]
pub struct MirrorOptions {
    max_staleness: Duration,
    prefixes: Vec<String>,
    backoff_min: Duration,
    backoff_max: Duration,
    idle_timeout: Duration,
    max_entries: usize,
    hook: Option<MirrorHook>,
    audit_sample_rate: f64,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            max_staleness: DEFAULT_MAX_STALENESS,
            prefixes: Vec::new(),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            max_entries: 1_000_000,
            hook: None,
            audit_sample_rate: 0.001,
        }
    }
}

impl std::fmt::Debug for MirrorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorOptions")
            .field("max_staleness", &self.max_staleness)
            .field("prefixes", &self.prefixes)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_entries", &self.max_entries)
            .field("hook", &self.hook.is_some())
            .field("audit_sample_rate", &self.audit_sample_rate)
            .finish()
    }
}

impl MirrorOptions {
    /// Fraction (0 to 1, default 0.001) of the local answers calling a version current that are
    /// handed to the sidecar's consistency auditor (`coherence.v1.Observer/SubmitAnswers`, once
    /// a second), so that the mirror's answers are measured, not assumed. 0 turns it off. Costs
    /// one random draw per such answer (about 1 ns); a sampled one, a clock read, a lock and two
    /// string copies (a few hundred ns): the default keeps that under 1 % of a ~50 ns local hit
    /// (BENCHMARKS.md, "Consistency observer").
    pub fn audit_sample_rate(mut self, rate: f64) -> Self {
        self.audit_sample_rate = rate;
        self
    }

    /// Local answers reflect every bump completed more than this long before the check
    /// (default 500 ms). Past it the mirror falls back to the sidecar.
    pub fn max_staleness(mut self, max_staleness: Duration) -> Self {
        self.max_staleness = max_staleness;
        self
    }

    /// Mirror only keys under these prefixes (default: every key). Checks of other keys always
    /// go to the sidecar.
    pub fn prefixes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, prefixes: I) -> Self {
        self.prefixes = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// Reconnect backoff: starts at `min`, doubles up to `max` (defaults 50 ms and 2 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// A stream silent for this long (no event, not even a heartbeat) is treated as dead and
    /// reopened (default 3 s; keep it well above the sidecar's `heartbeat_interval_ms`).
    pub fn idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Most keys the mirror holds (default 1,000,000); a full mirror drops an arbitrary eighth
    /// of its keys, which are asked of the sidecar when next needed.
    pub fn max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries.max(1);
        self
    }

    /// Called on every connect, disconnect and resync (for metrics or logs).
    pub fn on_event(mut self, hook: impl Fn(&MirrorEvent) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }
}

/// Counters of one mirror, from [`MirroredClient::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// Times the Watch stream was reopened after it had been open.
    pub reconnects: u64,
    /// Times the mirror was emptied (sidecar `Resync`, stream gap).
    pub resyncs: u64,
    /// Keys dropped because the mirror was full (`max_entries`).
    pub evictions: u64,
    /// Checks and gets answered locally.
    pub hits: u64,
    /// Checks and gets that had to ask the sidecar.
    pub misses: u64,
    /// Sidecar fallbacks that failed (answered "not current").
    pub fallback_failures: u64,
    /// Invalidations applied from the stream.
    pub invalidations: u64,
    /// Fills refused because an invalidation or resync raced them.
    pub fills_refused: u64,
}

#[derive(Default)]
struct Counters {
    reconnects: AtomicU64,
    resyncs: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    fallback_failures: AtomicU64,
    invalidations: AtomicU64,
    fills_refused: AtomicU64,
    evictions: AtomicU64,
}

fn bump_counter(counter: &AtomicU64) {
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

/// A [`Position`] as the map keeps it: the epoch hashed (with a per-process random seed, so
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
    /// a key is a good part of a local check's ~60 ns.
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
    vouching: AtomicBool,
    /// The TSC-based clock of `quanta` where the CPU has an invariant TSC (the OS clock
    /// otherwise): reading it is a good part of a local check, and `Instant::now` costs
    /// 40-60 ns on some virtual machines.
    clock: quanta::Clock,
    base: quanta::Instant,
    max_staleness: Duration,
    max_entries: usize,
    prefixes: Vec<String>,
    counters: Counters,
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
    fn local_version(&self, key: &str) -> Option<Version> {
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
    fn clear(&self) {
        self.raise_fill_floor();
        self.entries.clear();
    }

    /// When the map is full, drops an arbitrary eighth of it (the order of DashMap's randomly
    /// seeded table), so that eviction costs O(1) per insert, amortised. Fills in flight are
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

    fn untrust(&self) {
        self.trusted_until.store(0, Ordering::Release);
    }

    /// Number of keys held (tombstones included).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn stats(&self) -> MirrorStats {
        let c = &self.counters;
        MirrorStats {
            reconnects: c.reconnects.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            fallback_failures: c.fallback_failures.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            fills_refused: c.fills_refused.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
        }
    }
}

/// A [`Client`] with an in-process mirror: `is_current` and `get_one` answered locally while
/// the mirror is provably fresh, by the sidecar otherwise. Cheap to clone; clones share the
/// mirror. The Watch task stops when the last clone is dropped. Create it inside a Tokio
/// runtime.
///
/// ```no_run
/// # async fn demo() -> Result<(), coherence_client::Error> {
/// use coherence_client::{Client, MirrorOptions};
///
/// let client = Client::connect("http://127.0.0.1:50051").await?;
/// let mirrored = client.with_mirror(MirrorOptions::default());
/// let stamp = mirrored.get_one("content").await?; // fills the mirror
/// // ... load and cache the data with `stamp` ...
/// if !mirrored.is_current("content", &stamp).await {
///     // superseded (or nobody could vouch for it): reload
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MirroredClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    state: Arc<MirrorState>,
    sampler: Arc<AnswerSampler>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    audit_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock() {
            if let Some(task) = task.take() {
                task.abort();
            }
        }
        if let Some(task) = &self.audit_task {
            task.abort();
        }
    }
}

impl std::fmt::Debug for MirroredClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirroredClient")
            .field("client", &self.inner.client)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Client {
    /// This client with an in-process mirror (spawns its Watch task; call inside a Tokio
    /// runtime).
    pub fn with_mirror(self, options: MirrorOptions) -> MirroredClient {
        MirroredClient::new(self, options)
    }
}

impl MirroredClient {
    /// Starts mirroring through `client` (spawns the Watch task on the current runtime).
    pub fn new(client: Client, options: MirrorOptions) -> MirroredClient {
        let state = Arc::new(MirrorState::new(&options));
        let sampler = Arc::new(AnswerSampler::new(
            options.audit_sample_rate,
            options.max_staleness,
        ));
        let audit_task = sampler
            .is_on()
            .then(|| tokio::spawn(Arc::clone(&sampler).run(client.observer())));
        let task = tokio::spawn(run_watch(Arc::clone(&state), client.clone(), options));
        MirroredClient {
            inner: Arc::new(Inner {
                client,
                state,
                sampler,
                task: Mutex::new(Some(task)),
                audit_task,
            }),
        }
    }

    /// Connects to a sidecar and starts mirroring with `options`.
    pub async fn connect(
        addr: impl AsRef<str>,
        options: MirrorOptions,
    ) -> Result<MirroredClient, Error> {
        Ok(Client::connect(addr).await?.with_mirror(options))
    }

    /// The thin client underneath (every call on it goes to the sidecar).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Whether `version` is still `key`'s current version, with bounded staleness: answered
    /// locally when possible, else by the sidecar's `Check`. Never errs: when nothing can vouch
    /// for the version it answers `false` (fail closed) — reload from the source of truth.
    ///
    /// ```no_run
    /// # async fn demo(mirrored: coherence_client::MirroredClient, stamp: coherence_client::Version) {
    /// if mirrored.is_current("content", &stamp).await {
    ///     // serve the cached value
    /// }
    /// # }
    /// ```
    pub async fn is_current(&self, key: &str, version: &Version) -> bool {
        if let Some(answer) = self.is_current_local(key, version) {
            return answer;
        }
        self.check_remote(key, version, Consistency::Bounded)
            .await
            .is_current()
    }

    /// [`MirroredClient::is_current`] with an explicit consistency: `Strong` always asks the
    /// sidecar (which fences through Redis), so it reflects every bump completed before the
    /// call began.
    pub async fn is_current_with(
        &self,
        key: &str,
        version: &Version,
        consistency: Consistency,
    ) -> bool {
        self.freshness(key, version, consistency).await.is_current()
    }

    /// [`MirroredClient::is_current_with`], telling a superseded version
    /// ([`Freshness::Stale`]) from one nothing could vouch for ([`Freshness::Unverifiable`]).
    pub async fn freshness(
        &self,
        key: &str,
        version: &Version,
        consistency: Consistency,
    ) -> Freshness {
        match consistency {
            Consistency::Bounded => match self.is_current_local(key, version) {
                Some(true) => Freshness::Current,
                Some(false) => Freshness::Stale,
                None => self.check_remote(key, version, Consistency::Bounded).await,
            },
            Consistency::Strong => {
                bump_counter(&self.inner.state.counters.misses);
                self.check_remote(key, version, Consistency::Strong).await
            }
        }
    }

    /// The local answer only: `Some(current)` when the mirror is trusted and knows `key`,
    /// `None` when only the sidecar can answer. Counts a hit when it answers.
    pub fn is_current_local(&self, key: &str, version: &Version) -> Option<bool> {
        let answer = self.inner.state.local_check(key, version);
        if answer.is_some() {
            bump_counter(&self.inner.state.counters.hits);
        }
        if answer == Some(true) {
            self.inner.sampler.answered_current(key, version.token());
        }
        answer
    }

    async fn check_remote(
        &self,
        key: &str,
        version: &Version,
        consistency: Consistency,
    ) -> Freshness {
        let state = &self.inner.state;
        if consistency == Consistency::Bounded {
            bump_counter(&state.counters.misses);
        }
        let asked_at = state.generation();
        match self
            .inner
            .client
            .check(&[(key, version)], consistency)
            .await
        {
            Ok(results) => {
                let Some(result) = results.into_iter().next() else {
                    return Freshness::Unverifiable;
                };
                let freshness = Freshness::of(&result);
                if result.source != CheckSource::FailClosed {
                    if let Some(current) = result.version {
                        state.fill(key, current, asked_at, result.as_of.as_ref());
                    }
                }
                freshness
            }
            Err(err) => {
                bump_counter(&state.counters.fallback_failures);
                tracing::debug!(error = %err, key, "check failed; answering not current");
                Freshness::Unverifiable
            }
        }
    }

    /// The current version of `key` (bounded staleness): from the mirror when trusted, else
    /// from the sidecar (and remembered). Use it to stamp before loading.
    pub async fn get_one(&self, key: &str) -> Result<Version, Error> {
        let state = &self.inner.state;
        if let Some(version) = state.local_version(key) {
            bump_counter(&state.counters.hits);
            return Ok(version);
        }
        bump_counter(&state.counters.misses);
        self.get_with(&[key], Consistency::Bounded)
            .await?
            .pop()
            .ok_or(Error::Malformed("Get answered no version"))
    }

    /// Current versions of `keys` from the sidecar (remembered by the mirror).
    pub async fn get_with(
        &self,
        keys: &[&str],
        consistency: Consistency,
    ) -> Result<Vec<Version>, Error> {
        let state = &self.inner.state;
        let asked_at = state.generation();
        let answers = self.inner.client.get_positioned(keys, consistency).await?;
        Ok(fill_all(state, keys, answers, asked_at))
    }

    /// Moves `keys` to new versions (call after your write committed). The mirror learns the
    /// new versions at once, so this process never again reports the old ones current.
    pub async fn bump(&self, keys: &[&str]) -> Result<Vec<Version>, Error> {
        let state = &self.inner.state;
        let asked_at = state.generation();
        let answers = self.inner.client.bump_positioned(keys).await?;
        Ok(fill_all(state, keys, answers, asked_at))
    }

    /// Sampled answers that never reached the sidecar's auditor (the mirror's buffer or the
    /// sidecar's queue was full, or a submission failed).
    pub fn audit_samples_dropped(&self) -> u64 {
        self.inner.sampler.dropped()
    }

    /// Whether local answers are allowed right now (stream open, heartbeat fresh).
    pub fn is_trusted(&self) -> bool {
        self.inner.state.is_trusted()
    }

    /// Waits until the mirror is trusted or `timeout` passes; returns whether it is.
    pub async fn wait_trusted(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.is_trusted() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.is_trusted()
    }

    /// Number of keys the mirror holds.
    pub fn mirrored_keys(&self) -> usize {
        self.inner.state.len()
    }

    /// The mirror's counters.
    pub fn stats(&self) -> MirrorStats {
        self.inner.state.stats()
    }
}

/// Fills the map with the sidecar's answers for `keys`; returns the versions.
fn fill_all(
    state: &MirrorState,
    keys: &[&str],
    answers: Vec<(Version, Option<Position>)>,
    asked_at: u64,
) -> Vec<Version> {
    keys.iter()
        .zip(answers)
        .map(|(key, (version, position))| {
            state.fill(key, version.clone(), asked_at, position.as_ref());
            version
        })
        .collect()
}

/// Keeps one Watch stream open and applies it to the map, reconnecting with backoff.
async fn run_watch(state: Arc<MirrorState>, client: Client, options: MirrorOptions) {
    let prefixes: Vec<&str> = options.prefixes.iter().map(String::as_str).collect();
    let notify = |event: MirrorEvent| {
        if let Some(hook) = &options.hook {
            hook(&event);
        }
    };
    let mut backoff = options.backoff_min;
    let mut ever_connected = false;
    loop {
        match client.watch(&prefixes).await {
            Ok(mut stream) => {
                // The sidecar subscribed before answering, but it vouches for what reaches
                // this stream only once it is synced with Redis: its first heartbeat with a
                // fence age says so. Until then nothing is filled (see `vouched` below).
                if ever_connected {
                    bump_counter(&state.counters.reconnects);
                    state.resync("watch stream reopened");
                    notify(MirrorEvent::Resync {
                        reason: "watch stream reopened".into(),
                    });
                } else {
                    state.clear();
                }
                notify(MirrorEvent::Connected {
                    reconnect: ever_connected,
                });
                ever_connected = true;
                let mut vouched = false;
                let reason = loop {
                    let next = match tokio::time::timeout(options.idle_timeout, stream.next()).await
                    {
                        Err(_) => break format!("no event for {:?}", options.idle_timeout),
                        Ok(None) => break "stream ended".to_string(),
                        Ok(Some(Err(err))) => break err.to_string(),
                        Ok(Some(Ok(event))) => event,
                    };
                    match next {
                        WatchEvent::Invalidated {
                            key,
                            version,
                            sequence,
                            epoch,
                            ..
                        } => {
                            let position =
                                (!epoch.is_empty()).then_some(Position { epoch, sequence });
                            state.invalidate(&key, version, position.as_ref())
                        }
                        WatchEvent::Resync { reason } => {
                            state.resync(&reason);
                            notify(MirrorEvent::Resync { reason });
                        }
                        WatchEvent::Heartbeat {
                            fence_age,
                            max_staleness,
                        } => {
                            if fence_age.is_some() && !vouched {
                                // From here on every bump reaches this stream or is covered
                                // by a Resync. Fills asked before may predate bumps the
                                // sidecar never announced (it was not yet subscribed):
                                // refuse them, then accept new ones.
                                vouched = true;
                                state.vouch();
                            }
                            state.heartbeat(fence_age, max_staleness);
                            if fence_age.is_some() {
                                backoff = options.backoff_min;
                            }
                        }
                    }
                };
                state.untrust();
                state.vouching.store(false, Ordering::SeqCst);
                state.resync(&reason);
                notify(MirrorEvent::Disconnected { reason });
            }
            Err(err) => tracing::debug!(error = %err, "cannot open the watch stream; retrying"),
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(options.backoff_max);
    }
}

/// `base` plus up to 25% so that many clients do not reconnect in lockstep.
fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(token: &str) -> Version {
        Version::from_token(token)
    }

    fn trusted_state() -> MirrorState {
        let state = MirrorState::new(&MirrorOptions::default());
        state.vouch();
        state.heartbeat(Some(Duration::ZERO), None);
        state
    }

    #[test]
    fn a_fill_answers_locally_while_trusted() {
        let state = trusted_state();
        state.fill("k", v("1.1.a"), state.generation(), None);
        assert_eq!(state.local_check("k", &v("1.1.a")), Some(true));
        assert_eq!(state.local_check("k", &v("1.0.z")), Some(false));
        assert_eq!(state.local_check("other", &v("1.1.a")), None);
    }

    #[test]
    fn a_full_mirror_evicts_an_eighth_and_stays_bounded() {
        let state = MirrorState::new(&MirrorOptions::default().max_entries(800));
        state.vouch();
        for i in 0..5_000 {
            state.fill(&format!("k{i}"), v("1.1.a"), state.generation(), None);
        }
        assert!(state.len() <= 800, "{} entries", state.len());
        assert!(state.len() >= 700, "not emptied: {}", state.len());
        // The fill that finds the map full began before the eviction it causes: refused.
        let stats = state.stats();
        assert_eq!(
            stats.evictions + stats.fills_refused + state.len() as u64,
            5_000
        );
        assert_eq!(stats.resyncs, 0);
    }

    /// The race eviction must not open: a fill that began before an invalidation completes after
    /// that key was evicted. Storing it would make the superseded version current again.
    #[test]
    fn a_fill_older_than_an_evicted_entry_is_refused() {
        let state = MirrorState::new(&MirrorOptions::default().max_entries(1));
        state.vouch();
        state.heartbeat(Some(Duration::ZERO), None);
        let asked_at = state.generation();
        state.invalidate("k", v("1.2.b"), None);
        state.invalidate("other", v("1.3.c"), None);
        assert_eq!(state.local_check("k", &v("1.2.b")), None, "k was evicted");
        state.fill("k", v("1.1.a"), asked_at, None);
        assert_eq!(
            state.local_check("k", &v("1.1.a")),
            None,
            "the superseded version must not be mirrored"
        );
        state.fill("k", v("1.2.b"), state.generation(), None);
        assert_eq!(state.local_check("k", &v("1.2.b")), Some(true));
    }

    #[test]
    fn an_invalidation_during_a_fill_wins() {
        let state = trusted_state();
        let asked_at = state.generation();
        state.invalidate("k", v("1.2.b"), None);
        // The answer to the fill was computed before the bump: it must not overwrite it.
        state.fill("k", v("1.1.a"), asked_at, None);
        assert_eq!(
            state.local_check("k", &v("1.1.a")),
            None,
            "the old version is never current"
        );
        assert_eq!(state.stats().fills_refused, 1);
    }

    #[test]
    fn a_fill_agreeing_with_a_newer_invalidation_keeps_it() {
        let state = trusted_state();
        let asked_at = state.generation();
        state.invalidate("k", v("1.2.b"), None);
        state.fill("k", v("1.2.b"), asked_at, None);
        assert_eq!(state.local_check("k", &v("1.2.b")), Some(true));
    }

    #[test]
    fn a_tombstone_is_not_revived_by_an_older_fill() {
        let state = trusted_state();
        let early = state.generation();
        state.invalidate("k", v("1.2.b"), None);
        state.fill("k", v("1.1.a"), early, None); // tombstone
        state.fill("k", v("1.1.a"), early, None); // another stale answer
        assert_eq!(state.local_check("k", &v("1.1.a")), None);
        state.invalidate("k", v("1.3.c"), None);
        assert_eq!(state.local_check("k", &v("1.3.c")), Some(true));
    }

    #[test]
    fn a_resync_during_a_fill_refuses_it() {
        let state = trusted_state();
        let asked_at = state.generation();
        state.resync("test");
        state.fill("k", v("1.1.a"), asked_at, None);
        assert_eq!(state.len(), 0);
        state.fill("k", v("1.1.a"), state.generation(), None);
        assert_eq!(state.len(), 1);
    }

    #[test]
    fn trust_follows_the_fence_age() {
        let state = trusted_state();
        assert!(state.is_trusted());
        state.heartbeat(None, None);
        assert!(
            !state.is_trusted(),
            "a sidecar that cannot vouch makes the mirror untrusted"
        );
        state.heartbeat(Some(DEFAULT_MAX_STALENESS), None);
        assert!(
            !state.is_trusted(),
            "a fence as old as max_staleness proves nothing"
        );
        state.heartbeat(Some(Duration::from_millis(100)), None);
        assert!(state.is_trusted());
    }

    /// A fill asked before the sidecar vouched for the stream may predate bumps the sidecar
    /// never announced (it was not subscribed yet): it must not be kept.
    #[test]
    fn a_fill_asked_before_the_stream_vouched_is_refused() {
        let state = MirrorState::new(&MirrorOptions::default());
        let asked_before = state.generation();
        state.vouch();
        state.heartbeat(Some(Duration::ZERO), None);
        state.fill("k", v("1.1.a"), asked_before, None);
        assert_eq!(state.local_check("k", &v("1.1.a")), None);
        state.fill("k", v("1.1.a"), state.generation(), None);
        assert_eq!(state.local_check("k", &v("1.1.a")), Some(true));
    }

    fn at(epoch: &str, sequence: u64) -> Option<Position> {
        Some(Position {
            epoch: epoch.to_string(),
            sequence,
        })
    }

    /// Own writes (guarantee 7) against the two races a Python port of the old rule showed:
    /// a concurrent check's answer, asked in the same generation as the bump, arriving after
    /// the bump's answer; and an older bump's invalidation arriving after the newer bump's
    /// answer. Positions order them; generations could not.
    #[test]
    fn an_own_bump_is_never_overwritten_by_older_knowledge() {
        let state = trusted_state();
        let asked_at = state.generation();
        // The bump's answer: v3 as of sequence 15.
        state.fill("k", v("e.15.c"), asked_at, at("e", 15).as_ref());
        // A check asked at the same generation answers v2 as of 12: older, refused.
        state.fill("k", v("e.12.b"), asked_at, at("e", 12).as_ref());
        assert_eq!(state.local_check("k", &v("e.15.c")), Some(true));
        assert_eq!(state.local_check("k", &v("e.12.b")), Some(false));
        // An older bump's invalidation arrives late: ignored.
        state.invalidate("k", v("e.14.x"), at("e", 14).as_ref());
        assert_eq!(state.local_check("k", &v("e.15.c")), Some(true));
        assert_eq!(state.local_check("k", &v("e.14.x")), Some(false));
        // The bump's own invalidation, then a newer one, move it on as usual.
        state.invalidate("k", v("e.15.c"), at("e", 15).as_ref());
        assert_eq!(state.local_check("k", &v("e.15.c")), Some(true));
        state.invalidate("k", v("e.16.d"), at("e", 16).as_ref());
        assert_eq!(state.local_check("k", &v("e.16.d")), Some(true));
        assert_eq!(state.local_check("k", &v("e.15.c")), Some(false));
    }

    /// A late fill is refused by position even when it began after the invalidation it lost
    /// to was applied (the generation rule alone would accept it), and a newer read replaces
    /// an invalidation it overtook.
    #[test]
    fn positions_order_fills_and_invalidations_both_ways() {
        let state = trusted_state();
        state.invalidate("k", v("e.20.b"), at("e", 20).as_ref());
        let asked_after = state.generation();
        state.fill("k", v("e.19.a"), asked_after, at("e", 19).as_ref());
        assert_eq!(state.local_check("k", &v("e.19.a")), Some(false));
        state.fill("k", v("e.21.c"), asked_after, at("e", 23).as_ref());
        assert_eq!(state.local_check("k", &v("e.21.c")), Some(true));
        state.invalidate("k", v("e.21.c"), at("e", 21).as_ref());
        assert_eq!(
            state.local_check("k", &v("e.21.c")),
            Some(true),
            "older news"
        );
    }

    /// Positions of different epochs are not ordered: the key becomes unknown (the sidecar
    /// answers it) until a fill asked afterwards or the next invalidation.
    #[test]
    fn knowledge_from_another_epoch_makes_the_key_unknown() {
        let state = trusted_state();
        let asked_at = state.generation();
        state.fill("k", v("new.1.a"), asked_at, at("new", 1).as_ref());
        state.invalidate("k", v("old.500.z"), at("old", 500).as_ref());
        assert_eq!(state.local_check("k", &v("old.500.z")), None);
        assert_eq!(state.local_check("k", &v("new.1.a")), None);
        state.fill("k", v("old.499.y"), asked_at, at("old", 499).as_ref());
        assert_eq!(
            state.local_check("k", &v("old.499.y")),
            None,
            "asked before"
        );
        state.fill("k", v("new.1.a"), state.generation(), at("new", 1).as_ref());
        assert_eq!(state.local_check("k", &v("new.1.a")), Some(true));
    }

    #[test]
    fn the_sidecar_bound_caps_the_mirror_bound() {
        let state = trusted_state();
        state.heartbeat(
            Some(Duration::from_millis(300)),
            Some(Duration::from_millis(250)),
        );
        assert!(
            !state.is_trusted(),
            "a fence older than the sidecar's own bound proves nothing"
        );
        state.heartbeat(
            Some(Duration::from_millis(300)),
            Some(Duration::from_secs(60)),
        );
        assert!(
            state.is_trusted(),
            "a larger sidecar bound does not lift ours"
        );
        state.heartbeat(Some(DEFAULT_MAX_STALENESS), Some(Duration::from_secs(60)));
        assert!(!state.is_trusted());
    }

    #[test]
    fn nothing_is_filled_while_disconnected() {
        let state = MirrorState::new(&MirrorOptions::default());
        state.fill("k", v("1.1.a"), state.generation(), None);
        assert_eq!(state.len(), 0);
    }
}
