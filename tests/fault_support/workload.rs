//! The mixed workload of the fault suite, recorded in the fleet's history: bumps, gets and
//! checks (bounded and strong, single- and multi-key) through every sidecar; racers that bump
//! through one sidecar and at once check the old version through another; a client mirror
//! ([`MirroredClient`]) per sidecar with its own reader; and coherent caches
//! ([`CoherentCache`]) reading and writing a simulated source of truth.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coherence_client::{
    Client, CoherentCache, Consistency, MirrorOptions, MirrorStats, MirroredClient, Version,
};

use super::fleet::{record_bumps, record_checks, record_gets, record_mirror_check, Fleet};
use super::history::{BumpRecord, DataRead, DataWrite, History, Report, Via};

/// Keys that get half of the workload's traffic.
const HOT_KEYS: usize = 8;
/// Items of the simulated source of truth behind the coherent caches.
const ITEMS: usize = 16;
/// Coherent caches (over the first client mirrors).
const CACHES: usize = 2;

/// What runs besides the raw gRPC workers.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadOptions {
    pub keys: usize,
    /// A client mirror per sidecar, each with a reader.
    pub mirrors: bool,
    /// Coherent caches over the first mirrors, a reader each and one writer.
    pub caches: bool,
}

impl WorkloadOptions {
    pub fn new(keys: usize) -> WorkloadOptions {
        WorkloadOptions {
            keys,
            mirrors: true,
            caches: true,
        }
    }
}

/// A tiny xorshift generator: the workload needs cheap randomness, not quality.
struct Rng(u64);

impl Rng {
    fn new(id: u64) -> Rng {
        Rng(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// The last few tokens seen per key, for checkers to pick from.
struct Pool {
    keys: Vec<String>,
    tokens: Vec<Mutex<Vec<String>>>,
}

impl Pool {
    fn lock(&self, key: usize) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.tokens[key].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, key: usize, token: &str) {
        let mut t = self.lock(key);
        if !t.iter().any(|known| known == token) {
            t.push(token.to_string());
            if t.len() > 4 {
                t.remove(0);
            }
        }
    }

    fn newest(&self, key: usize) -> Option<String> {
        self.lock(key).last().cloned()
    }

    /// Mostly the newest token (the one a racing bump is about to supersede), sometimes older.
    fn pick(&self, key: usize, rng: &mut Rng) -> Option<String> {
        let t = self.lock(key);
        if t.is_empty() {
            return None;
        }
        let i = if rng.chance(70) {
            t.len() - 1
        } else {
            rng.below(t.len())
        };
        Some(t[i].clone())
    }
}

/// A running workload on a fleet.
pub struct Workload {
    pub history: Arc<History>,
    pub mirrors: Vec<MirroredClient>,
    caches: Vec<CoherentCache<usize, u64>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<(String, tokio::task::JoinHandle<()>)>,
}

/// Options of a client mirror as the workload attaches it: bounded by the sidecar's
/// `max_staleness`, quick to notice a silent stream and to reconnect, 5 % of its local current
/// answers handed to the sidecar's auditor.
pub fn mirror_options(max_staleness: Duration) -> MirrorOptions {
    MirrorOptions::default()
        .max_staleness(max_staleness)
        .idle_timeout(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        // Audited more than by default, so that a fault run judges a few hundred of them.
        .audit_sample_rate(0.05)
}

/// A client mirror over `client` with [`mirror_options`].
pub fn mirror_of(client: &Client, max_staleness: Duration) -> MirroredClient {
    client
        .clone()
        .with_timeout(Duration::from_secs(2))
        .with_mirror(mirror_options(max_staleness))
}

impl Workload {
    pub async fn start(fleet: &Fleet, keys: usize) -> Workload {
        Workload::start_with(fleet, WorkloadOptions::new(keys)).await
    }

    pub async fn start_with(fleet: &Fleet, options: WorkloadOptions) -> Workload {
        let history = Arc::clone(&fleet.history);
        let pool = Arc::new(Pool {
            keys: (0..options.keys).map(|i| format!("key:{i}")).collect(),
            tokens: (0..options.keys).map(|_| Mutex::new(Vec::new())).collect(),
        });
        // Give every key a token so checkers have something to check from the start.
        let names: Vec<&str> = pool.keys.iter().map(String::as_str).collect();
        let start = Instant::now();
        let first = fleet.clients[0].get(&names).await;
        record_gets(&history, Via::Sidecar(0), false, &names, start, &first);
        for (i, v) in first
            .expect("a first version of every key")
            .iter()
            .enumerate()
        {
            pool.remember(i, v.token());
        }
        let max_staleness = fleet.limits().max_staleness;
        let mirrors: Vec<MirroredClient> = if options.mirrors {
            fleet
                .clients
                .iter()
                .map(|c| mirror_of(c, max_staleness))
                .collect()
        } else {
            Vec::new()
        };
        // Cache c is over mirror c (and so sidecar c).
        let caches: Vec<CoherentCache<usize, u64>> = if options.caches {
            mirrors
                .iter()
                .take(CACHES)
                .map(|m| CoherentCache::new(m.clone(), |id: &usize| item_key(*id)))
                .collect()
        } else {
            Vec::new()
        };
        let db = Arc::new((0..ITEMS).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let mut spawn = |role: Role, id: u64| {
            let ctx = Ctx {
                clients: fleet.clients.clone(),
                mirrors: mirrors.clone(),
                caches: caches.clone(),
                db: Arc::clone(&db),
                history: Arc::clone(&history),
                pool: Arc::clone(&pool),
                stop: Arc::clone(&stop),
                rng: Rng::new(id),
            };
            tasks.push((format!("{role:?}#{id}"), tokio::spawn(ctx.run(role))));
        };
        for id in 0..2 {
            spawn(Role::Bumper, id + 1);
        }
        spawn(Role::Getter, 11);
        for id in 0..5 {
            spawn(Role::Checker, id + 21);
        }
        if fleet.clients.len() > 1 {
            spawn(Role::Racer, 31);
        }
        for j in 0..mirrors.len() {
            spawn(Role::MirrorReader(j), 41 + j as u64);
        }
        for c in 0..caches.len() {
            spawn(Role::CacheReader(c), 51 + c as u64);
        }
        if !caches.is_empty() {
            spawn(Role::CacheWriter, 61);
        }
        Workload {
            history,
            mirrors,
            caches,
            stop,
            tasks,
        }
    }

    /// Every source this workload reads through, for per-source floors.
    pub fn sources(&self, sidecars: usize) -> Vec<Via> {
        (0..sidecars)
            .map(Via::Sidecar)
            .chain((0..self.mirrors.len()).map(Via::Mirror))
            .chain((0..self.caches.len()).map(Via::Cache))
            .collect()
    }

    /// The client mirrors' and caches' counters, for the printed figures.
    pub fn client_stats(&self) -> String {
        let mirrors: Vec<MirrorStats> = self.mirrors.iter().map(|m| m.stats()).collect();
        let local: u64 = mirrors.iter().map(|s| s.hits).sum();
        let remote: u64 = mirrors.iter().map(|s| s.misses).sum();
        let resyncs: u64 = mirrors.iter().map(|s| s.resyncs).sum();
        let strong_local = self.mirror_strong_local();
        let caches: Vec<String> = self
            .caches
            .iter()
            .map(|c| {
                let s = c.stats();
                format!("{} hits / {} loads / {} stale", s.hits, s.loads, s.stale)
            })
            .collect();
        format!(
            "client mirrors: {local} local / {remote} remote answers ({strong_local} strong under a lease), {resyncs} resyncs; caches: {caches:?}"
        )
    }

    /// Strong checks the client mirrors answered locally under a read lease.
    pub fn mirror_strong_local(&self) -> u64 {
        self.mirrors.iter().map(|m| m.stats().strong_hits).sum()
    }

    /// Stops the workload, strong-checks every superseded token once more through `fleet`
    /// (phase `sweep`), and judges the whole history.
    pub async fn judge(self, fleet: &Fleet) -> Judged {
        let sources = self.sources(fleet.sidecars.len());
        let client_stats = self.client_stats();
        let mirror_strong_local = self.mirror_strong_local();
        let history = self.stop().await;
        history.begin_phase("sweep");
        let swept = fleet.sweep_superseded().await;
        Judged {
            report: history.analyse(&fleet.limits()),
            sources,
            client_stats,
            mirror_strong_local,
            swept,
        }
    }

    /// Stops the workers and waits for their last operations; a worker that panicked is a
    /// failure of the run (recorded in the history).
    pub async fn stop(self) -> Arc<History> {
        self.stop.store(true, Ordering::SeqCst);
        for (name, task) in self.tasks {
            if let Err(err) = task.await {
                let why = if err.is_panic() {
                    let panic = err.into_panic();
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic".into())
                } else {
                    err.to_string()
                };
                self.history
                    .record_failure(format!("worker {name} died: {why}"));
            }
        }
        self.history
    }
}

/// What a finished workload showed.
pub struct Judged {
    pub report: Report,
    /// Every source the workload read through (for per-source floors).
    pub sources: Vec<Via>,
    /// The client mirrors' and caches' counters, printed.
    pub client_stats: String,
    /// Strong checks the client mirrors answered locally under a read lease.
    pub mirror_strong_local: u64,
    /// Superseded tokens strong-checked at the end.
    pub swept: usize,
}

fn item_key(item: usize) -> String {
    format!("item:{item}")
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Bumper,
    Getter,
    Checker,
    Racer,
    MirrorReader(usize),
    CacheReader(usize),
    CacheWriter,
}

struct Ctx {
    clients: Vec<Client>,
    mirrors: Vec<MirroredClient>,
    caches: Vec<CoherentCache<usize, u64>>,
    db: Arc<Vec<AtomicU64>>,
    history: Arc<History>,
    pool: Arc<Pool>,
    stop: Arc<AtomicBool>,
    rng: Rng,
}

fn consistency(strong: bool) -> Consistency {
    if strong {
        Consistency::Strong
    } else {
        Consistency::Bounded
    }
}

impl Ctx {
    async fn run(mut self, role: Role) {
        while !self.stop.load(Ordering::SeqCst) {
            match role {
                Role::Bumper => self.bump().await,
                Role::Getter => self.get().await,
                Role::Checker => self.check().await,
                Role::Racer => self.race().await,
                Role::MirrorReader(j) => self.mirror_op(j).await,
                Role::CacheReader(c) => self.cache_read(c).await,
                Role::CacheWriter => self.cache_write().await,
            }
            // Pacing keeps the noisy 2-core machine responsive; it synchronises nothing.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Half of the traffic goes to a few hot keys, so that checks often race the bump that
    /// supersedes their token — the case the checker is about.
    fn key(&mut self) -> usize {
        if self.rng.chance(50) {
            self.rng.below(HOT_KEYS.min(self.pool.keys.len()))
        } else {
            self.rng.below(self.pool.keys.len())
        }
    }

    /// 1 key, or (`multi` percent of the time) 2 to 4 distinct ones.
    fn keys(&mut self, multi: usize) -> Vec<usize> {
        let n = if self.rng.chance(multi) {
            2 + self.rng.below(3)
        } else {
            1
        };
        let mut keys = Vec::with_capacity(n);
        while keys.len() < n {
            let k = self.key();
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
    }

    fn names(&self, keys: &[usize]) -> Vec<&str> {
        keys.iter().map(|k| self.pool.keys[*k].as_str()).collect()
    }

    fn sidecar(&mut self) -> usize {
        self.rng.below(self.clients.len())
    }

    /// Bumps through one sidecar, then checks the first key's previous version through the
    /// same sidecar at once: its own write must already be visible.
    async fn bump(&mut self) {
        let i = self.sidecar();
        let keys = self.keys(30);
        let old = self.pool.newest(keys[0]);
        let bumped = self.bump_through(i, &keys).await;
        if let (true, Some(old)) = (bumped, old) {
            self.check_through(i, &[(keys[0], old)], false).await;
        }
    }

    async fn bump_through(&mut self, i: usize, keys: &[usize]) -> bool {
        let names = self.names(keys);
        let start = Instant::now();
        let result = self.clients[i].bump(&names).await;
        record_bumps(&self.history, &names, start, &[Via::Sidecar(i)], &result);
        self.remember(keys, &result)
    }

    fn remember(
        &self,
        keys: &[usize],
        result: &Result<Vec<Version>, coherence_client::Error>,
    ) -> bool {
        match result {
            Ok(versions) => {
                for (k, v) in keys.iter().zip(versions) {
                    self.pool.remember(*k, v.token());
                }
                true
            }
            Err(_) => false,
        }
    }

    async fn get(&mut self) {
        let i = self.sidecar();
        let keys = self.keys(30);
        let strong = self.rng.chance(20);
        let names = self.names(&keys);
        let start = Instant::now();
        let result = self.clients[i].get_with(&names, consistency(strong)).await;
        record_gets(
            &self.history,
            Via::Sidecar(i),
            strong,
            &names,
            start,
            &result,
        );
        self.remember(&keys, &result);
    }

    async fn check(&mut self) {
        let i = self.sidecar();
        let strong = self.rng.chance(30);
        let entries: Vec<(usize, String)> = self
            .keys(30)
            .into_iter()
            .filter_map(|k| Some((k, self.pool.pick(k, &mut self.rng)?)))
            .collect();
        if !entries.is_empty() {
            self.check_through(i, &entries, strong).await;
        }
    }

    async fn check_through(&mut self, i: usize, entries: &[(usize, String)], strong: bool) {
        let versions: Vec<Version> = entries
            .iter()
            .map(|(_, t)| Version::from_token(t.clone()))
            .collect();
        let names: Vec<&str> = entries
            .iter()
            .map(|(k, _)| self.pool.keys[*k].as_str())
            .collect();
        let pairs: Vec<(&str, &Version)> = names.iter().copied().zip(&versions).collect();
        let start = Instant::now();
        let result = self.clients[i].check(&pairs, consistency(strong)).await;
        record_checks(
            &self.history,
            Via::Sidecar(i),
            strong,
            &pairs,
            start,
            &result,
        );
        if let Ok(results) = &result {
            for ((k, _), r) in entries.iter().zip(results) {
                if let Some(v) = &r.version {
                    self.pool.remember(*k, v.token());
                }
            }
        }
    }

    /// Bumps a hot key through one sidecar and at once checks its previous version through
    /// another (its sidecar or its client mirror): how long invalidations take to arrive.
    async fn race(&mut self) {
        let key = self.rng.below(HOT_KEYS.min(self.pool.keys.len()));
        let Some(old) = self.pool.newest(key) else {
            return;
        };
        let a = self.sidecar();
        let b = (a + 1 + self.rng.below(self.clients.len() - 1)) % self.clients.len();
        if !self.bump_through(a, &[key]).await {
            return;
        }
        if !self.mirrors.is_empty() && self.rng.chance(50) {
            self.mirror_check(b, key, old, false).await;
        } else {
            self.check_through(b, &[(key, old)], false).await;
        }
    }

    async fn mirror_check(&mut self, j: usize, key: usize, token: String, strong: bool) {
        let version = Version::from_token(token.clone());
        let name = &self.pool.keys[key];
        let start = Instant::now();
        let current = self.mirrors[j]
            .is_current_with(name, &version, consistency(strong))
            .await;
        record_mirror_check(
            &self.history,
            Via::Mirror(j),
            strong,
            name,
            &token,
            start,
            current,
        );
    }

    /// One operation through client mirror `j`: mostly local checks, some strong ones, gets
    /// (which fill the mirror), and bumps followed at once by a check of the old version.
    async fn mirror_op(&mut self, j: usize) {
        let via = Via::Mirror(j);
        let roll = self.rng.below(100);
        if roll < 60 {
            let key = self.key();
            if let Some(token) = self.pool.pick(key, &mut self.rng) {
                self.mirror_check(j, key, token, roll >= 50).await;
            }
        } else if roll < 75 {
            let key = self.key();
            let name = self.pool.keys[key].clone();
            let start = Instant::now();
            let result = self.mirrors[j].get_one(&name).await.map(|v| vec![v]);
            record_gets(&self.history, via, false, &[name.as_str()], start, &result);
            self.remember(&[key], &result);
        } else if roll < 85 {
            let keys = self.keys(100);
            let names = self.names(&keys);
            let start = Instant::now();
            let result = self.mirrors[j].get_with(&names, Consistency::Strong).await;
            record_gets(&self.history, via, true, &names, start, &result);
            self.remember(&keys, &result);
        } else {
            let keys = self.keys(30);
            let old = self.pool.newest(keys[0]);
            let names = self.names(&keys);
            let start = Instant::now();
            let result = self.mirrors[j].bump(&names).await;
            record_bumps(
                &self.history,
                &names,
                start,
                &[via, Via::Sidecar(j)],
                &result,
            );
            if let (true, Some(old)) = (self.remember(&keys, &result), old) {
                self.mirror_check(j, keys[0], old, false).await;
            }
        }
    }

    /// Reads an item through coherent cache `c`; the loader reads the source of truth.
    async fn cache_read(&mut self, c: usize) {
        let item = self.rng.below(ITEMS);
        let strong = self.rng.chance(15);
        let db = Arc::clone(&self.db);
        let start = Instant::now();
        let value = self.caches[c]
            .get_or_load_with(item, consistency(strong), move || {
                let value = db[item].load(Ordering::SeqCst);
                async move { Ok::<u64, Infallible>(value) }
            })
            .await;
        let end = Instant::now();
        if let Ok(value) = value {
            self.history.record_data_read(DataRead {
                key: item_key(item),
                value,
                via: Via::Cache(c),
                strong,
                start,
                end,
            });
        }
    }

    /// Writes an item to the source of truth, then invalidates it through a coherent cache.
    async fn cache_write(&mut self) {
        let c = self.rng.below(self.caches.len());
        let item = self.rng.below(ITEMS);
        let value = self.db[item].fetch_add(1, Ordering::SeqCst) + 1;
        let start = Instant::now();
        let report = self.caches[c].invalidate_after_write(&[item]).await;
        let end = Instant::now();
        let complete = report.is_complete();
        self.history.record_write(DataWrite {
            key: item_key(item),
            value,
            via: Via::Cache(c),
            bumped: complete.then_some(end),
        });
        self.history.record_bump(BumpRecord {
            key: item_key(item),
            start,
            end,
            via: vec![Via::Cache(c), Via::Mirror(c), Via::Sidecar(c)],
            outcome: if complete {
                Ok(None)
            } else {
                Err(format!("{:?}", report.last_error))
            },
        });
    }
}
