//! Distributed jobs: leases with fencing tokens, and "run this recurring job now?" for the fleet.
//!
//! A lease alone cannot protect a resource: its holder may pause (GC, swap, a slow disk) past
//! the lease, another server takes over, and the first one wakes up still believing it holds the
//! job. So every grant carries a **fencing token** that is larger than every token issued for
//! that job before; the resource rejects writes carrying an older token (docs/jobs.md).
//!
//! Every step is one call of `load_balancing/jobs.lua` on keys that share the job's hash tag
//! (`coh:{<namespace>:job:<job>}:…`), so it is atomic and runs unchanged on Redis Cluster. Time
//! (leases, periods, the token floor) comes from the Redis clock inside the script; no clock
//! agreement between servers is assumed.

use crate::load_balancing::ServiceHandle;
use crate::redis::link::LinkError;
use crate::redis::scripts::JOBS;

/// Longest lease, run lease or period accepted, in milliseconds (one day).
pub const MAX_MS: u64 = 24 * 60 * 60 * 1000;

/// The state of a job's lease after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Whether this call got (or renewed, or released) the lease.
    pub granted: bool,
    /// The holder now (empty when nobody holds the lease).
    pub holder: String,
    /// The holder's fencing token (0 when nobody holds the lease).
    pub token: u64,
    /// Lease time left, milliseconds.
    pub ttl_ms: u64,
}

/// Why a ClaimRun was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another run holds the job's lease.
    Running,
    /// This period's run already completed.
    Done,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Running => "running",
            Refusal::Done => "done",
        }
    }
}

/// The answer to a ClaimRun.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunClaim {
    pub granted: bool,
    /// Period index on the Redis clock: `redis_time_ms / period_ms`.
    pub period: u64,
    pub token: u64,
    pub holder: String,
    pub lease_ms: u64,
    pub next_period_in_ms: u64,
    pub refused: Option<Refusal>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The token given is not the current holder's (its lease expired or was taken over).
    #[error("fencing token {given} is stale for job {job:?}: {}", describe_holder(.current))]
    Stale {
        job: String,
        given: u64,
        current: Lease,
    },
}

fn describe_holder(current: &Lease) -> String {
    if current.holder.is_empty() {
        "nobody holds the lease now (it expired or was released)".to_string()
    } else {
        format!(
            "the lease is held by {:?} with token {}",
            current.holder, current.token
        )
    }
}

/// The Redis names of one job's state.
fn job_keys(namespace: &str, job: &str) -> [String; 3] {
    let prefix = format!("coh:{{{namespace}:job:{job}}}");
    [
        format!("{prefix}:lease"),
        format!("{prefix}:fence"),
        format!("{prefix}:runs"),
    ]
}

/// Job operations of one sidecar.
pub struct Jobs {
    handle: ServiceHandle,
}

type LeaseReply = (u8, String, u64, u64);
type ClaimReply = (u8, u64, u64, String, u64, u64, String);

impl Jobs {
    pub fn new(handle: ServiceHandle) -> Jobs {
        Jobs { handle }
    }

    /// This server's id (the default lease holder).
    pub fn server_id(&self) -> &str {
        &self.handle.server_id
    }

    async fn call<T: redis::FromRedisValue>(
        &self,
        name: &'static str,
        job: &str,
        args: &[String],
    ) -> Result<T, LinkError> {
        let mut call = JOBS.call();
        for key in job_keys(&self.handle.namespace, job) {
            call.key(key);
        }
        for arg in args {
            call.arg(arg);
        }
        self.handle
            .link
            .run_script(name, self.handle.request_timeout, call)
            .await
    }

    fn count(&self, op: &'static str, granted: bool) {
        let metrics = &self.handle.metrics.load_balancing;
        let family = if granted {
            &metrics.job_grants
        } else {
            &metrics.job_refusals
        };
        family.get_or_create(&[("op", op)]).inc();
    }

    /// Takes the job's lease for `ttl_ms` unless somebody holds it.
    pub async fn try_acquire(
        &self,
        job: &str,
        ttl_ms: u64,
        holder: &str,
    ) -> Result<Lease, LinkError> {
        let reply: LeaseReply = self
            .call(
                "job_acquire",
                job,
                &["acquire".into(), holder.into(), ttl_ms.to_string()],
            )
            .await?;
        let lease = lease(reply);
        self.count("acquire", lease.granted);
        Ok(lease)
    }

    /// Extends the lease held under `token` to `ttl_ms` from now.
    pub async fn renew(&self, job: &str, token: u64, ttl_ms: u64) -> Result<Lease, JobError> {
        let reply: LeaseReply = self
            .call(
                "job_renew",
                job,
                &["renew".into(), token.to_string(), ttl_ms.to_string()],
            )
            .await?;
        self.checked("renew", job, token, lease(reply))
    }

    /// Gives up the lease held under `token` (and marks a ClaimRun run done).
    pub async fn release(&self, job: &str, token: u64) -> Result<Lease, JobError> {
        let reply: LeaseReply = self
            .call("job_release", job, &["release".into(), token.to_string()])
            .await?;
        self.checked("release", job, token, lease(reply))
    }

    fn checked(
        &self,
        op: &'static str,
        job: &str,
        given: u64,
        lease: Lease,
    ) -> Result<Lease, JobError> {
        self.count(op, lease.granted);
        if lease.granted {
            Ok(lease)
        } else {
            Err(JobError::Stale {
                job: job.to_string(),
                given,
                current: lease,
            })
        }
    }

    /// "Run this recurring job now?": granted to one caller per period of `period_ms`.
    pub async fn claim_run(
        &self,
        job: &str,
        period_ms: u64,
        lease_ms: u64,
        holder: &str,
    ) -> Result<RunClaim, LinkError> {
        let (granted, period, token, holder, lease_ms, next_period_in_ms, refused): ClaimReply =
            self.call(
                "job_claim_run",
                job,
                &[
                    "claim".into(),
                    holder.into(),
                    period_ms.to_string(),
                    lease_ms.to_string(),
                ],
            )
            .await?;
        let granted = granted == 1;
        self.count("claim_run", granted);
        Ok(RunClaim {
            granted,
            period,
            token,
            holder,
            lease_ms,
            next_period_in_ms,
            refused: match refused.as_str() {
                "running" => Some(Refusal::Running),
                "done" => Some(Refusal::Done),
                _ => None,
            },
        })
    }
}

fn lease((granted, holder, token, ttl_ms): LeaseReply) -> Lease {
    Lease {
        granted: granted == 1,
        holder,
        token,
        ttl_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_keys_share_one_hash_tag() {
        let keys = job_keys("app", "nightly-report");
        for key in &keys {
            assert!(key.contains("{app:job:nightly-report}"), "{key}");
        }
        assert_eq!(
            keys.iter().collect::<std::collections::HashSet<_>>().len(),
            3
        );
    }
}
