//! The `coherence.v1.CacheVersions` gRPC service: request validation and translation between
//! protobuf messages and the [`Versions`] operations.

use std::sync::Arc;

use coherence_proto::v1 as pb;
use coherence_proto::v1::cache_versions_server::CacheVersions;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::grpc::admission::StreamSlots;
use crate::grpc::prefix_set::PrefixSet;
use crate::grpc::validation::Limits;
use crate::grpc::watch::{HeartbeatBounds, WatchFeed, WatchStream};
use crate::versions::batcher::BatchError;
use crate::versions::version::VersionAt;
use crate::versions::{CheckSource, Versions};

/// The gRPC face of one sidecar's [`Versions`].
pub struct CacheVersionsService {
    versions: Arc<Versions>,
    limits: Limits,
    /// `max_watch_streams`.
    watch_slots: StreamSlots,
    shutdown: watch::Receiver<bool>,
}

impl CacheVersionsService {
    pub fn new(
        versions: Arc<Versions>,
        limits: Limits,
        watch_slots: StreamSlots,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        CacheVersionsService {
            versions,
            limits,
            watch_slots,
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

/// Overload is `RESOURCE_EXHAUSTED` (retry later, elsewhere); Redis trouble `UNAVAILABLE`.
fn unavailable(err: BatchError) -> Status {
    match err {
        BatchError::Overloaded { .. } => Status::resource_exhausted(err.to_string()),
        BatchError::Link(_) => Status::unavailable(err.to_string()),
    }
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
                    .check_key(format_args!("entries[{i}].key"), &entry.key, false)?;
                let Some(v) = entry.version else {
                    return Err(Status::invalid_argument(format!(
                        "entries[{i}].version: missing"
                    )));
                };
                self.limits
                    .check_token(format_args!("entries[{i}].version.token"), &v.token)?;
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

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        self.limits.check_prefixes(&req.prefixes)?;
        self.limits.check_lease_id(&req.lease_id, true)?;
        let slot = self.watch_slots.take()?;
        let state = self.versions.state();
        let events = state.events.reader();
        let leases = if req.lease_id.is_empty() {
            None
        } else {
            state
                .leases
                .mirrors
                .track(&req.lease_id, events.position())
                .map_err(|in_use| Status::already_exists(in_use.to_string()))?
        };
        let feed = WatchFeed {
            events,
            prefixes: PrefixSet::new(&req.prefixes),
            bounds: HeartbeatBounds {
                max_staleness_ms: millis(state.settings.max_staleness),
                heartbeat_interval_ms: millis(state.settings.heartbeat_interval),
            },
            shutdown: self.shutdown.clone(),
            slot,
            open: state.metrics.watch_streams.clone(),
            leases,
        };
        Ok(Response::new(feed.into_stream()))
    }

    async fn mirror_lease(
        &self,
        request: Request<pb::MirrorLeaseRequest>,
    ) -> Result<Response<pb::MirrorLeaseResponse>, Status> {
        let req = request.into_inner();
        self.limits.check_lease_id(&req.lease_id, false)?;
        let state = self.versions.state();
        let now = std::time::Instant::now();
        let grant = || {
            let holder = state.leases.holder.as_ref()?;
            let left =
                holder.time_left_everywhere(now, |shard| state.mirror.is_trusted(shard, now))?;
            Some((left, state.events.next_index()))
        };
        let answer = match state.leases.mirrors.renew(
            &req.lease_id,
            req.applied_position,
            req.renew,
            now,
            grant,
        ) {
            Ok(Some(grant)) => pb::MirrorLeaseResponse {
                granted_ms: millis(grant.granted),
                min_position: grant.min_position,
                refused: String::new(),
            },
            Ok(None) => pb::MirrorLeaseResponse::default(),
            Err(refused) => pb::MirrorLeaseResponse {
                refused: refused.to_string(),
                ..Default::default()
            },
        };
        Ok(Response::new(answer))
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
