//! Fault-injection support: a small fleet of in-process sidecars on one test Redis, a mixed
//! workload that records every operation in a [`history::History`], and the probes that
//! decide when the fleet has recovered from a fault.
//!
//! Everything is real: a `redis-server` the test starts, sidecars listening on port 0, and the
//! workload talking to them through the gRPC client.

#![allow(dead_code)] // each test binary uses its own part of the support code

pub mod history;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coherence_client::{CheckSource, Client, Consistency, Version};
use coherence_sidecar::config::{Config, Settings};
use coherence_sidecar::Sidecar;
use coherence_testkit::{RedisCluster, RedisServer};

use history::{BumpRecord, CheckRecord, History, Limits};

/// Settings every fault test starts from: short fences so that staleness matters and faults
/// are noticed quickly, a few shards so the 2-core test machine is not swamped by heartbeats.
pub fn fault_settings(redis_url: &str, server_id: &str) -> Settings {
    let mut s = Config::defaults();
    s.redis_url = redis_url.to_string();
    s.listen = "127.0.0.1:0".parse().expect("address");
    s.admin_listen = "127.0.0.1:0".parse().expect("address");
    s.namespace = "faults".into();
    s.server_id = server_id.into();
    s.shards = 8;
    s.heartbeat_interval_ms = 50;
    s.max_staleness_ms = 300;
    s.check_deadline_ms = 250;
    s.request_timeout_ms = 1_000;
    s
}

/// `n` distinct keys that all fall into shard 0 (for bursts of one script call).
pub fn keys_of_one_shard(settings: &Settings, n: usize) -> Vec<String> {
    let keyspace = coherence_sidecar::keyspace::Keyspace::new(&settings.namespace, settings.shards);
    (0..)
        .map(|i| format!("burst:{i}"))
        .filter(|k| keyspace.shard_of(k) == 0)
        .take(n)
        .collect()
}

/// The Redis deployment a fleet runs on: the same workload and checker run on either.
pub enum Backend {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

impl Backend {
    fn url(&self) -> String {
        match self {
            Backend::Standalone(redis) => redis.url(),
            Backend::Cluster(cluster) => cluster.url(),
        }
    }
}

/// A test Redis (or cluster) and the sidecars (with a gRPC client each) that use it.
pub struct Fleet {
    pub backend: Backend,
    pub sidecars: Vec<Sidecar>,
    pub clients: Vec<Client>,
    pub settings: Settings,
}

impl Fleet {
    /// Starts `n` sidecars on a fresh Redis; `tune` adjusts the settings they share.
    pub async fn start(n: usize, tune: impl Fn(&mut Settings)) -> Fleet {
        Fleet::start_on(Backend::Standalone(RedisServer::start()), n, tune).await
    }

    /// Starts `n` sidecars on a fresh local cluster of `masters` masters with `replicas`
    /// replicas each.
    pub async fn start_cluster(
        masters: usize,
        replicas: usize,
        n: usize,
        tune: impl Fn(&mut Settings),
    ) -> Fleet {
        let cluster = tokio::task::block_in_place(|| RedisCluster::start(masters, replicas));
        Fleet::start_on(Backend::Cluster(cluster), n, tune).await
    }

    /// The standalone Redis (for faults that only exist there).
    pub fn redis(&self) -> &RedisServer {
        match &self.backend {
            Backend::Standalone(redis) => redis,
            Backend::Cluster(_) => panic!("a standalone-only fault on a cluster fleet"),
        }
    }

    pub fn redis_mut(&mut self) -> &mut RedisServer {
        match &mut self.backend {
            Backend::Standalone(redis) => redis,
            Backend::Cluster(_) => panic!("a standalone-only fault on a cluster fleet"),
        }
    }

    pub fn cluster_mut(&mut self) -> &mut RedisCluster {
        match &mut self.backend {
            Backend::Cluster(cluster) => cluster,
            Backend::Standalone(_) => panic!("a cluster fault on a standalone fleet"),
        }
    }

    pub async fn start_on(backend: Backend, n: usize, tune: impl Fn(&mut Settings)) -> Fleet {
        let mut settings = fault_settings(&backend.url(), "s0");
        tune(&mut settings);
        let mut sidecars = Vec::new();
        let mut clients = Vec::new();
        for i in 0..n {
            let mut s = settings.clone();
            s.server_id = format!("s{i}");
            let sidecar = Sidecar::start(Config::validate(s).expect("valid settings"))
                .await
                .expect("sidecar starts");
            let client = Client::connect(format!("http://{}", sidecar.grpc_addr))
                .await
                .expect("client connects")
                .with_timeout(Duration::from_secs(10));
            sidecars.push(sidecar);
            clients.push(client);
        }
        let fleet = Fleet {
            backend,
            sidecars,
            clients,
            settings,
        };
        assert!(
            fleet.wait_ready(Duration::from_secs(20)).await,
            "the fleet did not become ready"
        );
        fleet
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_staleness: Duration::from_millis(self.settings.max_staleness_ms),
            check_deadline: Duration::from_millis(self.settings.check_deadline_ms),
            check_slack: Duration::from_millis(1_000),
        }
    }

    pub async fn wait_ready(&self, limit: Duration) -> bool {
        coherence_testkit::eventually(limit, || async {
            self.sidecars.iter().all(|s| s.state.is_ready())
        })
        .await
    }

    /// One recovery probe: every sidecar ready, a bump succeeds, and every sidecar then answers
    /// a default check of the new version "current" from its mirror (fenced again).
    pub async fn probe_once(&self) -> bool {
        if !self.sidecars.iter().all(|s| s.state.is_ready()) {
            return false;
        }
        let Ok(versions) = self.clients[0].bump(&["probe"]).await else {
            return false;
        };
        let Some(version) = versions.into_iter().next() else {
            return false;
        };
        coherence_testkit::eventually(Duration::from_secs(1), || async {
            for client in &self.clients {
                match client
                    .check(&[("probe", &version)], Consistency::Bounded)
                    .await
                {
                    Ok(r) if r[0].current && r[0].source == CheckSource::Mirror => {}
                    _ => return false,
                }
            }
            true
        })
        .await
    }

    /// How long until the fleet passes [`Fleet::probe_once`], if within `limit`.
    pub async fn wait_recovered(&self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.probe_once().await {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// The sum of a metric's samples (every label set) over the fleet.
    pub fn metric(&self, name: &str) -> f64 {
        self.sidecars.iter().map(|s| metric_of(s, name)).sum()
    }

    /// Strong-checks every superseded token the history has seen; each must be "not current".
    /// Returns how many were checked.
    pub async fn sweep_superseded(&self, history: &History) -> usize {
        let tokens = history.superseded_tokens();
        for chunk in tokens.chunks(200) {
            let versions: Vec<Version> = chunk
                .iter()
                .map(|(_, t)| Version::from_token(t.clone()))
                .collect();
            let entries: Vec<(&str, &Version)> = chunk
                .iter()
                .zip(&versions)
                .map(|((k, _), v)| (k.as_str(), v))
                .collect();
            let start = Instant::now();
            let answer = self.clients[1 % self.clients.len()]
                .check(&entries, Consistency::Strong)
                .await;
            let end = Instant::now();
            for (i, (key, token)) in chunk.iter().enumerate() {
                history.record_check(CheckRecord {
                    key: key.clone(),
                    token: token.clone(),
                    strong: true,
                    start,
                    end,
                    answer: match &answer {
                        Ok(results) => Ok((results[i].current, results[i].source)),
                        Err(err) => Err(err.to_string()),
                    },
                });
            }
        }
        tokens.len()
    }

    pub async fn shutdown(self) {
        for sidecar in self.sidecars {
            sidecar.shutdown().await;
        }
    }

    /// Bumps `keys` (all of one shard) through sidecar 0 in one call while Redis's pub/sub output
    /// buffer limit is tiny, so that subscribers are disconnected mid-burst. Returns the new versions.
    pub async fn burst_with_tiny_pubsub_buffers(&self, keys: &[String]) -> Vec<Version> {
        let set_pubsub_limit = |limit: &str| {
            let _: () = self
                .redis()
                .cmd(&["CONFIG", "SET", "client-output-buffer-limit", limit])
                .expect("CONFIG SET");
        };
        set_pubsub_limit("pubsub 1kb 1kb 0");
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        let versions = self.clients[0].bump(&names).await.expect("burst bump");
        set_pubsub_limit("pubsub 32mb 8mb 60");
        versions
    }
}

/// The sum of a metric's samples (every label set) on one sidecar, from its Prometheus text.
pub fn metric_of(sidecar: &Sidecar, name: &str) -> f64 {
    sidecar
        .state
        .metrics
        .encode()
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Keys that get half of the workload's traffic.
const HOT_KEYS: usize = 8;

/// A tiny xorshift generator: the workload needs cheap randomness, not quality.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
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
    fn remember(&self, key: usize, token: String) {
        let mut t = self.tokens[key].lock().unwrap_or_else(|p| p.into_inner());
        if !t.contains(&token) {
            t.push(token);
            if t.len() > 4 {
                t.remove(0);
            }
        }
    }

    /// Mostly the newest token (the one a racing bump is about to supersede), sometimes older.
    fn pick(&self, key: usize, rng: &mut Rng) -> Option<String> {
        let t = self.tokens[key].lock().unwrap_or_else(|p| p.into_inner());
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

/// A running mixed workload: bumps, gets and checks (default and strong) of `keys` keys through
/// every sidecar, all recorded in `history`.
pub struct Workload {
    pub history: Arc<History>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    pub async fn start(fleet: &Fleet, keys: usize) -> Workload {
        let history = Arc::new(History::default());
        let pool = Arc::new(Pool {
            keys: (0..keys).map(|i| format!("key:{i}")).collect(),
            tokens: (0..keys).map(|_| Mutex::new(Vec::new())).collect(),
        });
        // Seed every key with a token so checkers have something to check from the start.
        let names: Vec<&str> = pool.keys.iter().map(String::as_str).collect();
        let seeded = fleet.clients[0].get(&names).await.expect("seed the keys");
        let now = Instant::now();
        for (i, v) in seeded.into_iter().enumerate() {
            history.saw(&pool.keys[i], v.token(), now);
            pool.remember(i, v.token().to_string());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let spawn_role = |role: Role, seed: u64, tasks: &mut Vec<_>| {
            let ctx = WorkerCtx {
                clients: fleet.clients.clone(),
                history: Arc::clone(&history),
                pool: Arc::clone(&pool),
                stop: Arc::clone(&stop),
                rng: Rng::new(seed),
            };
            tasks.push(tokio::spawn(ctx.run(role)));
        };
        for seed in 0..2 {
            spawn_role(Role::Bumper, seed + 1, &mut tasks);
        }
        spawn_role(Role::Getter, 11, &mut tasks);
        for seed in 0..5 {
            spawn_role(Role::Checker, seed + 21, &mut tasks);
        }
        Workload {
            history,
            stop,
            tasks,
        }
    }

    /// Stops the workers and waits for their last operations.
    pub async fn stop(self) -> Arc<History> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = task.await;
        }
        self.history
    }
}

#[derive(Clone, Copy)]
enum Role {
    Bumper,
    Getter,
    Checker,
}

struct WorkerCtx {
    clients: Vec<Client>,
    history: Arc<History>,
    pool: Arc<Pool>,
    stop: Arc<AtomicBool>,
    rng: Rng,
}

impl WorkerCtx {
    async fn run(mut self, role: Role) {
        while !self.stop.load(Ordering::SeqCst) {
            // Half of the traffic goes to a few hot keys, so that checks often race the bump
            // that supersedes their token — the case the checker is about.
            let key = if self.rng.chance(50) {
                self.rng.below(HOT_KEYS.min(self.pool.keys.len()))
            } else {
                self.rng.below(self.pool.keys.len())
            };
            let client = self.clients[self.rng.below(self.clients.len())].clone();
            match role {
                Role::Bumper => self.bump(&client, key).await,
                Role::Getter => self.get(&client, key).await,
                Role::Checker => self.check(&client, key).await,
            }
            // Pacing keeps the noisy 2-core machine responsive; it synchronises nothing.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn bump(&mut self, client: &Client, key: usize) {
        let name = &self.pool.keys[key];
        let start = Instant::now();
        let result = client.bump(&[name.as_str()]).await;
        let end = Instant::now();
        let version = result.ok().and_then(|v| v.into_iter().next());
        if let Some(v) = &version {
            self.pool.remember(key, v.token().to_string());
        }
        self.history.record_bump(BumpRecord {
            key: name.clone(),
            start,
            end,
            version: version.map(|v| v.token().to_string()),
        });
    }

    async fn get(&mut self, client: &Client, key: usize) {
        let name = &self.pool.keys[key];
        let result = client.get(&[name.as_str()]).await;
        let end = Instant::now();
        self.history.record_get(result.is_ok());
        if let Some(v) = result.ok().and_then(|v| v.into_iter().next()) {
            self.history.saw(name, v.token(), end);
            self.pool.remember(key, v.token().to_string());
        }
    }

    async fn check(&mut self, client: &Client, key: usize) {
        let Some(token) = self.pool.pick(key, &mut self.rng) else {
            return;
        };
        let name = &self.pool.keys[key];
        let strong = self.rng.chance(30);
        let consistency = if strong {
            Consistency::Strong
        } else {
            Consistency::Bounded
        };
        let version = Version::from_token(token.clone());
        let start = Instant::now();
        let result = client
            .check(&[(name.as_str(), &version)], consistency)
            .await;
        let end = Instant::now();
        let answer = match result {
            Ok(results) => {
                let r = &results[0];
                if let Some(v) = &r.version {
                    self.history.saw(name, v.token(), end);
                    self.pool.remember(key, v.token().to_string());
                }
                Ok((r.current, r.source))
            }
            Err(err) => Err(err.to_string()),
        };
        self.history.record_check(CheckRecord {
            key: name.clone(),
            token,
            strong,
            start,
            end,
            answer,
        });
    }
}
