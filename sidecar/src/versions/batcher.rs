//! Reads and bumps of versions in Redis, coalesced per sidecar.
//!
//! Every read the mirror cannot answer (strong checks, unknown keys, an untrusted shard) and
//! every bump goes through a [`Batcher`] — one per [`VersionsMode`]: Get, Read (Check and
//! reconciliation, which must write nothing) and Bump: calls that arrive while a batch is in flight wait and
//! go together in the next one: one script call for all of them (one per shard on a cluster,
//! where a script reaches one slot). A batch is sent only after every call in it began, so a
//! read reflects every bump completed before it began (guarantee 3) and a bump's versions are
//! newer than any issued before it began — and 1,000 concurrent strong checks (or bumps) cost a
//! couple of round trips, not 1,000. Two concurrent bumps of one key get the same new version: neither was first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::redis::link::LinkError;
use crate::versions::shard_script::{self, ShardKeysToRead, VersionsMode};
use crate::versions::state::VersionsState;
use crate::versions::version::{VersionAt, VersionStr};

/// Most keys one batch takes, so that a burst cannot make one huge script call.
const MAX_BATCH_KEYS: usize = 10_000;

type Reply = oneshot::Sender<Result<Vec<ReadVersion>, LinkError>>;

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

/// The coalescing reader (or bumper) of one sidecar.
pub struct Batcher {
    state: Arc<VersionsState>,
    mode: VersionsMode,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(Vec<String>, Reply)>,
    running: bool,
    /// Calls begun since start, for tests and diagnostics that must know when a burst has
    /// arrived.
    begun: u64,
}

impl Batcher {
    /// A batcher that gets (`VersionsMode::Get`), reads (`VersionsMode::Read`) or bumps
    /// (`VersionsMode::Bump`).
    pub fn new(state: Arc<VersionsState>, mode: VersionsMode) -> Arc<Batcher> {
        Arc::new(Batcher {
            state,
            mode,
            queue: Mutex::new(Queue::default()),
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        match self.queue.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        }
    }

    /// How many calls have begun since this batcher was made (answered, in flight or waiting).
    pub fn calls_begun(&self) -> u64 {
        self.queue().begun
    }

    /// The versions of `keys` in order — current ones (when getting, issuing one for keys that
    /// have none) or, when bumping, new ones — from a batch sent after this call began. Also
    /// teaches the mirror.
    pub async fn run(self: &Arc<Self>, keys: Vec<String>) -> Result<Vec<ReadVersion>, LinkError> {
        let (tx, rx) = oneshot::channel();
        let start_runner = {
            let mut q = self.queue();
            q.waiting.push((keys, tx));
            q.begun += 1;
            !std::mem::replace(&mut q.running, true)
        };
        if start_runner {
            let batcher = Arc::clone(self);
            tokio::spawn(async move { batcher.drain().await });
        }
        rx.await
            .unwrap_or_else(|_| Err(LinkError::Unavailable("call abandoned".into())))
    }

    async fn drain(&self) {
        loop {
            let batch = {
                let mut q = self.queue();
                if q.waiting.is_empty() {
                    q.running = false;
                    return;
                }
                let mut taken = 0;
                let mut split = 0;
                for (keys, _) in &q.waiting {
                    if split > 0 && taken + keys.len() > MAX_BATCH_KEYS {
                        break;
                    }
                    taken += keys.len();
                    split += 1;
                }
                q.waiting.drain(..split).collect::<Vec<_>>()
            };
            self.read_batch(batch).await;
        }
    }

    async fn read_batch(&self, batch: Vec<(Vec<String>, Reply)>) {
        let (key_lists, replies): (Vec<Vec<String>>, Vec<Reply>) = batch.into_iter().unzip();
        let state = &self.state;
        let keyspace = &state.keyspace;
        let mut by_shard: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for keys in &key_lists {
            for key in keys {
                if seen.insert(key.as_str()) {
                    by_shard
                        .entry(keyspace.shard_of(key))
                        .or_default()
                        .push(key);
                }
            }
        }
        let timeout = state.settings.request_timeout;
        let log_len = state.settings.replay_log_len;
        let ttl_ms = state.settings.version_ttl_ms;
        let mode = self.mode;
        let operation = match mode {
            VersionsMode::Get | VersionsMode::Read => "read",
            VersionsMode::Bump => "bump",
        };
        let reads: Vec<ShardKeysToRead> = by_shard
            .into_iter()
            .map(|(shard, keys)| ShardKeysToRead {
                shard,
                keys,
                seen: state.mirror.newest_seen(shard),
            })
            .collect();
        // One script call for every shard on a standalone Redis, one per shard on a cluster.
        let calls: Vec<Vec<ShardKeysToRead>> = if keyspace.one_call_covers_every_shard() {
            vec![reads]
        } else {
            reads.into_iter().map(|read| vec![read]).collect()
        };
        let scripts = state.link.scripts();
        let results = calls.iter().map(|shards| async move {
            let result = state
                .link
                .run(operation, timeout, |mut conn| async move {
                    shard_script::versions(
                        scripts, &mut conn, keyspace, mode, shards, log_len, ttl_ms,
                    )
                    .await
                })
                .await;
            (shards, result)
        });
        let mut found: HashMap<&str, Result<ReadVersion, LinkError>> = HashMap::new();
        for (shards, result) in futures::future::join_all(results).await {
            match result {
                Ok(answers) => {
                    for (read, answer) in shards.iter().zip(answers) {
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
                    for &key in shards.iter().flat_map(|read| &read.keys) {
                        found.insert(key, Err(err.clone()));
                    }
                }
            }
        }
        for (keys, reply) in key_lists.iter().zip(replies) {
            let answer = keys
                .iter()
                .map(|k| {
                    found
                        .get(k.as_str())
                        .cloned()
                        .unwrap_or_else(|| Err(LinkError::Unavailable("key not read".into())))
                })
                .collect();
            // The caller may have given up (deadline); nothing to do then.
            let _ = reply.send(answer);
        }
    }
}
