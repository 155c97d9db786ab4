//! The floor: a bare tonic server with the same `coherence.v1.CacheVersions` shape, answering
//! `Check` from a `HashMap` and `Bump` by counting in memory.
//!
//! No Redis, no metrics, no limits, no health or reflection services: what any gRPC sidecar
//! costs on this machine at the least. The sidecar's own overhead is the difference to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use coherence_proto::v1 as pb;
use coherence_proto::v1::cache_versions_server::{CacheVersions, CacheVersionsServer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Versions by key, as the floor holds them.
type Table = Arc<RwLock<HashMap<String, String>>>;

struct FloorService {
    versions: Table,
    next: AtomicU64,
}

type WatchStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl CacheVersions for FloorService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let table = self
            .versions
            .read()
            .map_err(|_| Status::internal("poisoned"))?;
        let versions = request
            .into_inner()
            .keys
            .iter()
            .map(|k| pb::Version {
                token: table.get(k).cloned().unwrap_or_default(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::GetResponse { versions }))
    }

    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let table = self
            .versions
            .read()
            .map_err(|_| Status::internal("poisoned"))?;
        let results = request
            .into_inner()
            .entries
            .into_iter()
            .map(|e| {
                let current = table.get(&e.key);
                let token = e.version.map(|v| v.token).unwrap_or_default();
                pb::CheckResult {
                    current: current.is_some_and(|c| *c == token),
                    version: current.map(|c| pb::Version {
                        token: c.clone(),
                        ..Default::default()
                    }),
                    source: pb::CheckSource::Mirror as i32,
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(pb::CheckResponse { results }))
    }

    async fn bump(
        &self,
        request: Request<pb::BumpRequest>,
    ) -> Result<Response<pb::BumpResponse>, Status> {
        let keys = request.into_inner().keys;
        let mut table = self
            .versions
            .write()
            .map_err(|_| Status::internal("poisoned"))?;
        let versions = keys
            .into_iter()
            .map(|k| {
                let token = format!("floor.{}", self.next.fetch_add(1, Ordering::Relaxed));
                table.insert(k, token.clone());
                pb::Version {
                    token,
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(pb::BumpResponse { versions }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, _: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        Err(Status::unimplemented("the floor server does not watch"))
    }

    async fn mirror_lease(
        &self,
        _: Request<pb::MirrorLeaseRequest>,
    ) -> Result<Response<pb::MirrorLeaseResponse>, Status> {
        Err(Status::unimplemented("the floor server grants no leases"))
    }
}

/// A running floor server.
pub struct Floor {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Floor {
    /// Serves `versions` on a free loopback port, on the current runtime.
    pub async fn start(versions: HashMap<String, String>) -> anyhow::Result<Floor> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let service = FloorService {
            versions: Arc::new(RwLock::new(versions)),
            next: AtomicU64::new(1),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(CacheVersionsServer::new(service))
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move {
                        let _ = stopped.await;
                    },
                )
                .await;
            if let Err(err) = served {
                eprintln!("floor server failed: {err}");
            }
        });
        Ok(Floor {
            addr,
            stop: Some(stop),
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.task).await;
    }
}
