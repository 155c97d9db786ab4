//! Distributed jobs, typed (service `coherence.v1.Jobs`): a lease that one server of the fleet
//! holds at a time, and "run this recurring job now?" answered yes for exactly one server per
//! period.
//!
//! Every grant carries a **fencing token** that grows with every grant of the job. A lease can
//! be lost without its holder noticing (a long pause, a partition), so a holder must not trust
//! that it still holds it: pass the token with every write the job makes and have the resource
//! refuse a token older than the newest it has seen (docs/jobs.md shows the SQL).

use std::time::{Duration, Instant};

use coherence_proto::v1 as pb;
use coherence_proto::v1::jobs_client::JobsClient;

use crate::call::{millis, Target};
use crate::error::Error;
use crate::transport::Transport;

/// The jobs of one sidecar's namespace. From [`Client::jobs`](crate::Client::jobs); cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Jobs {
    grpc: JobsClient<Transport>,
    target: Target,
    holder: String,
}

/// A lease held on a job: the work may run, writing under `fencing_token`, until
/// `expires_at` passes without a renewal. [`Jobs::keep_alive`] renews it in the background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job's name.
    pub job: String,
    /// Larger than every token issued for this job before; pass it with every write.
    pub fencing_token: u64,
    /// Who holds the lease.
    pub holder: String,
    /// Lease time left when the sidecar answered (granted or last renewed).
    pub ttl: Duration,
    /// When the lease expires unless renewed, by this process's monotonic clock: `ttl` counted
    /// from *before* the request was sent, so never later than the sidecar's own expiry (the
    /// sidecar answered after that instant, with the time left then).
    pub expires_at: Instant,
}

impl Lease {
    /// Time left until [`Lease::expires_at`] (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }
}

/// `ttl` after `asked`; a time left too large to add (a nonsense answer) counts as expiring at
/// once, the side that stops work rather than overruns it.
fn expiry(asked: Instant, ttl: Duration) -> Instant {
    asked.checked_add(ttl).unwrap_or(asked)
}

/// The answer to [`Jobs::try_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours.
    Granted(Lease),
    /// Somebody else holds it.
    Held {
        /// The current holder.
        holder: String,
        /// The current holder's fencing token.
        fencing_token: u64,
        /// Its lease time left.
        remaining: Duration,
    },
}

/// The answer to [`Jobs::claim_run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Run the job now, under this lease; [`Jobs::release`] it when done, [`Jobs::renew`] it
    /// if the run outlasts it.
    Granted {
        /// The run's lease.
        lease: Lease,
        /// The period the run is for (Redis time / period length).
        period: u64,
    },
    /// Not this time.
    Refused {
        /// "running" (another server's run holds the lease) or "done" (the period already ran).
        because: String,
        /// The holder of the current run, if any.
        holder: Option<String>,
        /// The period the answer is about.
        period: u64,
        /// Until the next period begins.
        next_period_in: Duration,
    },
}

impl Jobs {
    pub(crate) fn new(channel: Transport, target: Target) -> Jobs {
        Jobs {
            grpc: JobsClient::new(channel),
            target,
            holder: String::new(),
        }
    }

    /// Names the holder in leases and runs taken through this handle (default: the sidecar's
    /// server id).
    pub fn with_holder(mut self, holder: impl Into<String>) -> Jobs {
        self.holder = holder.into();
        self
    }

    /// Takes `job`'s lease for `ttl` if nobody holds it.
    ///
    /// ```no_run
    /// # async fn demo(client: coherence_client::Client) -> Result<(), coherence_client::Error> {
    /// use std::time::Duration;
    /// use coherence_client::Acquired;
    ///
    /// let jobs = client.jobs();
    /// if let Acquired::Granted(lease) = jobs.try_acquire("reindex", Duration::from_secs(30)).await? {
    ///     // ... work, writing with lease.fencing_token, renewing before lease.expires_at
    ///     // (or let jobs.keep_alive(lease, ttl) renew it) ...
    ///     jobs.release(&lease).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire(&self, job: &str, ttl: Duration) -> Result<Acquired, Error> {
        let mut grpc = self.grpc.clone();
        let asked = Instant::now();
        let answer = self
            .target
            .call(grpc.try_acquire(self.target.request(pb::TryAcquireRequest {
                job: job.to_string(),
                ttl_ms: millis(ttl),
                holder: self.holder.clone(),
            })))
            .await?;
        let remaining = Duration::from_millis(answer.ttl_ms);
        Ok(if answer.granted {
            Acquired::Granted(Lease {
                job: job.to_string(),
                fencing_token: answer.fencing_token,
                holder: answer.holder,
                ttl: remaining,
                expires_at: expiry(asked, remaining),
            })
        } else {
            Acquired::Held {
                holder: answer.holder,
                fencing_token: answer.fencing_token,
                remaining,
            }
        })
    }

    /// Extends `lease` to `ttl` from now, updating its `ttl` and `expires_at`; returns the time
    /// left. [`Error::LeaseLost`] when the lease expired or was taken over: stop the work.
    pub async fn renew(&self, lease: &mut Lease, ttl: Duration) -> Result<Duration, Error> {
        let mut grpc = self.grpc.clone();
        let asked = Instant::now();
        let answer = self
            .target
            .call(grpc.renew(self.target.request(pb::RenewRequest {
                job: lease.job.clone(),
                fencing_token: lease.fencing_token,
                ttl_ms: millis(ttl),
            })))
            .await?;
        let remaining = Duration::from_millis(answer.ttl_ms);
        lease.ttl = remaining;
        lease.expires_at = expiry(asked, remaining);
        Ok(remaining)
    }

    /// Gives `lease` up (and marks a [`Jobs::claim_run`] run done). [`Error::LeaseLost`] when
    /// it was no longer ours.
    pub async fn release(&self, lease: &Lease) -> Result<(), Error> {
        let mut grpc = self.grpc.clone();
        self.target
            .call(grpc.release(self.target.request(pb::ReleaseRequest {
                job: lease.job.clone(),
                fencing_token: lease.fencing_token,
            })))
            .await?;
        Ok(())
    }

    /// "Run this recurring job now?": granted to exactly one caller in the fleet per `period`,
    /// with a lease of `lease` (the period when `None`). A run not released before its lease
    /// expires is presumed dead and may be granted again in the same period.
    ///
    /// ```no_run
    /// # async fn demo(client: coherence_client::Client) -> Result<(), coherence_client::Error> {
    /// use std::time::Duration;
    /// use coherence_client::Claimed;
    ///
    /// let jobs = client.jobs();
    /// let hourly = Duration::from_secs(3600);
    /// if let Claimed::Granted { lease, .. } = jobs.claim_run("cleanup", hourly, Some(Duration::from_secs(60))).await? {
    ///     // ... this server runs this hour's cleanup ...
    ///     jobs.release(&lease).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn claim_run(
        &self,
        job: &str,
        period: Duration,
        lease: Option<Duration>,
    ) -> Result<Claimed, Error> {
        let mut grpc = self.grpc.clone();
        let asked = Instant::now();
        let answer = self
            .target
            .call(grpc.claim_run(self.target.request(pb::ClaimRunRequest {
                job: job.to_string(),
                period_ms: millis(period),
                lease_ms: lease.map_or(0, millis),
                holder: self.holder.clone(),
            })))
            .await?;
        Ok(if answer.granted {
            let remaining = Duration::from_millis(answer.lease_ms);
            Claimed::Granted {
                lease: Lease {
                    job: job.to_string(),
                    fencing_token: answer.fencing_token,
                    holder: answer.holder,
                    ttl: remaining,
                    expires_at: expiry(asked, remaining),
                },
                period: answer.period,
            }
        } else {
            Claimed::Refused {
                because: answer.refused_because,
                holder: Some(answer.holder).filter(|h| !h.is_empty()),
                period: answer.period,
                next_period_in: Duration::from_millis(answer.next_period_in_ms),
            }
        })
    }
}
