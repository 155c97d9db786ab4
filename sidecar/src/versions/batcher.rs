//! Reads and bumps of versions in Redis, coalesced per sidecar, with admission control.
//!
//! Every read the mirror cannot answer (strong checks, unknown keys, an untrusted shard) and
//! every bump goes through a [`Batcher`] — one per [`VersionsMode`]: Get, Read (Check and
//! reconciliation, which must write nothing) and Bump: calls that arrive while a batch is in
//! flight wait and go together in the next one: one script call for all of them (one per shard
//! on a cluster, where a script reaches one slot). A batch is sent only after every call in it
//! began, so a read reflects every bump completed before it began (guarantee 3) and a bump's
//! versions are newer than any issued before it began — and 1,000 concurrent strong checks (or
//! bumps) cost a couple of round trips, not 1,000. Two concurrent bumps of one key get the same
//! new version: neither was first.
//!
//! Bounds, so that overload is answered at once instead of queued without end:
//!
//! - **Admission**: the keys of calls waiting for or in a round trip are counted in bytes
//!   (key length + [`KEY_OVERHEAD_BYTES`] each) against `batch_queue_bytes`, per batcher; a
//!   call that would pass it (unless nothing is queued: one call of any admitted size always
//!   fits) is refused at once with [`BatchError::Overloaded`] (`RESOURCE_EXHAUSTED` for Get
//!   and Bump; Check answers `current = false`, fail closed).
//! - **Abandoned work is not sent**: a call whose caller went away (its future was dropped:
//!   the client cancelled, its `grpc-timeout` passed, or the operation's own deadline —
//!   `check_deadline`, `request_timeout` — did) is dropped from the batch before the script
//!   call, and a batch whose callers have all gone stops between script calls.
//! - **Lanes**: calls of at most [`SMALL_CALL_KEYS`] keys have a lane of their own, so a small
//!   call never waits behind a huge batch in the sidecar; and a batch goes to Redis in script
//!   calls of at most [`SCRIPT_KEYS`] keys, one after another, so Redis can serve the small
//!   lane's calls between them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

use crate::redis::link::LinkError;
use crate::versions::leases::bumper::{wait_for_holders, IssuedIn};
use crate::versions::shard_script::{self, ShardKeysToRead, VersionsMode};
use crate::versions::state::VersionsState;
use crate::versions::version::{VersionAt, VersionStr};

/// Most keys one batch takes, so that a burst cannot make one huge batch.
const MAX_BATCH_KEYS: usize = 10_000;

/// Most keys of one script call: Redis runs a script without serving anyone else.
pub const SCRIPT_KEYS: usize = 1_000;

/// Calls of at most this many keys go in the small lane.
pub const SMALL_CALL_KEYS: usize = 64;

/// What a queued key costs besides its bytes (the `String`, its slot in the batch's maps).
pub const KEY_OVERHEAD_BYTES: usize = 64;

/// The keys of one script call, by shard.
type ScriptCall<'k> = Vec<(u32, Vec<&'k str>)>;

type Reply = oneshot::Sender<Result<Vec<ReadVersion>, LinkError>>;

/// Why a batched call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Admission control refused the call.
    #[error("{queued} bytes of keys already wait for Redis; this call's {bytes} more would pass batch_queue_bytes ({max})")]
    Overloaded {
        queued: usize,
        bytes: usize,
        max: usize,
    },
}

/// One key's version as a batch found it, with the shard's state at that moment: the version
/// is the key's current one as of shard sequence `seq` of `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadVersion {
    /// `None` only when reading ([`VersionsMode::Read`]): the key has no current version.
    pub version: Option<VersionStr>,
    /// Empty when reading a shard whose epoch must rotate first (nothing is current there).
    pub epoch: Arc<str>,
    pub seq: u64,
}

impl ReadVersion {
    /// The version with its position, when the key has one.
    pub fn known(self) -> Option<VersionAt> {
        Some(VersionAt {
            version: self.version?,
            epoch: self.epoch,
            as_of: self.seq,
        })
    }
}

/// The coalescing reader (or bumper) of one sidecar: two lanes sharing one byte budget.
pub struct Batcher {
    small: Arc<Lane>,
    bulk: Arc<Lane>,
    budget: Arc<Budget>,
}

/// The bytes of keys admitted and not yet answered, against `batch_queue_bytes`.
struct Budget {
    held: AtomicUsize,
    max: usize,
    gauge: Gauge,
}

impl Budget {
    /// Takes `bytes` unless that would pass the maximum while something is held already.
    fn take(&self, bytes: usize) -> Result<(), BatchError> {
        self.held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                (held == 0 || held.saturating_add(bytes) <= self.max).then(|| held + bytes)
            })
            .map(|_| {
                self.gauge.inc_by(i64::try_from(bytes).unwrap_or(i64::MAX));
            })
            .map_err(|queued| BatchError::Overloaded {
                queued,
                bytes,
                max: self.max,
            })
    }

    fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::SeqCst);
        self.gauge.dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// One call's share of the budget, given back when the call is answered or dropped.
struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// A call waiting in a lane.
struct Waiting {
    keys: Vec<String>,
    reply: Reply,
    _charge: Charge,
}

/// One lane: its queue and whether a task is draining it.
struct Lane {
    state: Arc<VersionsState>,
    mode: VersionsMode,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    running: bool,
    /// Calls begun since start, for tests and diagnostics that must know when a burst has
    /// arrived.
    begun: u64,
    /// Batches sent to Redis since start (at least one script call each).
    batches: u64,
    /// Calls dropped before their batch was sent because their caller had gone away.
    abandoned: u64,
}

impl Batcher {
    /// A batcher that gets (`VersionsMode::Get`), reads (`VersionsMode::Read`) or bumps
    /// (`VersionsMode::Bump`), admitting at most `batch_queue_bytes` of keys at once.
    pub fn new(state: Arc<VersionsState>, mode: VersionsMode) -> Arc<Batcher> {
        let lane = || {
            Arc::new(Lane {
                state: Arc::clone(&state),
                mode,
                queue: Mutex::new(Queue::default()),
            })
        };
        let budget = Arc::new(Budget {
            held: AtomicUsize::new(0),
            max: state.settings.batch_queue_bytes,
            gauge: state.metrics.buffer(mode.queue_buffer()),
        });
        Arc::new(Batcher {
            small: lane(),
            bulk: lane(),
            budget,
        })
    }

    fn lanes(&self) -> [&Arc<Lane>; 2] {
        [&self.small, &self.bulk]
    }

    /// How many calls have begun since this batcher was made (answered, in flight or waiting).
    pub fn calls_begun(&self) -> u64 {
        self.lanes().iter().map(|l| l.queue().begun).sum()
    }

    /// Batches sent by the small lane and by the bulk lane since start.
    pub fn batches_sent(&self) -> (u64, u64) {
        (self.small.queue().batches, self.bulk.queue().batches)
    }

    /// Calls dropped before reaching Redis because their caller had gone away.
    pub fn calls_abandoned(&self) -> u64 {
        self.lanes().iter().map(|l| l.queue().abandoned).sum()
    }

    /// The bytes of keys admitted and not yet answered.
    pub fn queued_bytes(&self) -> usize {
        self.budget.held.load(Ordering::SeqCst)
    }

    /// The versions of `keys` in order — current ones (when getting, issuing one for keys that
    /// have none) or, when bumping, new ones — from a batch sent after this call began. Also
    /// teaches the mirror. Refused at once when the batcher is full; dropping the future
    /// withdraws the call (its keys are not sent if its batch has not been).
    pub async fn run(self: &Arc<Self>, keys: Vec<String>) -> Result<Vec<ReadVersion>, BatchError> {
        let bytes = keys
            .iter()
            .map(|k| k.len() + KEY_OVERHEAD_BYTES)
            .sum::<usize>();
        if let Err(refused) = self.budget.take(bytes) {
            self.small.state.metrics.limit_reached("batch_queue_bytes");
            return Err(refused);
        }
        let charge = Charge {
            budget: Arc::clone(&self.budget),
            bytes,
        };
        let lane = if keys.len() <= SMALL_CALL_KEYS {
            &self.small
        } else {
            &self.bulk
        };
        let (tx, rx) = oneshot::channel();
        let start_runner = {
            let mut q = lane.queue();
            q.waiting.push(Waiting {
                keys,
                reply: tx,
                _charge: charge,
            });
            q.begun += 1;
            !std::mem::replace(&mut q.running, true)
        };
        if start_runner {
            let lane = Arc::clone(lane);
            tokio::spawn(async move { lane.drain().await });
        }
        rx.await
            .unwrap_or_else(|_| Err(LinkError::Unavailable("call abandoned".into())))
            .map_err(BatchError::from)
    }
}

impl Lane {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        match self.queue.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        }
    }

    async fn drain(&self) {
        loop {
            let batch = {
                let mut q = self.queue();
                // Calls whose caller went away are dropped here, before anything is sent.
                let before = q.waiting.len();
                q.waiting.retain(|w| !w.reply.is_closed());
                let abandoned = (before - q.waiting.len()) as u64;
                q.abandoned += abandoned;
                self.state.metrics.calls_abandoned.inc_by(abandoned);
                if q.waiting.is_empty() {
                    q.running = false;
                    return;
                }
                let mut taken = 0;
                let mut split = 0;
                for w in &q.waiting {
                    if split > 0 && taken + w.keys.len() > MAX_BATCH_KEYS {
                        break;
                    }
                    taken += w.keys.len();
                    split += 1;
                }
                q.batches += 1;
                q.waiting.drain(..split).collect::<Vec<_>>()
            };
            self.read_batch(batch).await;
        }
    }

    async fn read_batch(&self, batch: Vec<Waiting>) {
        let state = &self.state;
        let keyspace = &state.keyspace;
        let mut by_shard: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for w in &batch {
            for key in &w.keys {
                if seen.insert(key.as_str()) {
                    by_shard
                        .entry(keyspace.shard_of(key))
                        .or_default()
                        .push(key);
                }
            }
        }
        // Script calls of at most SCRIPT_KEYS keys: each one's shards on a standalone Redis
        // (one call covers every shard), one shard each on a cluster. Calls of one group run
        // one after another; the groups (a cluster's shards) concurrently.
        let mut groups: Vec<Vec<ScriptCall>> = Vec::new();
        let one_group = keyspace.one_call_covers_every_shard();
        for (shard, keys) in by_shard {
            if !one_group || groups.is_empty() {
                groups.push(vec![Vec::new()]);
            }
            let group = groups.last_mut().expect("pushed above");
            for chunk in keys.chunks(SCRIPT_KEYS) {
                let call = group.last_mut().expect("a group starts with one call");
                let in_call: usize = call.iter().map(|(_, k)| k.len()).sum();
                if in_call + chunk.len() > SCRIPT_KEYS && !call.is_empty() {
                    group.push(Vec::new());
                }
                let call = group.last_mut().expect("a group has a call");
                call.push((shard, chunk.to_vec()));
            }
        }
        let replies: Vec<&Reply> = batch.iter().map(|w| &w.reply).collect();
        let results = groups.iter().map(|calls| self.run_calls(calls, &replies));
        let mut found: HashMap<&str, Result<ReadVersion, LinkError>> = HashMap::new();
        let mut issued = Vec::new();
        for (group, group_issued) in futures::future::join_all(results).await {
            found.extend(group);
            issued.extend(group_issued);
        }
        // When the answers arrived: the bumper's first sight of the lease grants they carry
        // (the latest of the calls, so no grant is counted as seen earlier than it was).
        let received = Instant::now();
        let answers: Vec<Vec<_>> = batch
            .iter()
            .map(|w| {
                w.keys
                    .iter()
                    .map(|k| {
                        found
                            .get(k.as_str())
                            .cloned()
                            .unwrap_or_else(|| Err(LinkError::Unavailable("key not read".into())))
                    })
                    .collect()
            })
            .collect();
        drop(found);
        let send = move || {
            for (w, answer) in batch.into_iter().zip(answers) {
                // The caller may have given up (deadline); nothing to do then.
                let _ = w.reply.send(answer.into_iter().collect());
            }
        };
        if issued.is_empty() {
            send();
        } else {
            // Versions were issued where leases are held: the callers return only once every
            // holder acknowledged or ran out (docs/design.md, "Read leases"); the next batch
            // need not wait for that.
            let state = Arc::clone(&self.state);
            tokio::spawn(async move {
                wait_for_holders(state, issued, received).await;
                send();
            });
        }
    }

    /// Runs `calls` one after another, teaching the mirror what they find; stops early when
    /// every caller of the batch has gone away.
    async fn run_calls<'k>(
        &self,
        calls: &[ScriptCall<'k>],
        replies: &[&Reply],
    ) -> (
        HashMap<&'k str, Result<ReadVersion, LinkError>>,
        Vec<IssuedIn>,
    ) {
        let state = &self.state;
        let keyspace = &state.keyspace;
        let timeout = state.settings.request_timeout;
        let log_len = state.settings.replay_log_len;
        let ttl_ms = state.settings.version_ttl_ms;
        let lease_ms = state.settings.leases.period.as_millis() as u64;
        let mode = self.mode;
        let operation = match mode {
            VersionsMode::Get | VersionsMode::Read => "read",
            VersionsMode::Bump => "bump",
        };
        let scripts = state.link.scripts();
        let mut found = HashMap::new();
        let mut issued = Vec::new();
        for call in calls {
            if replies.iter().all(|r| r.is_closed()) {
                break;
            }
            let reads: Vec<ShardKeysToRead> = call
                .iter()
                .map(|(shard, keys)| ShardKeysToRead {
                    shard: *shard,
                    keys: keys.clone(),
                    seen: state.mirror.newest_seen(*shard),
                })
                .collect();
            let reads = &reads;
            let result = state
                .link
                .run(operation, timeout, |mut conn| async move {
                    shard_script::versions(
                        scripts, &mut conn, keyspace, mode, reads, log_len, ttl_ms, lease_ms,
                    )
                    .await
                })
                .await;
            match result {
                Ok(answers) => {
                    for (read, answer) in reads.iter().zip(answers) {
                        if !answer.leases.is_empty() {
                            issued.push(IssuedIn {
                                shard: read.shard,
                                epoch: answer.state.epoch.clone(),
                                seq: answer.state.seq,
                                table: answer.leases,
                            });
                        }
                        let epoch = Arc::<str>::from(answer.state.epoch);
                        let seq = answer.state.seq;
                        for (&key, version) in read.keys.iter().zip(answer.versions) {
                            if !epoch.is_empty() {
                                match &version {
                                    Some(v) => state.mirror.learn(read.shard, &epoch, seq, key, v),
                                    None => state.mirror.forget(read.shard, &epoch, seq, key),
                                }
                            }
                            found.insert(
                                key,
                                Ok(ReadVersion {
                                    version: version.map(VersionStr::from),
                                    epoch: Arc::clone(&epoch),
                                    seq,
                                }),
                            );
                        }
                    }
                }
                Err(err) => {
                    for &key in reads.iter().flat_map(|read| &read.keys) {
                        found.insert(key, Err(err.clone()));
                    }
                }
            }
        }
        (found, issued)
    }
}
