//! `coherencectl jobs acquire|renew|release|claim`: distributed job leases with fencing tokens.
//! Exit code 1 when the lease or run is not granted, or the token is stale.

use coherence_proto::v1 as pb;
use coherence_proto::v1::jobs_client::JobsClient;
use serde_json::json;

use super::kit::{call_error, channel};
use super::{exit, GlobalOptions};

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub op: JobsOp,
}

#[derive(Debug, clap::Subcommand)]
pub enum JobsOp {
    /// Take the job's lease if nobody holds it; prints the fencing token (exit 1: held).
    Acquire {
        job: String,
        #[arg(long, default_value_t = 10_000)]
        ttl_ms: u64,
        /// Holder name (default: the sidecar's server id).
        #[arg(long, default_value = "")]
        holder: String,
    },
    /// Extend a lease held under TOKEN (exit 1: the token is stale).
    Renew {
        job: String,
        token: u64,
        #[arg(long, default_value_t = 10_000)]
        ttl_ms: u64,
    },
    /// Give up a lease held under TOKEN (exit 1: the token is stale).
    Release { job: String, token: u64 },
    /// "Run this recurring job now?" for the period (exit 1: not this time).
    Claim {
        job: String,
        #[arg(long)]
        period_ms: u64,
        /// Lease of the run (default: the period).
        #[arg(long, default_value_t = 0)]
        lease_ms: u64,
        #[arg(long, default_value = "")]
        holder: String,
    },
}

/// A refused renew or release: printed, and exit 1 like a refused acquire.
fn stale(global: &GlobalOptions, job: &str, status: tonic::Status) -> anyhow::Result<u8> {
    if status.code() != tonic::Code::FailedPrecondition {
        return Err(call_error(status, global));
    }
    global.output().line(
        || format!("{job}  refused: {}", status.message()),
        || json!({"job": job, "granted": false, "reason": status.message()}),
    );
    Ok(exit::STALE)
}

fn granted(yes: bool) -> u8 {
    if yes {
        exit::OK
    } else {
        exit::STALE
    }
}

pub async fn run(args: JobsArgs, global: &GlobalOptions) -> anyhow::Result<u8> {
    let mut client = JobsClient::new(channel(global).await?);
    let out = global.output();
    match args.op {
        JobsOp::Acquire {
            job,
            ttl_ms,
            holder,
        } => {
            let r = client
                .try_acquire(pb::TryAcquireRequest {
                    job: job.clone(),
                    ttl_ms,
                    holder,
                })
                .await
                .map_err(|s| call_error(s, global))?
                .into_inner();
            out.line(
                || {
                    let verb = if r.granted { "granted to" } else { "held by" };
                    format!("{job}  {verb} {}  token {}  {} ms left", r.holder, r.fencing_token, r.ttl_ms)
                },
                || json!({"job": job, "granted": r.granted, "holder": r.holder, "fencing_token": r.fencing_token, "ttl_ms": r.ttl_ms}),
            );
            Ok(granted(r.granted))
        }
        JobsOp::Renew { job, token, ttl_ms } => {
            match client
                .renew(pb::RenewRequest {
                    job: job.clone(),
                    fencing_token: token,
                    ttl_ms,
                })
                .await
            {
                Ok(r) => {
                    let ttl = r.into_inner().ttl_ms;
                    out.line(
                        || format!("{job}  renewed  token {token}  {ttl} ms left"),
                        || json!({"job": job, "granted": true, "fencing_token": token, "ttl_ms": ttl}),
                    );
                    Ok(exit::OK)
                }
                Err(status) => stale(global, &job, status),
            }
        }
        JobsOp::Release { job, token } => {
            match client
                .release(pb::ReleaseRequest {
                    job: job.clone(),
                    fencing_token: token,
                })
                .await
            {
                Ok(_) => {
                    out.line(
                        || format!("{job}  released  token {token}"),
                        || json!({"job": job, "granted": true, "fencing_token": token}),
                    );
                    Ok(exit::OK)
                }
                Err(status) => stale(global, &job, status),
            }
        }
        JobsOp::Claim {
            job,
            period_ms,
            lease_ms,
            holder,
        } => {
            let r = client
                .claim_run(pb::ClaimRunRequest {
                    job: job.clone(),
                    period_ms,
                    lease_ms,
                    holder,
                })
                .await
                .map_err(|s| call_error(s, global))?
                .into_inner();
            out.line(
                || {
                    if r.granted {
                        format!("{job}  run now  period {}  token {}  lease {} ms", r.period, r.fencing_token, r.lease_ms)
                    } else {
                        format!("{job}  not now ({})  period {}  next period in {} ms", r.refused_because, r.period, r.next_period_in_ms)
                    }
                },
                || json!({"job": job, "granted": r.granted, "period": r.period, "fencing_token": r.fencing_token, "holder": r.holder, "lease_ms": r.lease_ms, "next_period_in_ms": r.next_period_in_ms, "refused_because": r.refused_because}),
            );
            Ok(granted(r.granted))
        }
    }
}
