//! The sidecar's command connection to Redis, verified before it is used.
//!
//! Every new connection is checked before any command runs on it: Redis must not be able to
//! evict keys that have no time to live (its `maxmemory-policy`; docs/design.md says why). (A restarted or failed-over Redis that went
//! back in time is caught by `versions/shard.lua` itself, on every call, against the run id read
//! when the connection was opened.) Until a verified connection exists, [`RedisLink::run`]
//! answers [`LinkError::Unavailable`] at once, which callers turn into a fail-closed answer.
//! Reconnection happens in the background with exponential backoff; the library's own silent
//! reconnection is deliberately not used.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::{AsyncConnectionConfig, RedisResult};
use tokio::sync::{watch, Notify};

use crate::metrics::Metrics;
use crate::redis::config::RedisConfig;
use crate::redis::scripts::{ScriptCall, ScriptRunner};
use crate::redis::target::{CommandConnection, RedisTarget};

/// Why a Redis operation did not produce an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis error: {0}")]
    Command(#[from] redis::RedisError),
}

/// Why a new connection was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("redis maxmemory-policy is {0}, which can evict keys that must not expire: a shard's epoch or sequence (every eviction then drops every mirror of the fleet) and jobs' per-period run records (a job could run twice in one period); set it to noeviction (or a volatile-* policy), or pass --allow-evicting-policy=true to accept that")]
    EvictingPolicy(String),
}

/// A shared handle to the verified command connection.
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

struct Inner {
    target: RedisTarget,
    url_for_logs: String,
    allow_evicting_policy: bool,
    scripts: ScriptRunner,
    metrics: Metrics,
    current: RwLock<Option<Verified>>,
    broken: Notify,
    ever_connected: AtomicBool,
    connected_tx: watch::Sender<bool>,
}

#[derive(Clone)]
struct Verified {
    conn: CommandConnection,
    generation: u64,
}

impl RedisLink {
    /// A link to the Redis `config` names (with its credentials and TLS roots).
    pub fn new(config: &RedisConfig, metrics: Metrics) -> RedisLink {
        let (connected_tx, _) = watch::channel(false);
        RedisLink {
            inner: Arc::new(Inner {
                target: config.target.clone(),
                url_for_logs: config.url_for_logs.clone(),
                allow_evicting_policy: config.allow_evicting_policy,
                scripts: ScriptRunner::new(config.scripts),
                metrics,
                current: RwLock::new(None),
                broken: Notify::new(),
                ever_connected: AtomicBool::new(false),
                connected_tx,
            }),
        }
    }

    /// The Redis deployment, for connections of other kinds (the subscription).
    pub fn target(&self) -> &RedisTarget {
        &self.inner.target
    }

    /// How scripts run on this link (and whether Redis has the Functions library).
    pub fn scripts(&self) -> &ScriptRunner {
        &self.inner.scripts
    }

    /// Runs one script call (see [`RedisLink::run`]).
    pub async fn run_script<T: redis::FromRedisValue>(
        &self,
        name: &'static str,
        timeout: Duration,
        call: ScriptCall,
    ) -> Result<T, LinkError> {
        let scripts = self.scripts();
        self.run(name, timeout, |mut conn| async move {
            scripts.run(&call, &mut conn).await
        })
        .await
    }

    pub fn is_connected(&self) -> bool {
        self.read_current().is_some()
    }

    /// Waits until a verified connection exists (or `timeout` passes).
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.connected_tx.subscribe();
        let connected = async move { rx.wait_for(|up| *up).await.is_ok() };
        tokio::time::timeout(timeout, connected)
            .await
            .unwrap_or(false)
    }

    fn read_current(&self) -> Option<Verified> {
        match self.inner.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_current(&self, value: Option<Verified>) {
        let up = value.is_some();
        match self.inner.current.write() {
            Ok(mut guard) => *guard = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
        self.inner.metrics.set_connected("command", up);
        self.inner.connected_tx.send_replace(up);
    }

    /// Runs `op` on the verified connection within `timeout`, recording its latency under
    /// `name`. A connection-level failure drops the connection and wakes the reconnect loop.
    pub async fn run<T, F, Fut>(
        &self,
        name: &'static str,
        timeout: Duration,
        op: F,
    ) -> Result<T, LinkError>
    where
        F: FnOnce(CommandConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(verified) = self.read_current() else {
            return Err(LinkError::Unavailable(
                "no verified connection to redis".into(),
            ));
        };
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, op(verified.conn)).await;
        let took = started.elapsed();
        match result {
            Ok(Ok(value)) => {
                self.inner.metrics.observe_redis(name, took, true);
                Ok(value)
            }
            Ok(Err(err)) => {
                self.inner.metrics.observe_redis(name, took, false);
                // READONLY: we are talking to a master that was demoted by a failover.
                if err.is_io_error()
                    || err.is_connection_dropped()
                    || err.is_unrecoverable_error()
                    || err.code() == Some("READONLY")
                {
                    self.mark_broken(verified.generation, &err);
                }
                Err(LinkError::Command(err))
            }
            Err(_) => {
                self.inner.metrics.observe_redis(name, took, false);
                Err(LinkError::Timeout(timeout))
            }
        }
    }

    fn mark_broken(&self, generation: u64, err: &redis::RedisError) {
        let mut dropped = false;
        if let Ok(mut guard) = self.inner.current.write() {
            if guard.as_ref().map(|v| v.generation) == Some(generation) {
                *guard = None;
                dropped = true;
            }
        }
        if dropped {
            tracing::warn!(error = %err, "redis command connection lost; reconnecting");
            self.inner.metrics.set_connected("command", false);
            self.inner.connected_tx.send_replace(false);
            self.inner.broken.notify_one();
        }
    }

    /// Keeps a verified connection available until `shutdown` turns true.
    pub async fn supervise(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(50);
        let mut generation = 0u64;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if self.is_connected() {
                tokio::select! {
                    _ = self.inner.broken.notified() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            match self.connect_and_verify().await {
                Ok(conn) => {
                    generation += 1;
                    if self.inner.ever_connected.swap(true, Ordering::SeqCst) {
                        self.inner
                            .metrics
                            .redis_reconnects
                            .get_or_create(&[("connection", "command")])
                            .inc();
                    }
                    tracing::info!(redis = %self.inner.url_for_logs, "redis command connection verified");
                    self.set_current(Some(Verified { conn, generation }));
                    backoff = Duration::from_millis(50);
                }
                Err(err) => {
                    if matches!(err, VerifyError::EvictingPolicy(_)) {
                        tracing::error!(redis = %self.inner.url_for_logs, error = %err, retry_in = ?backoff, "refusing redis; failing closed");
                    } else {
                        tracing::warn!(redis = %self.inner.url_for_logs, error = %err, retry_in = ?backoff, "cannot use redis");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Connects once and verifies the connection (eviction policy).
    pub async fn connect_and_verify(&self) -> Result<CommandConnection, VerifyError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let mut conn = self.inner.target.connect_commands(&config).await?;
        self.check_eviction_policy(&mut conn).await?;
        Ok(conn)
    }

    /// The start-up check of design item "eviction safety": refuses a Redis whose
    /// `maxmemory-policy` can evict keys without a time to live (`allkeys-*`) unless that was
    /// explicitly allowed. A Redis that cannot be reached within `timeout` is not refused: the sidecar
    /// starts not ready, and every connection it verifies later runs the same check (and is
    /// refused, failing closed, if the policy is evicting by then).
    pub async fn refuse_evicting_policy(&self, timeout: Duration) -> Result<(), VerifyError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let attempt = async {
            let mut conn = self.inner.target.connect_commands(&config).await?;
            self.check_eviction_policy(&mut conn).await
        };
        match tokio::time::timeout(timeout * 2, attempt).await {
            Ok(Err(VerifyError::EvictingPolicy(policy))) => {
                Err(VerifyError::EvictingPolicy(policy))
            }
            Ok(Err(err)) => {
                tracing::warn!(redis = %self.inner.url_for_logs, error = %err, "cannot check redis maxmemory-policy at start; starting not ready");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(redis = %self.inner.url_for_logs, ?timeout, "redis did not answer at start; starting not ready");
                Ok(())
            }
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn check_eviction_policy(&self, conn: &mut CommandConnection) -> Result<(), VerifyError> {
        // INFO rather than CONFIG GET: the sidecar's ACL user needs INFO anyway (the shard
        // script reads run_id), while CONFIG GET would also reveal secrets such as
        // requirepass, and managed Redis services often refuse it.
        let reply: RedisResult<String> = redis::cmd("INFO").arg("memory").query_async(conn).await;
        match reply {
            Ok(info) => {
                let policy = info
                    .lines()
                    .find_map(|l| l.strip_prefix("maxmemory_policy:"))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                if policy.is_empty() {
                    tracing::warn!("redis INFO shows no maxmemory_policy; make sure it cannot evict version keys");
                } else if policy.starts_with("allkeys-") {
                    if self.inner.allow_evicting_policy {
                        tracing::warn!(%policy, "redis can evict version keys; serving anyway because allow_evicting_policy is set");
                    } else {
                        return Err(VerifyError::EvictingPolicy(policy));
                    }
                }
                Ok(())
            }
            Err(err) if err.is_io_error() || err.is_connection_dropped() => Err(err.into()),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read redis maxmemory_policy (INFO refused?); make sure it cannot evict version keys");
                Ok(())
            }
        }
    }
}
