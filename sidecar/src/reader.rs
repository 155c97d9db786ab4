//! Reads of current versions from Redis, coalesced.
//!
//! Checks the mirror cannot answer (strong checks, unknown keys, an untrusted shard) read
//! Redis. Reads that arrive while one is in flight wait and go together in the next batch: one
//! script call per shard serves them all. A batch is sent only after every read in it began,
//! so its answer reflects every bump completed before each of them began (guarantee 3), and
//! 1,000 concurrent strong checks cost a couple of round trips per shard, not 1,000.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::mirror::VersionStr;
use crate::redis_link::LinkError;
use crate::scripts::{self, VersionsMode};
use crate::state::SidecarState;

/// Most keys one batch takes, so that a burst cannot make one huge script call.
const MAX_BATCH_KEYS: usize = 10_000;

type Reply = oneshot::Sender<Result<Vec<VersionStr>, LinkError>>;

/// The coalescing reader of one sidecar.
pub struct Reader {
    state: Arc<SidecarState>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(Vec<String>, Reply)>,
    running: bool,
}

impl Reader {
    pub fn new(state: Arc<SidecarState>) -> Arc<Reader> {
        Arc::new(Reader {
            state,
            queue: Mutex::new(Queue::default()),
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        match self.queue.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        }
    }

    /// The current versions of `keys` (issuing one for keys that have none), read from Redis
    /// by a batch sent after this call began. Also refreshes the mirror.
    pub async fn read(self: &Arc<Self>, keys: Vec<String>) -> Result<Vec<VersionStr>, LinkError> {
        let (tx, rx) = oneshot::channel();
        let start_runner = {
            let mut q = self.queue();
            q.waiting.push((keys, tx));
            !std::mem::replace(&mut q.running, true)
        };
        if start_runner {
            let reader = Arc::clone(self);
            tokio::spawn(async move { reader.drain().await });
        }
        rx.await
            .unwrap_or_else(|_| Err(LinkError::Unavailable("read abandoned".into())))
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
        let timeout = state.config.request_timeout();
        let log_len = state.config.settings.replay_log_len;
        let reads = by_shard.iter().map(|(&shard, keys)| async move {
            let result = state
                .link
                .run("read", timeout, |mut conn| async move {
                    scripts::versions(&mut conn, keyspace, shard, VersionsMode::Get, keys, log_len)
                        .await
                })
                .await;
            (shard, keys, result)
        });
        let mut found: HashMap<&str, Result<VersionStr, LinkError>> = HashMap::new();
        for (shard, keys, result) in futures::future::join_all(reads).await {
            match result {
                Ok((shard_state, versions)) => {
                    for (key, version) in keys.iter().zip(versions) {
                        state.mirror.learn(
                            shard,
                            &shard_state.epoch,
                            shard_state.seq,
                            key,
                            &version,
                        );
                        found.insert(key, Ok(VersionStr::from(version)));
                    }
                }
                Err(err) => {
                    for key in keys {
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
