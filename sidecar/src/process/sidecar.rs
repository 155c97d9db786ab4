//! Starting and stopping a sidecar: binds the listeners, spawns the background tasks and
//! serves gRPC (with `grpc.health.v1` and reflection, over TCP or a Unix socket, behind the
//! bearer-token check when `auth_token_file` is set) and the admin HTTP listener.
//!
//! Shutdown is driven by one `watch` signal: readiness drops first (health NOT_SERVING,
//! `/readyz` 503), Watch streams end with a final `UNAVAILABLE`, then in-flight calls drain for
//! at most `drain_timeout`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use coherence_proto::v1::cache_versions_server::CacheVersionsServer;
use coherence_proto::v1::jobs_server::JobsServer;
use coherence_proto::v1::notifications_server::NotificationsServer;
use coherence_proto::v1::observer_server::ObserverServer;
use coherence_proto::v1::servers_server::ServersServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic_health::ServingStatus;

use crate::grpc::admission::StreamSlots;
use crate::grpc::auth::AuthLayer;
use crate::grpc::cache_versions::CacheVersionsService;
use crate::grpc::connections::ConnectionSlots;
use crate::grpc::health::BoundedHealth;
use crate::grpc::jobs::JobsService;
use crate::grpc::metrics::{GrpcMetricsLayer, KnownMethods};
use crate::grpc::notifications::NotificationsService;
use crate::grpc::observer::ObserverService;
use crate::grpc::request_budget::RequestBudgetLayer;
use crate::grpc::servers::ServersService;
use crate::grpc::transport::TransportLimits;
use crate::grpc::validation::Limits;
use crate::load_balancing::jobs::Jobs;
use crate::load_balancing::notifications::Notifications;
use crate::load_balancing::servers::Servers;
use crate::load_balancing::ServiceHandle;
use crate::metrics::Metrics;
use crate::process::admin;
use crate::process::config::Config;
use crate::process::listen::{GrpcListener, ListenAddr};
use crate::process::readiness::Readiness;
use crate::redis::keyspace::Keyspace;
use crate::redis::link::RedisLink;
use crate::versions::audit::{canary, worker};
use crate::versions::leases::holder;
use crate::versions::state::VersionsState;
use crate::versions::Versions;
use crate::versions::{fences, reconcile, subscription};

/// The gRPC service name health is reported under (besides the overall "").
pub const SERVICE_NAME: &str = "coherence.v1.CacheVersions";

/// Every service the gRPC server serves, for the metrics' method labels.
const DESCRIPTOR_SETS: &[&[u8]] = &[
    coherence_proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: ListenAddr,
        source: std::io::Error,
    },
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    #[error("refusing to start: {0}")]
    RedisRefused(#[from] crate::redis::link::VerifyError),
}

/// How long start-up waits for Redis to answer its eviction-policy check.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(2);

/// A running sidecar.
pub struct Sidecar {
    /// The gRPC TCP address (the unspecified `0.0.0.0:0` when listening on a Unix socket;
    /// `grpc_listen` says where).
    pub grpc_addr: SocketAddr,
    /// Where gRPC listens, as bound: `host:port` or `unix:///path`.
    pub grpc_listen: ListenAddr,
    pub admin_addr: SocketAddr,
    /// The state the cache-version tasks share: Redis link, keyspace, mirror, metrics, the
    /// Watch hub.
    pub state: Arc<VersionsState>,
    pub versions: Arc<Versions>,
    readiness: Arc<Readiness>,
    drain_timeout: Duration,
    shutdown_tx: watch::Sender<bool>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    /// The Unix socket file to remove at shutdown.
    grpc_socket: Option<PathBuf>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sidecar {
    /// Binds, spawns and starts serving. Redis need not be up: the sidecar reports not ready
    /// and fails closed until it can verify a connection.
    pub async fn start(config: Config) -> Result<Sidecar, StartError> {
        let settings = config.settings.clone();
        let grpc_bind_error = |source| StartError::Bind {
            what: "gRPC",
            addr: settings.listen.clone(),
            source,
        };
        let grpc_listener = GrpcListener::bind(&settings.listen)
            .await
            .map_err(grpc_bind_error)?;
        let grpc_listen = grpc_listener.local_addr().map_err(grpc_bind_error)?;
        let admin_listener = bind("admin", settings.admin_listen).await?;
        let admin_addr = local_addr("admin", &admin_listener, settings.admin_listen)?;
        let grpc_addr = match &grpc_listen {
            ListenAddr::Tcp(addr) => *addr,
            ListenAddr::Unix(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        match (grpc_listen.is_local(), config.auth_token.is_some()) {
            (false, false) => {
                tracing::warn!(listen = %settings.listen, "the gRPC API is bound to a non-loopback address without auth_token_file: anyone who can reach it can bump versions; bind 127.0.0.1 or a unix:// socket, or require a token")
            }
            (false, true) => {
                tracing::info!(listen = %settings.listen, "the gRPC API is bound to a non-loopback address; every call must carry the bearer token")
            }
            (true, _) => {}
        }

        let metrics = Metrics::new();
        let link = RedisLink::new(&config.redis, metrics.clone());
        link.refuse_evicting_policy(PREFLIGHT_TIMEOUT).await?;
        let keyspace = Keyspace::new(&settings.namespace, settings.shards)
            .with_sharded_channels(config.redis.target.is_cluster());
        let state = VersionsState::new(
            config.versions_settings(),
            keyspace,
            link.clone(),
            metrics.clone(),
        );
        let versions = Arc::new(Versions::new(Arc::clone(&state)));
        let handle = ServiceHandle {
            link: link.clone(),
            namespace: Arc::from(settings.namespace.as_str()),
            request_timeout: config.request_timeout(),
            server_id: Arc::from(settings.server_id.as_str()),
            metrics: metrics.clone(),
        };
        let address = if settings.advertise_address.is_empty() {
            grpc_listen.to_string()
        } else {
            settings.advertise_address.clone()
        };
        let servers = Arc::new(Servers::new(
            handle.clone(),
            config.servers.clone(),
            address,
        ));
        let readiness = Arc::new(Readiness::new(Arc::clone(&state), Arc::clone(&servers)));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let mut tasks = vec![
            tokio::spawn(link.supervise(shutdown_rx.clone())),
            tokio::spawn(subscription::run(Arc::clone(&state), shutdown_rx.clone())),
            tokio::spawn(fences::run(Arc::clone(&state), shutdown_rx.clone())),
            tokio::spawn(holder::run(Arc::clone(&state), shutdown_rx.clone())),
            tokio::spawn(reconcile::run(
                Arc::clone(&state),
                Arc::clone(versions.reader()),
                shutdown_rx.clone(),
            )),
            tokio::spawn(worker::run(Arc::clone(&state), shutdown_rx.clone())),
        ];
        let canary_interval = state.settings.canary_interval;
        if !canary_interval.is_zero() {
            tasks.push(tokio::spawn(canary::run(
                Arc::clone(&state),
                Arc::clone(versions.bumper()),
                canary_interval,
                shutdown_rx.clone(),
            )));
        }

        let health_reporter = tonic_health::server::HealthReporter::new();
        let health_service = BoundedHealth::server(
            &health_reporter,
            StreamSlots::new(
                settings.max_health_watch_streams,
                "max_health_watch_streams",
                metrics.clone(),
            ),
        );
        tasks.push(tokio::spawn(report_health(
            Arc::clone(&readiness),
            health_reporter,
            shutdown_rx.clone(),
        )));
        // Reflection v1 and v1alpha: grpcurl before 1.8.8 and other older tools speak only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(coherence_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| StartError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| StartError::Reflection(e.to_string()))?;
        let limits = Limits {
            max_key_bytes: settings.max_key_bytes,
            max_batch_keys: settings.max_batch_keys,
            max_watch_prefixes: settings.max_watch_prefixes,
            max_watch_prefix_bytes: settings.max_watch_prefix_bytes,
        };
        let service = CacheVersionsServer::new(CacheVersionsService::new(
            Arc::clone(&versions),
            limits,
            StreamSlots::new(
                settings.max_watch_streams,
                "max_watch_streams",
                metrics.clone(),
            ),
            shutdown_rx.clone(),
        ))
        .max_decoding_message_size(limits.max_message_bytes());
        let jobs = Arc::new(Jobs::new(handle.clone()));
        let jobs_service = JobsServer::new(JobsService::new(Arc::clone(&jobs), limits));
        tasks.push(tokio::spawn(
            Arc::clone(&servers).run_heartbeats(shutdown_rx.clone()),
        ));
        tasks.push(tokio::spawn(
            Arc::clone(&servers).run_status(shutdown_rx.clone()),
        ));
        let notifications = Arc::new(Notifications::new(
            handle,
            settings.notification_buffer_bytes,
            settings.push_buffer_bytes,
        ));
        tasks.push(tokio::spawn(
            Arc::clone(&notifications).run(shutdown_rx.clone()),
        ));
        let notifications_service = NotificationsServer::new(NotificationsService::new(
            Arc::clone(&notifications),
            limits,
            settings.max_payload_bytes,
            StreamSlots::new(
                settings.max_subscribe_streams,
                "max_subscribe_streams",
                metrics.clone(),
            ),
            shutdown_rx.clone(),
        ))
        .max_decoding_message_size(NotificationsService::max_message_bytes(
            &limits,
            settings.max_payload_bytes,
        ));
        let servers_service = ServersServer::new(ServersService::new(
            Arc::clone(&servers),
            StreamSlots::new(
                settings.max_role_streams,
                "max_role_streams",
                metrics.clone(),
            ),
            shutdown_rx.clone(),
        ));
        let observer_service =
            ObserverServer::new(ObserverService::new(Arc::clone(&state), limits))
                .max_decoding_message_size(limits.max_message_bytes());
        let mut grpc_shutdown = shutdown_rx.clone();
        let router = config
            .transport_limits()
            .server()
            .layer(GrpcMetricsLayer::new(
                metrics.clone(),
                KnownMethods::from_descriptor_sets(DESCRIPTOR_SETS),
            ))
            .layer(AuthLayer::new(config.auth_token.as_ref()))
            .layer(RequestBudgetLayer::new(
                settings.request_buffer_bytes,
                &metrics,
            ))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .add_service(jobs_service)
            .add_service(servers_service)
            .add_service(notifications_service)
            .add_service(observer_service);
        let signal = async move {
            let _ = grpc_shutdown.wait_for(|down| *down).await;
        };
        let grpc_socket = match &grpc_listener {
            GrpcListener::Unix(_, path) => Some(path.clone()),
            GrpcListener::Tcp(_) => None,
        };
        let connections = ConnectionSlots::new(settings.max_connections, &metrics);
        let grpc_task = tokio::spawn(async move {
            match grpc_listener {
                GrpcListener::Tcp(listener) => {
                    let incoming = connections.limit(TransportLimits::incoming(listener));
                    router.serve_with_incoming_shutdown(incoming, signal).await
                }
                GrpcListener::Unix(listener, _) => {
                    let incoming = connections.limit(UnixListenerStream::new(listener));
                    router.serve_with_incoming_shutdown(incoming, signal).await
                }
            }
        });

        let mut admin_shutdown = shutdown_rx.clone();
        let admin_router = admin::router(Arc::clone(&readiness));
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(admin_listener, admin_router)
                .with_graceful_shutdown(async move {
                    let _ = admin_shutdown.wait_for(|down| *down).await;
                })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "admin listener failed");
            }
        }));

        tracing::info!(grpc = %grpc_listen, admin = %admin_addr, namespace = %settings.namespace, server_id = %settings.server_id, "coherence sidecar started");
        Ok(Sidecar {
            grpc_addr,
            grpc_listen,
            admin_addr,
            state,
            versions,
            readiness,
            drain_timeout: config.drain_timeout(),
            shutdown_tx,
            grpc_task,
            grpc_socket,
            tasks,
        })
    }

    /// Ready to serve (see [`Readiness`]): what `/readyz` and health report.
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// Waits until the sidecar is ready (or `timeout` passes); returns whether it is.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.is_ready() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.is_ready()
    }

    /// Graceful shutdown: readiness drops, streams end, in-flight calls drain (bounded).
    pub async fn shutdown(self) {
        self.readiness.shut_down();
        self.state.metrics.ready.set(0);
        let _ = self.shutdown_tx.send(true);
        let drain = self.drain_timeout;
        let mut grpc_task = self.grpc_task;
        if tokio::time::timeout(drain, &mut grpc_task).await.is_err() {
            tracing::warn!(?drain, "drain timed out; closing remaining calls");
            grpc_task.abort();
        }
        if let Some(path) = &self.grpc_socket {
            if let Err(err) = std::fs::remove_file(path) {
                tracing::debug!(error = %err, path = %path.display(), "could not remove the gRPC socket file");
            }
        }
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .is_err()
            {
                tracing::debug!("a background task did not stop in time");
            }
        }
        tracing::info!("coherence sidecar stopped");
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what,
            addr: addr.into(),
            source,
        })
}

fn local_addr(
    what: &'static str,
    l: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    l.local_addr().map_err(|source| StartError::Bind {
        what,
        addr: addr.into(),
        source,
    })
}

/// Mirrors readiness into `grpc.health.v1` (SERVING only while ready) and the
/// `coherence_ready` gauge.
async fn report_health(
    readiness: Arc<Readiness>,
    reporter: tonic_health::server::HealthReporter,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        let ready = readiness.is_ready();
        readiness.versions().metrics.ready.set(i64::from(ready));
        if last != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reporter.set_service_status(SERVICE_NAME, status).await;
            last = Some(ready);
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    reporter.set_service_status("", ServingStatus::NotServing).await;
                    reporter.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
                    return;
                }
            }
        }
    }
}
