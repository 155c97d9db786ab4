//! The `coherence.v1.CacheVersions` gRPC service: request validation and translation between
//! protobuf messages and the [`Versions`] operations.

use std::sync::Arc;

use coherence_proto::v1 as pb;
use coherence_proto::v1::cache_versions_server::CacheVersions;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::grpc::validation::Limits;
use crate::redis::link::LinkError;
use crate::versions::audit::canary::is_canary;
use crate::versions::state::WatchItem;
use crate::versions::version::VersionAt;
use crate::versions::{CheckSource, Versions};

/// The gRPC face of one sidecar's [`Versions`].
pub struct CacheVersionsService {
    versions: Arc<Versions>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
}

impl CacheVersionsService {
    pub fn new(versions: Arc<Versions>, limits: Limits, shutdown: watch::Receiver<bool>) -> Self {
        CacheVersionsService {
            versions,
            limits,
            shutdown,
        }
    }
}

/// gRPC metrics are recorded for every call by [`crate::grpc::metrics`], not here.
fn finish<T>(result: Result<T, Status>) -> Result<Response<T>, Status> {
    result.map(Response::new)
}

fn version(v: VersionAt) -> pb::Version {
    pb::Version {
        token: v.version.to_string(),
        epoch: v.epoch.to_string(),
        as_of_sequence: v.as_of,
    }
}

fn unavailable(err: LinkError) -> Status {
    Status::unavailable(err.to_string())
}

fn is_strong(consistency: i32) -> bool {
    consistency == pb::Consistency::Strong as i32
}

#[tonic::async_trait]
impl CacheVersions for CacheVersionsService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            self.limits
                .check_keys("keys", req.keys.iter().map(String::as_str), false)?;
            let versions = self
                .versions
                .get(&req.keys, is_strong(req.consistency))
                .await
                .map_err(unavailable)?;
            Ok(pb::GetResponse {
                versions: versions.into_iter().map(version).collect(),
            })
        }
        .await;
        finish(result)
    }

    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            self.limits.check_count("entries", req.entries.len())?;
            let mut entries = Vec::with_capacity(req.entries.len());
            for (i, entry) in req.entries.into_iter().enumerate() {
                self.limits
                    .check_key(&format!("entries[{i}].key"), &entry.key, false)?;
                let Some(v) = entry.version else {
                    return Err(Status::invalid_argument(format!(
                        "entries[{i}].version: missing"
                    )));
                };
                entries.push((entry.key, v.token));
            }
            let outcomes = self
                .versions
                .check(&entries, is_strong(req.consistency))
                .await;
            Ok(pb::CheckResponse {
                results: outcomes
                    .into_iter()
                    .map(|o| pb::CheckResult {
                        current: o.current,
                        version: o.version.map(version),
                        source: match o.source {
                            CheckSource::Mirror => pb::CheckSource::Mirror,
                            CheckSource::Redis => pb::CheckSource::Redis,
                            CheckSource::FailClosed => pb::CheckSource::FailClosed,
                        } as i32,
                        no_version: o.no_version,
                    })
                    .collect(),
            })
        }
        .await;
        finish(result)
    }

    async fn bump(
        &self,
        request: Request<pb::BumpRequest>,
    ) -> Result<Response<pb::BumpResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            self.limits
                .check_keys("keys", req.keys.iter().map(String::as_str), false)?;
            let versions = self.versions.bump(&req.keys).await.map_err(unavailable)?;
            Ok(pb::BumpResponse {
                versions: versions.into_iter().map(version).collect(),
            })
        }
        .await;
        finish(result)
    }

    type WatchStream = ReceiverStream<Result<pb::WatchEvent, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        self.limits
            .check_keys("prefixes", req.prefixes.iter().map(String::as_str), true)?;
        let state = Arc::clone(self.versions.state());
        let events = state.events.subscribe();
        let (tx, rx) = mpsc::channel(1024);
        let shutdown = self.shutdown.clone();
        let bounds = HeartbeatBounds {
            max_staleness_ms: millis(state.settings.max_staleness),
            heartbeat_interval_ms: millis(state.settings.heartbeat_interval),
        };
        tokio::spawn(async move {
            state.metrics.watch_streams.inc();
            forward_events(events, tx, req.prefixes, bounds, shutdown).await;
            state.metrics.watch_streams.dec();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The sidecar's settings every heartbeat repeats, so that clients need not be told them.
#[derive(Debug, Clone, Copy)]
struct HeartbeatBounds {
    max_staleness_ms: u64,
    heartbeat_interval_ms: u64,
}

/// Forwards hub events matching `prefixes` to one Watch stream until the client goes away or
/// the sidecar shuts down (then the stream ends with `UNAVAILABLE`).
async fn forward_events(
    mut events: broadcast::Receiver<WatchItem>,
    tx: mpsc::Sender<Result<pb::WatchEvent, Status>>,
    prefixes: Vec<String>,
    bounds: HeartbeatBounds,
    mut shutdown: watch::Receiver<bool>,
) {
    use pb::watch_event::Event;
    let matches =
        |key: &str| prefixes.is_empty() || prefixes.iter().any(|p| key.starts_with(p.as_str()));
    loop {
        let event = tokio::select! {
            item = events.recv() => match item {
                Ok(WatchItem::Invalidated(inv)) => {
                    if !matches(&inv.key) || is_canary(&inv.key) {
                        continue;
                    }
                    Event::Invalidated(pb::Invalidation {
                        key: inv.key.clone(),
                        version: Some(pb::Version {
                            token: inv.version.to_string(),
                            epoch: inv.epoch.to_string(),
                            as_of_sequence: inv.seq,
                        }),
                        sequence: inv.seq,
                        shard: inv.shard,
                        bumped_at_unix_ms: inv.bumped_at_unix_ms,
                    })
                }
                Ok(WatchItem::Resync(reason)) => Event::Resync(pb::Resync { reason: reason.to_string() }),
                Ok(WatchItem::Heartbeat { fence_age_ms, sent_at_unix_us }) => {
                    Event::Heartbeat(pb::Heartbeat {
                        fence_age_ms,
                        sent_at_unix_us,
                        max_staleness_ms: bounds.max_staleness_ms,
                        heartbeat_interval_ms: bounds.heartbeat_interval_ms,
                    })
                }
                Err(broadcast::error::RecvError::Lagged(n)) => Event::Resync(pb::Resync {
                    reason: format!("watcher fell behind and missed {n} events"),
                }),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = async { let _ = shutdown.wait_for(|down| *down).await; } => {
                let _ = tx.send(Err(Status::unavailable("sidecar is shutting down"))).await;
                return;
            }
            _ = tx.closed() => return,
        };
        if tx
            .send(Ok(pb::WatchEvent { event: Some(event) }))
            .await
            .is_err()
        {
            return;
        }
    }
}
