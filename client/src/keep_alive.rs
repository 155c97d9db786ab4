//! Keeping a job lease alive while the work runs, and saying at once when it is lost.
//!
//! docs/jobs.md tells holders to renew every third of the TTL; doing that by hand means a timer
//! next to the work and a decision about failed renewals. [`LeaseKeeper`] does it on a task of
//! its own: a renewal every third of the TTL, quicker retries after a failed one, and a loss
//! reported the moment the sidecar refuses the token *or* the lease's local expiry passes
//! without a renewal known to have succeeded (a renewal still in flight then counts as failed:
//! the work must stop, not hope). Fencing tokens stay the real protection: the work writes
//! under the token and the resource refuses older ones.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::Error;
use crate::jobs::{Jobs, Lease};

/// Why a lease kept alive by a [`LeaseKeeper`] was lost. Stop the work.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseLoss {
    /// The sidecar refused to renew: the lease expired or another holder took it.
    #[error("the sidecar refused to renew the lease")]
    Refused(#[source] Error),
    /// No renewal was known to succeed before the lease's local expiry (sidecar or Redis
    /// unreachable, or too slow); another holder may have it now.
    #[error("the lease expired before a renewal succeeded")]
    Expired {
        /// The last renewal's failure, if one failed (none when a renewal was still in
        /// flight at the expiry).
        #[source]
        last_error: Option<Error>,
    },
}

/// What the renewal task publishes.
#[derive(Debug, Clone)]
struct Kept {
    lease: Lease,
    renewals: u64,
    loss: Option<LeaseLoss>,
}

/// A lease renewed in the background every third of its TTL, from [`Jobs::keep_alive`].
/// Dropping it stops the renewals (the lease then runs out; [`LeaseKeeper::release`] gives it
/// up at once).
///
/// ```no_run
/// # async fn reindex(_token: u64) {}
/// # async fn demo(client: coherence_client::Client) -> Result<(), coherence_client::Error> {
/// use std::time::Duration;
/// use coherence_client::Acquired;
///
/// let jobs = client.jobs();
/// let ttl = Duration::from_secs(30);
/// if let Acquired::Granted(lease) = jobs.try_acquire("reindex", ttl).await? {
///     let keeper = jobs.keep_alive(lease, ttl);
///     tokio::select! {
///         () = reindex(keeper.lease().fencing_token) => keeper.release().await?,
///         loss = keeper.lost() => eprintln!("stopped the reindex: {loss}"),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LeaseKeeper {
    jobs: Jobs,
    state: watch::Receiver<Kept>,
    task: JoinHandle<()>,
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Jobs {
    /// Renews `lease` to `ttl` every third of `ttl` until the returned keeper is dropped or
    /// released, and reports its loss ([`LeaseKeeper::lost`]). A failed renewal is retried
    /// sooner; the lease counts as lost when the sidecar refuses it or when its
    /// [`Lease::expires_at`] passes before a renewal succeeded. Call inside a Tokio runtime.
    pub fn keep_alive(&self, lease: Lease, ttl: Duration) -> LeaseKeeper {
        let (publish, state) = watch::channel(Kept {
            lease: lease.clone(),
            renewals: 0,
            loss: None,
        });
        let task = tokio::spawn(keep(self.clone(), lease, ttl, publish));
        LeaseKeeper {
            jobs: self.clone(),
            state,
            task,
        }
    }
}

impl LeaseKeeper {
    /// The lease as last renewed (its fencing token never changes).
    pub fn lease(&self) -> Lease {
        self.state.borrow().lease.clone()
    }

    /// Renewals that succeeded so far.
    pub fn renewals(&self) -> u64 {
        self.state.borrow().renewals
    }

    /// Why the lease was lost, once it was.
    pub fn loss(&self) -> Option<LeaseLoss> {
        self.state.borrow().loss.clone()
    }

    /// Waits until the lease is lost, and says why.
    pub async fn lost(&self) -> LeaseLoss {
        let mut state = self.state.clone();
        let seen = state.wait_for(|kept| kept.loss.is_some()).await;
        match seen {
            Ok(kept) => kept
                .loss
                .clone()
                .unwrap_or(LeaseLoss::Expired { last_error: None }),
            // The task is gone without a verdict (it cannot end otherwise while we live):
            // nothing renews the lease any more.
            Err(_) => LeaseLoss::Expired { last_error: None },
        }
    }

    /// Stops renewing and gives the lease up. [`Error::LeaseLost`] when it was no longer ours.
    pub async fn release(self) -> Result<(), Error> {
        self.task.abort();
        let lease = self.lease();
        self.jobs.release(&lease).await
    }
}

/// Renews until the lease is lost (or the keeper aborts this task).
async fn keep(jobs: Jobs, mut lease: Lease, ttl: Duration, publish: watch::Sender<Kept>) {
    let period = (ttl / 3).max(Duration::from_millis(1));
    let retry = (period / 3).max(Duration::from_millis(1));
    let mut next = Instant::now() + period;
    let mut renewals = 0;
    let mut last_error = None;
    let loss = loop {
        let expires_at = Instant::from_std(lease.expires_at);
        tokio::time::sleep_until(next.min(expires_at)).await;
        if Instant::now() >= expires_at {
            break LeaseLoss::Expired { last_error };
        }
        let mut renewed = lease.clone();
        tokio::select! {
            answer = jobs.renew(&mut renewed, ttl) => match answer {
                Ok(_) => {
                    lease = renewed;
                    renewals += 1;
                    last_error = None;
                    next = Instant::now() + period;
                    publish.send_replace(Kept { lease: lease.clone(), renewals, loss: None });
                }
                Err(err @ Error::LeaseLost { .. }) => break LeaseLoss::Refused(err),
                Err(err) => {
                    tracing::debug!(error = %err, job = %lease.job, "lease renewal failed; retrying");
                    last_error = Some(err);
                    next = Instant::now() + retry;
                }
            },
            () = tokio::time::sleep_until(expires_at) => break LeaseLoss::Expired { last_error },
        }
    };
    tracing::warn!(job = %lease.job, fencing_token = lease.fencing_token, %loss, "job lease lost");
    publish.send_replace(Kept {
        lease,
        renewals,
        loss: Some(loss),
    });
}
