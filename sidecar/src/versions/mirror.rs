//! The in-memory mirror of current versions, and the rules that decide when it may answer.
//!
//! Each shard's mirror knows the shard's epoch, the highest sequence applied in order
//! (`applied_seq`), the versions it has seen, and when its last heartbeat fence was *sent* (the
//! fence proves that every bump completed before that instant has been applied). A shard
//! answers only while it is synced and its fence is younger than `max_staleness`; otherwise the
//! caller reads Redis. Entries carry the sequence they are known as of, so that invalidations,
//! own bumps and Redis reads can arrive in any order and the newest always wins.
//!
//! The mirror is bounded, in entries (`mirror_max_keys`) and in bytes (`mirror_max_bytes`,
//! as weighed by [`entry_bytes`]; both are spread evenly over the shards): a full shard drops
//! an arbitrary eighth of its entries (or of its bytes). A key that is not mirrored is read from Redis, so eviction costs reads, never
//! correctness — provided a read that began before the eviction is not learnt afterwards, for
//! the entry it would replace may have known a newer version (see `learn_floor`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::fault_injection::{off, Mechanism};
use crate::versions::version::{Version, VersionAt, VersionStr};

/// What one entry costs besides its key's bytes (and a version kept as text): the table slot
/// (boxed key, packed version, sequence), the key's allocation and the table's spare capacity.
pub const ENTRY_OVERHEAD_BYTES: usize = 112;

/// The bytes one mirrored entry is counted as.
fn entry_bytes(key: &str, version: &StoredVersion) -> usize {
    ENTRY_OVERHEAD_BYTES
        + key.len()
        + match version {
            StoredVersion::Packed { .. } => 0,
            StoredVersion::Text(text) => text.len(),
        }
}

#[derive(Debug, Clone)]
struct Entry {
    version: StoredVersion,
    /// The shard sequence this entry is known as of.
    seq: u64,
}

/// A version as the mirror keeps it. The versions our script issues parse as a [`Version`]
/// and every entry of a shard belongs to the shard's
/// epoch, so two integers say it all: no allocation per key, which is most of the mirror's
/// memory at a million keys. Anything else (a version written into Redis by hand) is kept as
/// text. Packing is exact both ways, so two versions are equal exactly when their stored
/// forms are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StoredVersion {
    Packed { seq: u64, nonce: u64 },
    Text(Box<str>),
}

impl StoredVersion {
    fn new(epoch: &str, version: &str) -> StoredVersion {
        Self::pack(epoch, version).unwrap_or_else(|| StoredVersion::Text(Box::from(version)))
    }

    fn pack(epoch: &str, version: &str) -> Option<StoredVersion> {
        let parsed = Version::parse(version).filter(|v| v.epoch == epoch)?;
        Some(StoredVersion::Packed {
            seq: parsed.seq,
            nonce: parsed.nonce,
        })
    }

    /// Whether `version` is this one, without allocating.
    fn is(&self, epoch: &str, version: &str) -> bool {
        match self {
            StoredVersion::Packed { .. } => Self::pack(epoch, version).as_ref() == Some(self),
            StoredVersion::Text(text) => **text == *version,
        }
    }

    fn render(&self, epoch: &str) -> VersionStr {
        match self {
            StoredVersion::Packed { seq, nonce } => Arc::from(
                Version {
                    epoch,
                    seq: *seq,
                    nonce: *nonce,
                }
                .to_string(),
            ),
            StoredVersion::Text(text) => Arc::from(&**text),
        }
    }
}

#[derive(Debug, Default)]
struct ShardMirror {
    epoch: Option<Arc<str>>,
    applied_seq: u64,
    /// Versions read from Redis as of an earlier sequence are not learnt: a reset or an eviction
    /// since dropped what may have superseded them (the invalidations applied, or the newer
    /// versions the evicted entries knew).
    learn_floor: u64,
    synced: bool,
    fenced_at: Option<Instant>,
    entries: HashMap<Box<str>, Entry>,
    /// The entries' weight ([`entry_bytes`]).
    bytes: usize,
    /// The newest `(epoch, sequence)` Redis has shown us for the shard, from any source (the
    /// stream, reads, own bumps). If Redis later shows a lower sequence in that epoch, its data
    /// went back in time; the scripts are told, and start a new epoch (see `versions/shard.lua`).
    seen: Option<(String, u64)>,
}

impl ShardMirror {
    fn see(&mut self, epoch: &str, seq: u64) {
        match &mut self.seen {
            Some((e, s)) if e == epoch => *s = (*s).max(seq),
            _ => self.seen = Some((epoch.to_string(), seq)),
        }
    }

    /// The epoch every entry of the shard belongs to.
    fn epoch(&self) -> &str {
        self.epoch.as_deref().unwrap_or_default()
    }
}

/// The mirror's answer about one token (see [`Mirror::check_token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// The token is the mirrored version, current as of sequence `as_of` of `epoch`.
    Current { epoch: Arc<str>, as_of: u64 },
    /// The mirror holds another version.
    Differs(VersionAt),
}

/// What applying an invalidation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Applied in order.
    InOrder,
    /// Already applied (or older than the shard's state): ignored.
    Duplicate,
    /// Sequences `from..=to` are missing before this one; nothing was applied.
    Gap { from: u64, to: u64 },
    /// The shard's epoch changed: the shard was dropped and restarted at this invalidation.
    EpochChanged,
    /// The shard is not synced yet; the caller repairs it.
    NotSynced,
}

/// What a returned heartbeat fence says about a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceCheck {
    /// Everything up to the fence is applied: the shard is fresh as of the fence's send time.
    Fresh,
    /// Invalidations `from..=to` were lost.
    Behind { from: u64, to: u64 },
    /// Redis holds another epoch (or went backwards): the shard must be dropped.
    Diverged,
}

/// The mirror of every shard of one namespace.
pub struct Mirror {
    shards: Vec<RwLock<ShardMirror>>,
    max_staleness: Duration,
    /// Most entries one shard keeps.
    shard_capacity: usize,
    /// Most bytes one shard's entries weigh.
    shard_byte_capacity: usize,
    len: AtomicUsize,
    bytes: AtomicUsize,
    evictions: Counter,
}

impl Mirror {
    /// An unbounded mirror; see [`Mirror::with_max_keys`].
    pub fn new(shards: u32, max_staleness: Duration) -> Mirror {
        Mirror {
            shards: (0..shards)
                .map(|_| RwLock::new(ShardMirror::default()))
                .collect(),
            max_staleness,
            shard_capacity: usize::MAX,
            shard_byte_capacity: usize::MAX,
            len: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            evictions: Counter::default(),
        }
    }

    /// Keeps about `max_keys` entries at most (spread evenly over the shards), counting the
    /// entries it evicts in `evictions`.
    pub fn with_max_keys(mut self, max_keys: usize, evictions: Counter) -> Mirror {
        self.shard_capacity = max_keys.div_ceil(self.shards.len().max(1)).max(1);
        self.evictions = evictions;
        self
    }

    /// Keeps the entries' weight ([`entry_bytes`]) at about `max_bytes` at most, spread
    /// evenly over the shards.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Mirror {
        self.shard_byte_capacity = (max_bytes / self.shards.len().max(1)).max(1);
        self
    }

    /// The weight of every entry held ([`entry_bytes`]), across shards.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn read(&self, shard: u32) -> RwLockReadGuard<'_, ShardMirror> {
        match self.shards[shard as usize].read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn write(&self, shard: u32) -> RwLockWriteGuard<'_, ShardMirror> {
        match self.shards[shard as usize].write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// Versions held, across shards.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn trusted(&self, m: &ShardMirror, now: Instant) -> bool {
        m.synced
            && m.fenced_at.is_some_and(|t| {
                now.saturating_duration_since(t) <= self.max_staleness || off(Mechanism::FenceAge)
            })
    }

    /// Whether the shard may answer now (synced, fence fresh).
    pub fn is_trusted(&self, shard: u32, now: Instant) -> bool {
        shard < self.shard_count() && self.trusted(&self.read(shard), now)
    }

    /// The key's version if the shard may answer now (synced, fence fresh, key known), known
    /// current as of the shard's applied sequence (or the entry's own, if learnt ahead of it).
    pub fn lookup(&self, shard: u32, key: &str, now: Instant) -> Option<VersionAt> {
        self.lookup_if(shard, key, now, |_, _| true)
    }

    /// [`Mirror::lookup`], only if `gate(epoch, applied_seq)` also holds for the shard (a
    /// read lease's condition, see `versions/leases/holder.rs`), decided under the shard's lock.
    pub fn lookup_if(
        &self,
        shard: u32,
        key: &str,
        now: Instant,
        gate: impl Fn(&str, u64) -> bool,
    ) -> Option<VersionAt> {
        let m = self.read(shard);
        if !self.trusted(&m, now) || !gate(m.epoch(), m.applied_seq) {
            return None;
        }
        let entry = m.entries.get(key)?;
        Some(VersionAt {
            version: entry.version.render(m.epoch()),
            epoch: m.epoch.clone()?,
            as_of: entry.seq.max(m.applied_seq),
        })
    }

    /// What the mirror can say about `token` for `key` now: `None` when the shard may not
    /// answer or does not know the key. Unlike [`Mirror::lookup`], a token that is current is
    /// confirmed without rendering the mirrored version (the hot path of `Check`).
    pub fn check_token(
        &self,
        shard: u32,
        key: &str,
        token: &str,
        now: Instant,
    ) -> Option<TokenCheck> {
        self.check_token_if(shard, key, token, now, |_, _| true)
    }

    /// [`Mirror::check_token`], only if `gate(epoch, applied_seq)` also holds for the shard
    /// (see [`Mirror::lookup_if`]).
    pub fn check_token_if(
        &self,
        shard: u32,
        key: &str,
        token: &str,
        now: Instant,
        gate: impl Fn(&str, u64) -> bool,
    ) -> Option<TokenCheck> {
        let m = self.read(shard);
        if !self.trusted(&m, now) || !gate(m.epoch(), m.applied_seq) {
            return None;
        }
        let entry = m.entries.get(key)?;
        let epoch = m.epoch.clone()?;
        let as_of = entry.seq.max(m.applied_seq);
        Some(if entry.version.is(&epoch, token) {
            TokenCheck::Current { epoch, as_of }
        } else {
            TokenCheck::Differs(VersionAt {
                version: entry.version.render(&epoch),
                epoch,
                as_of,
            })
        })
    }

    /// Whether every shard is synced (the subscription is live and repaired).
    pub fn all_synced(&self) -> bool {
        (0..self.shard_count()).all(|s| self.read(s).synced)
    }

    /// Age of the oldest shard fence; `None` when a shard is unsynced or never fenced.
    pub fn oldest_fence_age(&self, now: Instant) -> Option<Duration> {
        let mut oldest = Duration::ZERO;
        for s in 0..self.shard_count() {
            let m = self.read(s);
            let fenced = m.fenced_at.filter(|_| m.synced)?;
            oldest = oldest.max(now.saturating_duration_since(fenced));
        }
        Some(oldest)
    }

    /// The shard's epoch and applied sequence, if it has been synced once.
    pub fn position(&self, shard: u32) -> Option<(String, u64)> {
        let m = self.read(shard);
        m.epoch.as_deref().map(|e| (e.to_string(), m.applied_seq))
    }

    /// Applies an invalidation received on the shard's channel.
    pub fn apply(&self, shard: u32, epoch: &str, seq: u64, key: &str, version: &str) -> Applied {
        let mut m = self.write(shard);
        m.see(epoch, seq);
        if !m.synced {
            return Applied::NotSynced;
        }
        if m.epoch.as_deref() != Some(epoch) {
            self.reset_locked(&mut m, epoch, seq - seq.min(1));
            self.upsert_locked(&mut m, seq, key, version);
            m.applied_seq = seq;
            return Applied::EpochChanged;
        }
        if seq <= m.applied_seq {
            return Applied::Duplicate;
        }
        if seq > m.applied_seq + 1 && !off(Mechanism::GapRepair) {
            let from = m.applied_seq + 1;
            m.synced = false;
            return Applied::Gap { from, to: seq - 1 };
        }
        self.upsert_locked(&mut m, seq, key, version);
        m.applied_seq = seq;
        Applied::InOrder
    }

    /// The `fault-injection` fault: advances the shard past `seq` as if its invalidation had
    /// been applied, without applying it (no gap is detected later). Returns false, doing
    /// nothing, unless it continues the shard's applied sequence in its epoch.
    #[cfg(feature = "fault-injection")]
    pub fn skip_applying(&self, shard: u32, epoch: &str, seq: u64) -> bool {
        let mut m = self.write(shard);
        if !m.synced || m.epoch.as_deref() != Some(epoch) || seq != m.applied_seq + 1 {
            return false;
        }
        m.see(epoch, seq);
        m.applied_seq = seq;
        true
    }

    /// Applies repaired invalidations (from the replay log) that continue `applied_seq`.
    /// Returns false, applying nothing, if they do not continue it without a hole.
    pub fn apply_repair(&self, shard: u32, epoch: &str, entries: &[(u64, &str, &str)]) -> bool {
        let mut m = self.write(shard);
        if m.epoch.as_deref() != Some(epoch) {
            return false;
        }
        for (expected, (seq, _, _)) in (m.applied_seq + 1..).zip(entries) {
            if *seq != expected {
                return false;
            }
        }
        for (seq, key, version) in entries {
            self.upsert_locked(&mut m, *seq, key, version);
            m.applied_seq = *seq;
        }
        true
    }

    /// Records a version learnt from Redis or from an own bump, known as of `seq`.
    ///
    /// Ignored unless it belongs to the shard's epoch and is no older than the shard's last
    /// reset or eviction: a read that raced a reset may carry a version whose superseding
    /// invalidation was applied and then dropped with the reset, and nothing would ever correct
    /// it (likewise an entry evicted while the read was in flight).
    pub fn learn(&self, shard: u32, epoch: &str, seq: u64, key: &str, version: &str) {
        let mut m = self.write(shard);
        m.see(epoch, seq);
        if m.epoch.as_deref() == Some(epoch) && seq >= m.learn_floor {
            self.upsert_locked(&mut m, seq, key, version);
        }
    }

    /// Drops `key` when Redis showed it without a current version as of `seq` (expired after
    /// `version_ttl`, or deleted by hand) and the entry is no newer than that read. The learn
    /// floor is raised past the entry, as for an eviction: a read older than it that completes
    /// later must not bring back what it replaced.
    pub fn forget(&self, shard: u32, epoch: &str, seq: u64, key: &str) {
        let mut m = self.write(shard);
        m.see(epoch, seq);
        if m.epoch.as_deref() != Some(epoch) {
            return;
        }
        if let Some(entry) = m.entries.get(key).filter(|e| e.seq <= seq) {
            let floor = entry.seq;
            let weight = entry_bytes(key, &entry.version);
            m.entries.remove(key);
            m.bytes -= weight;
            m.learn_floor = m.learn_floor.max(floor);
            self.len.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(weight, Ordering::Relaxed);
        }
    }

    /// Reconciliation's correction, decided and announced atomically with respect to every
    /// other change of the shard. `read` is what Redis held for `key` as of `(epoch, seq)`;
    /// `before` what the mirror held when the shard was at `position`. A difference is a real
    /// mismatch only if the shard had applied exactly up to the read then and still has now:
    /// otherwise invalidations were in flight, and one of them may explain it. A real
    /// mismatch is recorded, and `announce(seq)` runs while the shard is locked, so that no
    /// invalidation applied later can reach watchers before it (ordered announcements).
    /// Returns whether it corrected anything.
    #[allow(clippy::too_many_arguments)]
    pub fn correct(
        &self,
        shard: u32,
        position: &Option<(String, u64)>,
        (epoch, seq): (&str, u64),
        key: &str,
        before: Option<&str>,
        read: &str,
        announce: impl FnOnce(u64),
    ) -> bool {
        let mut m = self.write(shard);
        let now = m.epoch.as_deref().map(|e| (e.to_string(), m.applied_seq));
        let settled = now.as_ref().is_some_and(|(e, s)| e == epoch && *s == seq);
        if !settled || &now != position || before.is_none_or(|b| b == read) {
            return false;
        }
        self.upsert_locked(&mut m, seq, key, read);
        announce(seq);
        true
    }

    /// Marks the shard synced and fresh as of `sent_at`, the send time of a heartbeat fence
    /// whose `(epoch, seq)` the shard has been brought up to.
    pub fn mark_fresh(&self, shard: u32, sent_at: Instant) {
        let mut m = self.write(shard);
        m.synced = true;
        m.fenced_at = Some(m.fenced_at.map_or(sent_at, |t| t.max(sent_at)));
    }

    /// Compares the shard with a state read from Redis (or carried by a heartbeat).
    pub fn compare(&self, shard: u32, epoch: &str, seq: u64) -> FenceCheck {
        Self::compare_locked(&self.read(shard), epoch, seq)
    }

    fn compare_locked(m: &ShardMirror, epoch: &str, seq: u64) -> FenceCheck {
        if m.epoch.as_deref() != Some(epoch) || seq < m.applied_seq {
            FenceCheck::Diverged
        } else if seq > m.applied_seq {
            FenceCheck::Behind {
                from: m.applied_seq + 1,
                to: seq,
            }
        } else {
            FenceCheck::Fresh
        }
    }

    /// Drops the shard's versions and restarts it at `(epoch, seq)`, synced but not fenced.
    pub fn reset(&self, shard: u32, epoch: &str, seq: u64) {
        let mut m = self.write(shard);
        self.reset_locked(&mut m, epoch, seq);
    }

    fn reset_locked(&self, m: &mut ShardMirror, epoch: &str, seq: u64) {
        self.len.fetch_sub(m.entries.len(), Ordering::Relaxed);
        self.bytes.fetch_sub(m.bytes, Ordering::Relaxed);
        m.entries = HashMap::new();
        m.bytes = 0;
        m.epoch = Some(Arc::from(epoch));
        m.applied_seq = seq;
        m.learn_floor = seq;
        m.synced = true;
        m.fenced_at = None;
        m.see(epoch, seq);
    }

    /// The newest `(epoch, sequence)` Redis has shown for the shard (see `ShardMirror::seen`).
    pub fn newest_seen(&self, shard: u32) -> Option<(String, u64)> {
        self.read(shard).seen.clone()
    }

    /// Marks the shard synced again after a repair (its last fence still holds).
    pub fn mark_synced(&self, shard: u32) {
        self.write(shard).synced = true;
    }

    /// Marks every shard unsynced (the subscription dropped): nothing answers from the mirror
    /// until each shard is repaired. Versions are kept so that a repair from the log can
    /// continue from them.
    pub fn suspend_all(&self) {
        for s in 0..self.shard_count() {
            self.write(s).synced = false;
        }
    }

    fn upsert_locked(&self, m: &mut ShardMirror, seq: u64, key: &str, version: &str) {
        let version = StoredVersion::new(m.epoch(), version);
        let weight = entry_bytes(key, &version);
        match m.entries.get_mut(key) {
            Some(entry) => {
                if seq >= entry.seq {
                    let old = entry_bytes(key, &entry.version);
                    entry.version = version;
                    // Packed and text versions weigh differently.
                    m.bytes = m.bytes - old + weight;
                    self.bytes.fetch_sub(old, Ordering::Relaxed);
                    self.bytes.fetch_add(weight, Ordering::Relaxed);
                }
                entry.seq = entry.seq.max(seq);
            }
            None => {
                if m.entries.len() >= self.shard_capacity
                    || m.bytes + weight > self.shard_byte_capacity
                {
                    self.evict_locked(m);
                }
                m.entries.insert(Box::from(key), Entry { version, seq });
                m.bytes += weight;
                self.len.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(weight, Ordering::Relaxed);
            }
        }
    }

    /// Drops an eighth of a full shard's entries (or of its bytes, whichever is full):
    /// whichever come first in the table, an order the hasher's random keys make arbitrary.
    /// One pass per eighth of the capacity inserted keeps eviction O(1) per insert, amortised.
    /// Raises the learn floor past every dropped entry and everything applied, so that no read
    /// older than what was forgotten is learnt.
    fn evict_locked(&self, m: &mut ShardMirror) {
        let keep = self.shard_capacity - self.shard_capacity.div_ceil(8);
        let keep_bytes = self.shard_byte_capacity - self.shard_byte_capacity.div_ceil(8);
        let mut to_drop = m.entries.len().saturating_sub(keep);
        let mut bytes_to_drop = m.bytes.saturating_sub(keep_bytes);
        let (mut dropped, mut dropped_bytes) = (0usize, 0usize);
        let mut floor = m.applied_seq;
        m.entries.retain(|key, entry| {
            if to_drop == 0 && bytes_to_drop == 0 {
                return true;
            }
            let weight = entry_bytes(key, &entry.version);
            to_drop = to_drop.saturating_sub(1);
            bytes_to_drop = bytes_to_drop.saturating_sub(weight);
            dropped += 1;
            dropped_bytes += weight;
            floor = floor.max(entry.seq);
            false
        });
        m.bytes -= dropped_bytes;
        m.learn_floor = m.learn_floor.max(floor);
        self.len.fetch_sub(dropped, Ordering::Relaxed);
        self.bytes.fetch_sub(dropped_bytes, Ordering::Relaxed);
        self.evictions.inc_by(dropped as u64);
    }

    /// The keys mirrored in a shard (for reconciliation).
    pub fn keys(&self, shard: u32) -> Vec<String> {
        self.read(shard)
            .entries
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    /// The version mirrored for a key, trusted or not (for reconciliation).
    pub fn peek(&self, shard: u32, key: &str) -> Option<VersionStr> {
        let m = self.read(shard);
        m.entries.get(key).map(|e| e.version.render(m.epoch()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced_mirror() -> Mirror {
        let m = Mirror::new(1, Duration::from_millis(500));
        m.reset(0, "e1", 10);
        m
    }

    #[test]
    fn a_full_mirror_evicts_and_stays_within_its_bound() {
        let evictions = Counter::default();
        let m = Mirror::new(4, Duration::from_millis(500)).with_max_keys(1_000, evictions.clone());
        for shard in 0..4 {
            m.reset(shard, "e1", 0);
        }
        for i in 0..10_000u64 {
            let shard = (i % 4) as u32;
            m.learn(
                shard,
                "e1",
                i,
                &format!("k{i}"),
                &format!("e1.{i}.{i:016x}"),
            );
        }
        assert!(m.len() <= 1_000, "{} entries", m.len());
        assert!(
            m.len() >= 800,
            "evicts an eighth at a time, not all: {}",
            m.len()
        );
        assert_eq!(evictions.get() + m.len() as u64, 10_000);
    }

    /// The race eviction must not open: a read that began before a newer version was learnt
    /// (here an own bump) completes after that entry was evicted. Learning it would make the
    /// superseded version current again.
    #[test]
    fn a_mirror_of_long_keys_stays_within_its_byte_bound() {
        let evictions = Counter::default();
        let max_bytes = 200_000;
        let m = Mirror::new(2, Duration::from_millis(500))
            .with_max_keys(1_000_000, evictions.clone())
            .with_max_bytes(max_bytes);
        m.reset(0, "e1", 0);
        m.reset(1, "e1", 0);
        let long = "k".repeat(1_000);
        for i in 0..2_000u64 {
            let key = format!("{long}{i}");
            m.learn(
                (i % 2) as u32,
                "e1",
                i + 1,
                &key,
                &format!("e1.{}.{:016x}", i + 1, i),
            );
            assert!(m.bytes() <= max_bytes, "{} bytes", m.bytes());
        }
        assert!(evictions.get() > 0);
        assert!(m.bytes() > max_bytes / 2, "{}", m.bytes());
        let held: usize = (0..2)
            .flat_map(|s| m.keys(s))
            .map(|k| k.len() + ENTRY_OVERHEAD_BYTES)
            .sum();
        assert_eq!(held, m.bytes(), "the count follows the entries");
        m.reset(0, "e2", 0);
        m.reset(1, "e2", 0);
        assert_eq!(m.bytes(), 0);
    }

    #[test]
    fn a_read_older_than_an_evicted_entry_is_not_learnt() {
        let m = Mirror::new(1, Duration::from_millis(500)).with_max_keys(1, Counter::default());
        m.reset(0, "e1", 10);
        m.mark_fresh(0, Instant::now());
        // An own bump is learnt ahead of the stream (applied_seq stays 10).
        m.learn(0, "e1", 12, "k", "e1.12.bbbbbbbbbbbbbbbb");
        // Another key fills the shard: "k" is evicted.
        m.learn(0, "e1", 12, "other", "e1.11.cccccccccccccccc");
        assert_eq!(m.peek(0, "k"), None, "k was evicted");
        // A read of "k" sent before the bump comes back with the version before it.
        m.learn(0, "e1", 11, "k", "e1.11.aaaaaaaaaaaaaaaa");
        assert_eq!(
            m.check_token(0, "k", "e1.11.aaaaaaaaaaaaaaaa", Instant::now()),
            None,
            "the superseded version must not be mirrored"
        );
        // A read from after the eviction is learnt as usual.
        m.learn(0, "e1", 12, "k", "e1.12.bbbbbbbbbbbbbbbb");
        assert!(matches!(
            m.check_token(0, "k", "e1.12.bbbbbbbbbbbbbbbb", Instant::now()),
            Some(TokenCheck::Current { as_of: 12, .. })
        ));
    }

    /// Reconciliation may correct (and announce) only what no invalidation in flight can
    /// explain, and never after a newer invalidation was applied: watchers must not receive
    /// an older version after a newer one.
    #[test]
    fn a_correction_is_made_only_when_no_invalidation_was_in_flight() {
        let m = synced_mirror();
        assert_eq!(m.apply(0, "e1", 11, "k", "e1.11.a"), Applied::InOrder);
        let position = m.position(0);
        let mut announced = Vec::new();
        // Redis was ahead of the mirror when read (sequence 12 in flight): not a mismatch.
        assert!(!m.correct(
            0,
            &position,
            ("e1", 12),
            "k",
            Some("e1.11.a"),
            "e1.12.b",
            |s| { announced.push(s) }
        ));
        // Read at the mirror's own position, but an invalidation was applied meanwhile.
        assert_eq!(m.apply(0, "e1", 12, "k", "e1.12.b"), Applied::InOrder);
        assert!(!m.correct(
            0,
            &position,
            ("e1", 11),
            "k",
            Some("e1.11.a"),
            "byhand",
            |s| { announced.push(s) }
        ));
        assert!(announced.is_empty(), "{announced:?}");
        assert_eq!(m.peek(0, "k"), Some(Arc::from("e1.12.b")));
        // Settled: mirror and read at the same position, versions differ (rewritten by hand).
        let position = m.position(0);
        assert!(m.correct(
            0,
            &position,
            ("e1", 12),
            "k",
            Some("e1.12.b"),
            "byhand",
            |s| { announced.push(s) }
        ));
        assert_eq!(announced, vec![12]);
        assert_eq!(m.peek(0, "k"), Some(Arc::from("byhand")));
        // Agreeing versions are no mismatch.
        assert!(!m.correct(
            0,
            &position,
            ("e1", 12),
            "k",
            Some("byhand"),
            "byhand",
            |_| { panic!("nothing to announce") }
        ));
    }

    /// A key Redis no longer holds (expired) is forgotten, unless the mirror knows a newer
    /// version than the read; and a read older than the forgotten entry is not learnt after.
    #[test]
    fn a_key_without_a_version_is_forgotten_and_older_reads_stay_out() {
        let m = synced_mirror();
        m.learn(0, "e1", 12, "k", "e1.12.a");
        m.learn(0, "e1", 20, "own", "e1.20.b");
        m.forget(0, "e1", 15, "k");
        m.forget(0, "e1", 15, "own");
        assert_eq!(m.peek(0, "k"), None);
        assert_eq!(
            m.peek(0, "own"),
            Some(Arc::from("e1.20.b")),
            "newer than the read"
        );
        assert_eq!(m.len(), 1);
        m.learn(0, "e1", 11, "k", "e1.11.old");
        assert_eq!(
            m.peek(0, "k"),
            None,
            "a read older than the forgotten entry"
        );
        m.learn(0, "e1", 16, "k", "e1.16.new");
        assert_eq!(m.peek(0, "k"), Some(Arc::from("e1.16.new")));
    }

    #[test]
    fn remembers_the_newest_sequence_redis_showed_in_the_current_epoch() {
        let m = synced_mirror();
        assert_eq!(m.newest_seen(0), Some(("e1".into(), 10)));
        m.learn(0, "e1", 14, "k", "e1.14.aaaaaaaaaaaaaaaa");
        assert_eq!(m.apply(0, "e1", 11, "k", "e1.11.a"), Applied::InOrder);
        assert_eq!(m.newest_seen(0), Some(("e1".into(), 14)), "never lowered");
        m.reset(0, "e2", 3);
        assert_eq!(
            m.newest_seen(0),
            Some(("e2".into(), 3)),
            "a new epoch starts over"
        );
    }

    #[test]
    fn answers_only_while_fenced_recently() {
        let m = synced_mirror();
        assert_eq!(m.apply(0, "e1", 11, "k", "e1.11.a"), Applied::InOrder);
        let now = Instant::now();
        assert_eq!(m.lookup(0, "k", now), None, "never fenced yet");
        assert_eq!(m.compare(0, "e1", 11), FenceCheck::Fresh);
        m.mark_fresh(0, now);
        assert_eq!(
            m.lookup(0, "k", now).map(|v| v.version),
            Some(Arc::from("e1.11.a"))
        );
        assert_eq!(
            m.lookup(0, "k", now + Duration::from_millis(501)),
            None,
            "fence too old"
        );
    }

    #[test]
    fn detects_gaps_duplicates_and_epoch_changes() {
        let m = synced_mirror();
        assert_eq!(m.apply(0, "e1", 10, "k", "v"), Applied::Duplicate);
        assert_eq!(
            m.apply(0, "e1", 13, "k", "v"),
            Applied::Gap { from: 11, to: 12 }
        );
        assert_eq!(
            m.lookup(0, "k", Instant::now()),
            None,
            "unsynced during repair"
        );
        assert!(m.apply_repair(0, "e1", &[(11, "a", "e1.11.x"), (12, "b", "e1.12.y")]));
        m.mark_synced(0);
        assert_eq!(m.apply(0, "e1", 13, "k", "e1.13.z"), Applied::InOrder);
        assert_eq!(m.apply(0, "e2", 1, "k", "e2.1.z"), Applied::EpochChanged);
        assert_eq!(m.len(), 1, "epoch change dropped the shard");
        assert_eq!(m.compare(0, "e2", 0), FenceCheck::Diverged);
        assert_eq!(m.compare(0, "e1", 1), FenceCheck::Diverged);
        assert_eq!(m.compare(0, "e2", 3), FenceCheck::Behind { from: 2, to: 3 });
    }

    #[test]
    fn a_read_older_than_a_reset_is_not_learnt() {
        let m = synced_mirror();
        // Key k moved to e1.12 and the shard was then reset (say, a gap beyond the log) at 20:
        // the mirror no longer knows about e1.12.
        assert_eq!(m.apply(0, "e1", 11, "other", "e1.11.a"), Applied::InOrder);
        assert_eq!(m.apply(0, "e1", 12, "k", "e1.12.new"), Applied::InOrder);
        m.reset(0, "e1", 20);
        // A read sent before the bump of k answers late: it must not come back as current.
        m.learn(0, "e1", 11, "k", "e1.5.old");
        assert_eq!(m.peek(0, "k"), None);
        m.learn(0, "e1", 20, "k", "e1.12.new");
        assert_eq!(m.peek(0, "k"), Some(Arc::from("e1.12.new")));
    }

    #[test]
    fn check_token_confirms_the_mirrored_version_and_names_the_current_one_otherwise() {
        let m = synced_mirror();
        let packed = "e1.11.00000000000000aa";
        assert_eq!(m.apply(0, "e1", 11, "k", packed), Applied::InOrder);
        assert_eq!(m.apply(0, "e1", 12, "hand", "edited"), Applied::InOrder);
        let now = Instant::now();
        m.mark_fresh(0, now);
        // Known current as of the shard's applied sequence (12), not just the entry's own.
        assert_eq!(
            m.check_token(0, "k", packed, now),
            Some(TokenCheck::Current {
                epoch: Arc::from("e1"),
                as_of: 12
            })
        );
        assert_eq!(
            m.check_token(0, "k", "e1.10.00000000000000aa", now),
            Some(TokenCheck::Differs(VersionAt {
                version: Arc::from(packed),
                epoch: Arc::from("e1"),
                as_of: 12
            }))
        );
        assert!(matches!(
            m.check_token(0, "hand", "edited", now),
            Some(TokenCheck::Current { .. })
        ));
        assert!(matches!(
            m.check_token(0, "hand", packed, now),
            Some(TokenCheck::Differs { .. })
        ));
        assert_eq!(m.check_token(0, "unknown", packed, now), None);
        let late = now + Duration::from_millis(501);
        assert_eq!(m.check_token(0, "k", packed, late), None, "fence too old");
    }

    #[test]
    fn versions_are_stored_packed_when_they_can_be_and_always_come_back_exact() {
        let epoch = "0123456789abcdef";
        for version in [
            "0123456789abcdef.7.00000000000000ff",
            "0123456789abcdef.0.ffffffffffffffff",
            "0123456789abcdef.18446744073709551615.0000000000000001",
        ] {
            let stored = StoredVersion::new(epoch, version);
            assert!(matches!(stored, StoredVersion::Packed { .. }), "{version}");
            assert_eq!(&*stored.render(epoch), version);
        }
        // Not in the script's canonical form: kept as text, never confused with a packed one.
        for version in [
            "0123456789abcdef.07.00000000000000ff",
            "0123456789abcdef.+7.00000000000000ff",
            "0123456789abcdef.7.00000000000000FF",
            "0123456789abcdef.7.ff",
            "0123456789abcdef.7.00000000000000ff.x",
            "0123456789abcdef..00000000000000ff",
            "fedcba9876543210.7.00000000000000ff",
            "hand-written",
        ] {
            let stored = StoredVersion::new(epoch, version);
            assert!(matches!(stored, StoredVersion::Text(_)), "{version}");
            assert_eq!(&*stored.render(epoch), version);
            assert_ne!(
                stored,
                StoredVersion::new(epoch, "0123456789abcdef.7.00000000000000ff")
            );
        }
    }

    #[test]
    fn newest_version_wins_whatever_the_arrival_order() {
        let m = synced_mirror();
        m.learn(0, "e1", 20, "k", "e1.20.own");
        assert_eq!(m.apply(0, "e1", 11, "k", "e1.11.old"), Applied::InOrder);
        assert_eq!(m.peek(0, "k"), Some(Arc::from("e1.20.own")));
        m.learn(0, "e1", 15, "k", "e1.11.old");
        assert_eq!(m.peek(0, "k"), Some(Arc::from("e1.20.own")));
        m.learn(0, "other-epoch", 99, "k", "x");
        assert_eq!(m.peek(0, "k"), Some(Arc::from("e1.20.own")));
    }
}
