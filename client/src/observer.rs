//! The sidecar's consistency observer (`coherence.v1.Observer`) from the client: submit the
//! answers a client mirror sampled, so the sidecar's auditor judges them like its own
//! ([`AnswerSampler`], which [`crate::MirroredClient`] uses), and read the sidecar's SLO counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coherence_proto::v1 as pb;
use coherence_proto::v1::observer_client::ObserverClient;

use crate::call::Target;
use crate::error::Error;
use crate::transport::Transport;

/// The observer service of one sidecar. Get one from [`crate::Client::observer`].
#[derive(Debug, Clone)]
pub struct Observer {
    grpc: ObserverClient<Transport>,
    target: Target,
}

impl Observer {
    pub(crate) fn new(channel: Transport, target: Target) -> Observer {
        Observer {
            grpc: ObserverClient::new(channel),
            target,
        }
    }

    /// Hands sampled answers to the sidecar's auditor; returns how many it queued and how many
    /// it dropped (its queue was full).
    pub async fn submit_answers(
        &self,
        answers: Vec<pb::AnsweredCheck>,
    ) -> Result<(u32, u32), Error> {
        let mut grpc = self.grpc.clone();
        let reply = self
            .target
            .call(grpc.submit_answers(self.target.request(pb::SubmitAnswersRequest { answers })))
            .await?;
        Ok((reply.accepted, reply.dropped))
    }

    /// The sidecar's audit verdicts and canary propagation histogram since it started.
    pub async fn slo(&self) -> Result<pb::SloReport, Error> {
        let mut grpc = self.grpc.clone();
        self.target
            .call(grpc.get_slo(self.target.request(pb::GetSloRequest {})))
            .await
    }
}

/// Most sampled answers a mirror holds between two submissions; more are dropped and counted.
pub const SAMPLE_BUFFER: usize = 1_024;
/// How often a mirror submits what it sampled.
pub const SUBMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The sampling side of a client mirror's audit: a random draw per local "current" answer, and
/// a bounded buffer of the answers drawn (each holds its key and token: at most
/// [`SAMPLE_BUFFER`] × (key + token + 16 B)).
#[derive(Debug)]
pub(crate) struct AnswerSampler {
    /// An answer is sampled when a random `u32` is below this (rate × 2³²).
    threshold: u64,
    max_staleness_ms: u64,
    buffer: Mutex<Vec<pb::AnsweredCheck>>,
    dropped: AtomicU64,
}

thread_local! {
    /// xorshift64* state per thread, started from the standard library's random hasher keys.
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new({
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new().build_hasher().finish() | 1
    });
}

/// A fast, non-cryptographic random `u32` (sampling only).
fn random_u32() -> u32 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    })
}

impl AnswerSampler {
    pub(crate) fn new(rate: f64, max_staleness: Duration) -> AnswerSampler {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        AnswerSampler {
            threshold: (rate * 4_294_967_296.0) as u64,
            max_staleness_ms: max_staleness.as_millis() as u64,
            buffer: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
        }
    }

    /// Records the local answer "`token` of `key` is current" if it is drawn.
    #[inline]
    pub(crate) fn answered_current(&self, key: &str, token: &str) {
        if self.threshold == 0 || u64::from(random_u32()) >= self.threshold {
            return;
        }
        let answered_at_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut buffer = match self.buffer.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if buffer.len() >= SAMPLE_BUFFER {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buffer.push(pb::AnsweredCheck {
            key: key.to_string(),
            token: token.to_string(),
            answered_at_unix_us,
            max_staleness_ms: self.max_staleness_ms,
        });
    }

    /// Whether it samples at all (no submission task is needed otherwise).
    pub(crate) fn is_on(&self) -> bool {
        self.threshold > 0
    }

    fn take(&self) -> Vec<pb::AnsweredCheck> {
        match self.buffer.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    /// Samples dropped so far: buffer full, the sidecar's queue full, or a failed submission.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Submits what was sampled every [`SUBMIT_INTERVAL`], forever (the mirror aborts it).
    pub(crate) async fn run(self: std::sync::Arc<Self>, observer: Observer) {
        let mut tick = tokio::time::interval(SUBMIT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let answers = self.take();
            if answers.is_empty() {
                continue;
            }
            let n = answers.len() as u64;
            match observer.submit_answers(answers).await {
                Ok((_, dropped)) => {
                    self.dropped
                        .fetch_add(u64::from(dropped), Ordering::Relaxed);
                }
                Err(err) => {
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::debug!(error = %err, "could not submit sampled answers");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_about_the_rate_and_bounds_its_buffer() {
        let sampler = AnswerSampler::new(0.1, Duration::from_millis(500));
        for _ in 0..10_000 {
            sampler.answered_current("k", "e.1.00000000000000aa");
        }
        let taken = sampler.take().len();
        assert!((700..1_300).contains(&taken), "{taken} of 10,000 at 10 %");
        let all = AnswerSampler::new(1.0, Duration::from_millis(500));
        for _ in 0..SAMPLE_BUFFER + 5 {
            all.answered_current("k", "t");
        }
        assert_eq!(all.take().len(), SAMPLE_BUFFER);
        assert_eq!(all.dropped(), 5);
        let none = AnswerSampler::new(0.0, Duration::ZERO);
        none.answered_current("k", "t");
        assert!(none.take().is_empty() && !none.is_on());
    }
}
