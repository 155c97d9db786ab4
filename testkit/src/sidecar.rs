//! [`TestSidecar`]: one way for every test and benchmark to run a sidecar in process, on free
//! loopback ports, against a Redis the test started.
//!
//! Before this existed, "settings on port 0, validate, start, wait until ready" was written
//! out in each test folder and in the benchmark; one harness keeps what a test sidecar is (and
//! how long set-up may wait) in one place.

use std::net::SocketAddr;
use std::ops::Deref;
use std::time::Duration;

use coherence_sidecar::process::config::{Config, ConfigError, Settings};
use coherence_sidecar::process::listen::ListenAddr;
use coherence_sidecar::process::sidecar::StartError;
use coherence_sidecar::Sidecar;
use tonic::transport::{Channel, Endpoint};

use crate::http::{http_get, HttpResponse};
use crate::RedisServer;

/// Bound for anything test set-up awaits (readiness, a connection): the machines tests run on
/// are small and shared, so this is generous; a sidecar that takes longer is a failure.
pub const WAIT: Duration = Duration::from_secs(20);

/// What [`TestSidecarBuilder::start`] waits for before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Await {
    /// Ready to serve (subscribed, shards fenced): what `/readyz` reports. The default.
    Ready,
    /// Only the Redis link verified (enough for the load-balancing services).
    Connected,
    /// Nothing: the listeners are bound, Redis may be down or refusing.
    Started,
}

/// Why a sidecar did not start (for [`TestSidecarBuilder::try_start`]).
#[derive(Debug, thiserror::Error)]
pub enum TestSidecarError {
    #[error("invalid test settings: {0}")]
    Config(#[from] ConfigError),
    #[error("the sidecar did not start: {0}")]
    Start(#[from] StartError),
    #[error("sidecar {server_id} was not {awaited:?} within {WAIT:?}")]
    NotReady { server_id: String, awaited: Await },
}

/// A sidecar running in this process, started by [`TestSidecar::start`] or
/// [`TestSidecar::builder`]. Dereferences to the [`Sidecar`] (its `state`, `versions`,
/// `is_ready`, …); stop it with [`TestSidecar::shutdown`] (dropping it leaves its tasks
/// running until the test's runtime ends).
pub struct TestSidecar {
    sidecar: Sidecar,
}

/// Settings for a [`TestSidecar`]: the sidecar's defaults, both listeners on free loopback
/// ports, adjusted by the builder's methods.
#[derive(Debug, Clone)]
pub struct TestSidecarBuilder {
    settings: Settings,
    wait: Await,
}

impl TestSidecar {
    /// A ready sidecar (server id `test`, default namespace) against `redis`.
    pub async fn start(redis: &RedisServer) -> TestSidecar {
        TestSidecar::builder(&redis.url()).start().await
    }

    /// A ready sidecar named `server_id` against `redis` (several sidecars of one namespace).
    pub async fn start_named(redis: &RedisServer, server_id: &str) -> TestSidecar {
        TestSidecar::builder(&redis.url())
            .server_id(server_id)
            .start()
            .await
    }

    /// Settings for a sidecar against the Redis at `redis_url` (any URL the sidecar accepts:
    /// a test Redis, a cluster, sentinels, one nobody listens on).
    pub fn builder(redis_url: &str) -> TestSidecarBuilder {
        let mut settings = Config::defaults();
        settings.redis_url = redis_url.to_string();
        settings.server_id = "test".to_string();
        settings.listen = ListenAddr::Tcp(loopback_any_port());
        settings.admin_listen = loopback_any_port();
        TestSidecarBuilder {
            settings,
            wait: Await::Ready,
        }
    }

    /// A builder that starts from complete `settings`, listeners included: e.g. to start a
    /// sidecar again on the ports it had (see [`TestSidecarBuilder::into_settings`]).
    pub fn with_settings(settings: Settings) -> TestSidecarBuilder {
        TestSidecarBuilder {
            settings,
            wait: Await::Ready,
        }
    }

    /// The gRPC TCP address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.sidecar.grpc_addr
    }

    /// `http://<gRPC address>`, for clients and `coherencectl --addr`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.sidecar.grpc_addr)
    }

    /// The admin HTTP address (`/metrics`, `/livez`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.sidecar.admin_addr
    }

    /// A connected [`coherence_client::Client`].
    pub async fn client(&self) -> coherence_client::Client {
        coherence_client::Client::connect(self.grpc_url())
            .await
            .expect("connect a client to the test sidecar")
    }

    /// A gRPC channel for the generated clients (per-call timeout 10 s).
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.grpc_url())
            .expect("a valid URL")
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("connect to the test sidecar's gRPC port")
    }

    /// `GET path` on the admin listener; `None` when nothing answered in time.
    pub async fn admin_get(&self, path: &str) -> Option<HttpResponse> {
        http_get(self.sidecar.admin_addr, path, None).await
    }

    /// The `/metrics` text (Prometheus text format 0.0.4, as curl and promtool get it);
    /// panics unless the admin listener answers 200.
    pub async fn scrape(&self) -> String {
        let response = self
            .admin_get("/metrics")
            .await
            .expect("the admin listener answers /metrics");
        assert_eq!(response.status, 200, "{}", response.body);
        response.body
    }

    /// Graceful shutdown, as the binary does on SIGTERM.
    pub async fn shutdown(self) {
        self.sidecar.shutdown().await;
    }

    /// The [`Sidecar`] itself, for code that owns one.
    pub fn into_inner(self) -> Sidecar {
        self.sidecar
    }
}

impl Deref for TestSidecar {
    type Target = Sidecar;

    fn deref(&self) -> &Sidecar {
        &self.sidecar
    }
}

impl TestSidecarBuilder {
    /// The server id (default `test`).
    pub fn server_id(mut self, server_id: &str) -> Self {
        self.settings.server_id = server_id.to_string();
        self
    }

    /// The namespace (default: the sidecar's).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.settings.namespace = namespace.to_string();
        self
    }

    /// The gRPC listen address (default: a free loopback port).
    pub fn listen(mut self, listen: impl Into<ListenAddr>) -> Self {
        self.settings.listen = listen.into();
        self
    }

    /// Any other setting (limits, timeouts, roles …).
    pub fn settings(mut self, adjust: impl FnOnce(&mut Settings)) -> Self {
        adjust(&mut self.settings);
        self
    }

    /// Read leases of `lease_ms` (`read_lease_ms`; 0: none) and no canary bumps: a canary's
    /// bumps wait for lease holders too, and lease tests count the bumps that waited.
    pub fn read_leases(self, lease_ms: u64) -> Self {
        self.settings(|s| {
            s.read_lease_ms = lease_ms;
            s.canary_interval_ms = 0;
        })
    }

    /// What [`TestSidecarBuilder::start`] waits for (default [`Await::Ready`]).
    pub fn wait(mut self, wait: Await) -> Self {
        self.wait = wait;
        self
    }

    /// The settings as they stand, for code that keeps or derives settings (a fleet that
    /// restarts its sidecars, keyspace arithmetic).
    pub fn into_settings(self) -> Settings {
        self.settings
    }

    /// Starts the sidecar; panics (failing the test) on invalid settings, a failed start, or
    /// when what it awaits does not happen within [`WAIT`].
    pub async fn start(self) -> TestSidecar {
        match self.try_start().await {
            Ok(sidecar) => sidecar,
            Err(err) => panic!("{err}"),
        }
    }

    /// [`TestSidecarBuilder::start`] that returns the failure, for tests of failing starts
    /// and for the benchmark.
    pub async fn try_start(self) -> Result<TestSidecar, TestSidecarError> {
        let server_id = self.settings.server_id.clone();
        let sidecar = Sidecar::start(Config::validate(self.settings)?).await?;
        let awaited = match self.wait {
            Await::Ready => sidecar.wait_ready(WAIT).await,
            Await::Connected => sidecar.state.link.wait_connected(WAIT).await,
            Await::Started => true,
        };
        if !awaited {
            sidecar.shutdown().await;
            return Err(TestSidecarError::NotReady {
                server_id,
                awaited: self.wait,
            });
        }
        Ok(TestSidecar { sidecar })
    }
}

fn loopback_any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
