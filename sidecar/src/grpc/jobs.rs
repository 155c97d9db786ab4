//! The `coherence.v1.Jobs` gRPC service: request checks and translation to [`Jobs`].

use std::sync::Arc;

use coherence_proto::v1 as pb;
use coherence_proto::v1::jobs_server::Jobs as JobsApi;
use tonic::{Request, Response, Status};

use crate::grpc::validation::{check_ms, Limits};
use crate::load_balancing::jobs::{JobError, Jobs, MAX_MS};

/// The gRPC face of one sidecar's [`Jobs`].
pub struct JobsService {
    jobs: Arc<Jobs>,
    limits: Limits,
}

impl JobsService {
    pub fn new(jobs: Arc<Jobs>, limits: Limits) -> Self {
        JobsService { jobs, limits }
    }

    fn holder<'a>(&'a self, given: &'a str) -> Result<&'a str, Status> {
        if given.is_empty() {
            return Ok(&self.jobs.state().config.settings.server_id);
        }
        self.limits.check_key("holder", given, false)?;
        Ok(given)
    }
}

fn job_status(err: JobError) -> Status {
    match err {
        JobError::Link(err) => Status::unavailable(err.to_string()),
        stale @ JobError::Stale { .. } => Status::failed_precondition(stale.to_string()),
    }
}

#[tonic::async_trait]
impl JobsApi for JobsService {
    async fn try_acquire(
        &self,
        request: Request<pb::TryAcquireRequest>,
    ) -> Result<Response<pb::TryAcquireResponse>, Status> {
        let req = request.into_inner();
        async {
            self.limits.check_name("job", &req.job)?;
            check_ms("ttl_ms", req.ttl_ms, MAX_MS, false)?;
            let holder = self.holder(&req.holder)?;
            let lease = self
                .jobs
                .try_acquire(&req.job, req.ttl_ms, holder)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            Ok(pb::TryAcquireResponse {
                granted: lease.granted,
                holder: lease.holder,
                fencing_token: lease.token,
                ttl_ms: lease.ttl_ms,
            })
        }
        .await
        .map(Response::new)
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let req = request.into_inner();
        async {
            self.limits.check_name("job", &req.job)?;
            check_ms("ttl_ms", req.ttl_ms, MAX_MS, false)?;
            let lease = self
                .jobs
                .renew(&req.job, req.fencing_token, req.ttl_ms)
                .await
                .map_err(job_status)?;
            Ok(pb::RenewResponse {
                ttl_ms: lease.ttl_ms,
            })
        }
        .await
        .map(Response::new)
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let req = request.into_inner();
        async {
            self.limits.check_name("job", &req.job)?;
            self.jobs
                .release(&req.job, req.fencing_token)
                .await
                .map_err(job_status)?;
            Ok(pb::ReleaseResponse {})
        }
        .await
        .map(Response::new)
    }

    async fn claim_run(
        &self,
        request: Request<pb::ClaimRunRequest>,
    ) -> Result<Response<pb::ClaimRunResponse>, Status> {
        let req = request.into_inner();
        async {
            self.limits.check_name("job", &req.job)?;
            check_ms("period_ms", req.period_ms, MAX_MS, false)?;
            check_ms("lease_ms", req.lease_ms, MAX_MS, true)?;
            let holder = self.holder(&req.holder)?;
            let lease_ms = if req.lease_ms == 0 {
                req.period_ms
            } else {
                req.lease_ms
            };
            let claim = self
                .jobs
                .claim_run(&req.job, req.period_ms, lease_ms, holder)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            Ok(pb::ClaimRunResponse {
                granted: claim.granted,
                period: claim.period,
                fencing_token: claim.token,
                holder: claim.holder,
                lease_ms: claim.lease_ms,
                next_period_in_ms: claim.next_period_in_ms,
                refused_because: claim
                    .refused
                    .map(|r| r.label().to_string())
                    .unwrap_or_default(),
            })
        }
        .await
        .map(Response::new)
    }
}
