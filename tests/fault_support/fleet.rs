//! A fleet of in-process sidecars on one test Redis (or cluster), each optionally behind its own
//! fault proxy, that tests can stop and restart on the same port; and the probes that decide
//! when the fleet has recovered from a fault. Every bump and check the fleet makes itself
//! (probes, bursts, the final sweep) is recorded in its history like the workload's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coherence_client::{CheckSource, Client, Consistency, Version};
use coherence_sidecar::process::config::Settings;
use coherence_sidecar::process::sidecar::StartError;
use coherence_testkit::{
    Await, RedisCluster, RedisProxy, RedisServer, TestSidecar, TestSidecarError,
};

use super::history::{BumpRecord, CheckAnswer, History, Limits, Read, ReadRecord, Via};
pub use coherence_testkit::fault_history::record::{
    record_bumps, record_checks, record_gets, record_mirror_check,
};

/// Settings every fault test starts from: short fences so that staleness matters and faults
/// are noticed quickly, a few shards so the 2-core test machine is not swamped by heartbeats.
pub fn fault_settings(redis_url: &str, server_id: &str) -> Settings {
    TestSidecar::builder(redis_url)
        .server_id(server_id)
        .namespace("faults")
        .settings(|s| {
            s.shards = 8;
            s.heartbeat_interval_ms = 50;
            s.max_staleness_ms = 300;
            s.check_deadline_ms = 250;
            s.request_timeout_ms = 1_000;
        })
        .into_settings()
}

/// `n` distinct keys that all fall into shard 0 (for bursts of one script call).
pub fn keys_of_one_shard(settings: &Settings, n: usize) -> Vec<String> {
    let keyspace =
        coherence_sidecar::redis::keyspace::Keyspace::new(&settings.namespace, settings.shards);
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
    pub sidecars: Vec<TestSidecar>,
    pub clients: Vec<Client>,
    /// The settings the sidecars share (each has its own server id, addresses and Redis URL).
    pub settings: Settings,
    /// Sidecar i's proxy, when it reaches Redis through one.
    pub proxies: Vec<Option<RedisProxy>>,
    /// Every operation on the fleet, the workload's included.
    pub history: Arc<History>,
    /// Each sidecar's own settings (its addresses once bound), to restart it as it was.
    own_settings: Vec<Settings>,
}

impl Fleet {
    /// Starts `n` sidecars on a fresh Redis; `tune` adjusts the settings they share.
    pub async fn start(n: usize, tune: impl Fn(&mut Settings)) -> Fleet {
        Fleet::start_on(Backend::Standalone(RedisServer::start()), n, tune).await
    }

    /// Starts `n` sidecars on a fresh Redis, those in `proxied` behind a proxy each.
    pub async fn start_proxied(n: usize, proxied: &[usize], tune: impl Fn(&mut Settings)) -> Fleet {
        let mut fleet = Fleet::empty(Backend::Standalone(RedisServer::start()), tune);
        for i in 0..n {
            let proxy = if proxied.contains(&i) {
                Some(RedisProxy::start(fleet.redis().port()).await)
            } else {
                None
            };
            fleet.add_sidecar(proxy).await;
        }
        fleet.assert_ready().await;
        fleet
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

    pub async fn start_on(backend: Backend, n: usize, tune: impl Fn(&mut Settings)) -> Fleet {
        let mut fleet = Fleet::empty(backend, tune);
        for _ in 0..n {
            fleet.add_sidecar(None).await;
        }
        fleet.assert_ready().await;
        fleet
    }

    /// A fleet without sidecars yet.
    fn empty(backend: Backend, tune: impl Fn(&mut Settings)) -> Fleet {
        let mut settings = fault_settings(&backend.url(), "s0");
        tune(&mut settings);
        Fleet {
            backend,
            sidecars: Vec::new(),
            clients: Vec::new(),
            settings,
            proxies: Vec::new(),
            history: Arc::new(History::default()),
            own_settings: Vec::new(),
        }
    }

    async fn assert_ready(&self) {
        assert!(
            self.wait_ready(Duration::from_secs(20)).await,
            "the fleet did not become ready"
        );
    }

    /// Starts one more sidecar (through `proxy` if given) and returns its index. It need not
    /// become ready: a test may hold its proxy closed.
    pub async fn add_sidecar(&mut self, proxy: Option<RedisProxy>) -> usize {
        let i = self.sidecars.len();
        let mut s = self.settings.clone();
        s.server_id = format!("s{i}");
        if let Some(proxy) = &proxy {
            s.redis_url = proxy.url();
        }
        let sidecar = start_sidecar(s.clone()).await;
        s.listen = sidecar.grpc_addr.into();
        s.admin_listen = sidecar.admin_addr;
        let client = Client::connect(sidecar.grpc_url())
            .await
            .expect("client connects")
            .with_timeout(Duration::from_secs(10));
        self.sidecars.push(sidecar);
        self.clients.push(client);
        self.proxies.push(proxy);
        self.own_settings.push(s);
        i
    }

    /// Sidecar `i`'s proxy (panics if it has none).
    pub fn proxy(&self, i: usize) -> &RedisProxy {
        self.proxies[i].as_ref().expect("this sidecar has no proxy")
    }

    /// Stops sidecar `i` (graceful shutdown), waits `down`, and starts it again on the same
    /// ports; returns once a call through its client succeeds again. Its checks may fail
    /// meanwhile: the history is told of the outage.
    pub async fn restart_sidecar(&mut self, i: usize, down: Duration) {
        self.restart_sidecar_with(i, down, |_| {}).await;
    }

    /// As [`Fleet::restart_sidecar`], running `while_down` on the Redis deployment once the
    /// sidecar has been down for `down` (a blocking call: restarting Redis, restoring a
    /// snapshot).
    pub async fn restart_sidecar_with(
        &mut self,
        i: usize,
        down: Duration,
        while_down: impl FnOnce(&mut Backend),
    ) {
        self.history.outage_begins(Via::Sidecar(i));
        let old = self.sidecars.remove(i);
        old.shutdown().await;
        // The length of the outage, not a synchronisation.
        tokio::time::sleep(down).await;
        tokio::task::block_in_place(|| while_down(&mut self.backend));
        let sidecar = start_sidecar(self.own_settings[i].clone()).await;
        self.sidecars.insert(i, sidecar);
        let client = &self.clients[i];
        let back = coherence_testkit::eventually(Duration::from_secs(20), || async {
            self.sidecars[i].is_ready() && client.get(&["restart-probe"]).await.is_ok()
        })
        .await;
        assert!(back, "sidecar {i} did not come back after its restart");
        self.history.outage_ends(Via::Sidecar(i));
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

    pub fn limits(&self) -> Limits {
        Limits {
            max_staleness: Duration::from_millis(self.settings.max_staleness_ms),
            check_deadline: Duration::from_millis(self.settings.check_deadline_ms),
            check_slack: Duration::from_millis(1_000),
            strong_by_completed_bumps: self.settings.read_lease_ms > 0,
        }
    }

    pub async fn wait_ready(&self, limit: Duration) -> bool {
        coherence_testkit::eventually(limit, || async {
            self.sidecars.iter().all(|s| s.is_ready())
        })
        .await
    }

    /// One recovery probe: every sidecar ready, a bump succeeds, and every sidecar then answers
    /// a default check of the new version "current" from its mirror (fenced again). Recorded.
    pub async fn probe_once(&self) -> bool {
        if !self.sidecars.iter().all(|s| s.is_ready()) {
            return false;
        }
        let Some(version) = self
            .bump(0, &["probe"])
            .await
            .ok()
            .and_then(|mut v| v.pop())
        else {
            return false;
        };
        coherence_testkit::eventually(Duration::from_secs(1), || async {
            for i in 0..self.clients.len() {
                match self.check(i, &[("probe", &version)], false).await {
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

    /// With read leases, every shard of a new namespace starts with a quarantine that its first
    /// bumps wait out (docs/design.md, "Read leases"): one bump per shard through every
    /// sidecar, before the workload, so that the phase before the fault is not spent waiting.
    pub async fn settle_lease_quarantines(&self) {
        if self.settings.read_lease_ms == 0 {
            return;
        }
        let keyspace = coherence_sidecar::redis::keyspace::Keyspace::new(
            &self.settings.namespace,
            self.settings.shards,
        );
        let mut keys: Vec<String> = Vec::new();
        for i in 0.. {
            if keys.len() == self.settings.shards as usize {
                break;
            }
            let key = format!("settle:{i}");
            if !keys
                .iter()
                .any(|k| keyspace.shard_of(k) == keyspace.shard_of(&key))
            {
                keys.push(key);
            }
        }
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        for i in 0..self.clients.len() {
            self.bump(i, &names)
                .await
                .expect("bump one key of every shard");
        }
    }

    /// Bumps `keys` through sidecar `i`, recorded.
    pub async fn bump(
        &self,
        i: usize,
        keys: &[&str],
    ) -> Result<Vec<Version>, coherence_client::Error> {
        let start = Instant::now();
        let result = self.clients[i].bump(keys).await;
        record_bumps(&self.history, keys, start, &[Via::Sidecar(i)], &result);
        result
    }

    /// Gets `keys` through sidecar `i`, recorded.
    pub async fn get(
        &self,
        i: usize,
        keys: &[&str],
        strong: bool,
    ) -> Result<Vec<Version>, coherence_client::Error> {
        let consistency = if strong {
            Consistency::Strong
        } else {
            Consistency::Bounded
        };
        let start = Instant::now();
        let result = self.clients[i].get_with(keys, consistency).await;
        record_gets(&self.history, Via::Sidecar(i), strong, keys, start, &result);
        result
    }

    /// Checks `entries` through sidecar `i`, recorded.
    pub async fn check(
        &self,
        i: usize,
        entries: &[(&str, &Version)],
        strong: bool,
    ) -> Result<Vec<coherence_client::CheckResult>, coherence_client::Error> {
        let consistency = if strong {
            Consistency::Strong
        } else {
            Consistency::Bounded
        };
        let start = Instant::now();
        let result = self.clients[i].check(entries, consistency).await;
        record_checks(
            &self.history,
            Via::Sidecar(i),
            strong,
            entries,
            start,
            &result,
        );
        result
    }

    /// The sum of a metric's samples (every label set) over the fleet.
    pub fn metric(&self, name: &str) -> f64 {
        self.sidecars.iter().map(|s| metric_of(s, name)).sum()
    }

    /// Strong-checks every superseded token the history has seen; each must be "not current"
    /// (judged with the rest of the history). Returns how many were checked.
    pub async fn sweep_superseded(&self) -> usize {
        let tokens = self.history.superseded_tokens();
        let through = 1 % self.clients.len();
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
            let _ = self.check(through, &entries, true).await;
        }
        tokens.len()
    }

    pub async fn shutdown(self) {
        for sidecar in self.sidecars {
            sidecar.shutdown().await;
        }
    }

    /// Bumps `keys` (all of one shard) through sidecar 0 in one call while Redis's pub/sub output
    /// buffer limit is tiny, so that subscribers are disconnected mid-burst. Returns the new
    /// versions (recorded, like every bump).
    pub async fn burst_with_tiny_pubsub_buffers(&self, keys: &[String]) -> Vec<Version> {
        let set_pubsub_limit = |limit: &str| {
            let _: () = self
                .redis()
                .cmd(&["CONFIG", "SET", "client-output-buffer-limit", limit])
                .expect("CONFIG SET");
        };
        set_pubsub_limit("pubsub 1kb 1kb 0");
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        let versions = self.bump(0, &names).await.expect("burst bump");
        set_pubsub_limit("pubsub 32mb 8mb 60");
        versions
    }
}

/// Starts a sidecar; retries a bind that fails because the previous holder of a fixed port
/// is still letting go of it.
async fn start_sidecar(settings: Settings) -> TestSidecar {
    let mut attempts = 0;
    loop {
        let start = TestSidecar::with_settings(settings.clone())
            .wait(Await::Started)
            .try_start();
        match start.await {
            Ok(sidecar) => return sidecar,
            Err(err @ TestSidecarError::Start(StartError::Bind { .. })) if attempts < 50 => {
                attempts += 1;
                eprintln!("retrying a sidecar start: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("sidecar {} does not start: {err}", settings.server_id),
        }
    }
}

/// The sum of a metric's samples (every label set) on one sidecar, from its Prometheus text.
pub fn metric_of(sidecar: &TestSidecar, name: &str) -> f64 {
    coherence_testkit::metric_sum(&sidecar.state.metrics.encode(), name)
}
