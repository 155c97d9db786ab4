//! The sampling side of the auditor, on every answering path: a random draw per current
//! answer, and a bounded queue of the samples drawn (see the bounds in the parent module).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::metrics::audit::AuditMetrics;
use crate::versions::audit::verdict::{Undecided, Verdict};

/// Most samples waiting to be audited.
pub const QUEUE_SAMPLES: usize = 4_096;

/// Where an audited answer was given (the metric label `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerSource {
    /// This sidecar's mirror.
    Mirror,
    /// A Redis read made for the check.
    Redis,
    /// A client's in-process mirror (submitted through `coherence.v1.Observer`).
    ClientMirror,
}

impl AnswerSource {
    pub fn label(self) -> &'static str {
        match self {
            AnswerSource::Mirror => "mirror",
            AnswerSource::Redis => "redis",
            AnswerSource::ClientMirror => "client_mirror",
        }
    }
}

/// One answer "`token` of `key` is current", given at `at` under staleness bound `bound`.
#[derive(Debug, Clone)]
pub struct Sample {
    pub key: String,
    pub token: String,
    pub at: Instant,
    pub bound: Duration,
    pub source: AnswerSource,
}

/// The sampling side of the auditor, shared by every answering path.
pub struct Auditor {
    /// A current answer is sampled when a random `u32` is below this (rate × 2³²).
    threshold: u64,
    queue: mpsc::Sender<Sample>,
    pending: Mutex<Option<mpsc::Receiver<Sample>>>,
    metrics: AuditMetrics,
}

impl Auditor {
    /// An auditor sampling `rate` (0 to 1) of the current answers.
    pub fn new(rate: f64, metrics: AuditMetrics) -> Auditor {
        for reason in Undecided::ALL {
            let _ = metrics
                .undecided
                .get_or_create(&[("reason", reason.label())]);
        }
        let (queue, pending) = mpsc::channel(QUEUE_SAMPLES);
        Auditor {
            threshold: (rate.clamp(0.0, 1.0) * 4_294_967_296.0) as u64,
            queue,
            pending: Mutex::new(Some(pending)),
            metrics,
        }
    }

    /// Whether to sample the current answer at hand.
    #[inline]
    pub fn wants_sample(&self) -> bool {
        self.threshold > 0 && u64::from(rand::random::<u32>()) < self.threshold
    }

    /// Queues `sample` for auditing, or drops and counts it when the queue is full.
    pub fn submit(&self, sample: Sample) {
        if self.queue.try_send(sample).is_err() {
            self.metrics.dropped.inc();
        }
    }

    /// Queues every sample of `samples` that fits; returns how many were dropped.
    pub fn submit_all(&self, samples: impl IntoIterator<Item = Sample>) -> u64 {
        let before = self.metrics.dropped.get();
        for sample in samples {
            self.submit(sample);
        }
        self.metrics.dropped.get() - before
    }

    pub(super) fn take_pending(&self) -> Option<mpsc::Receiver<Sample>> {
        match self.pending.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        }
    }

    pub(super) fn count(&self, source: AnswerSource, verdict: Verdict) {
        let label = match verdict {
            Verdict::Correct => "correct",
            Verdict::StaleWithinBound => "stale_within_bound",
            Verdict::Violation { .. } => "violation",
            Verdict::Undecided(reason) => {
                self.metrics
                    .undecided
                    .get_or_create(&[("reason", reason.label())])
                    .inc();
                "undecided"
            }
        };
        let counter: Counter = self
            .metrics
            .verdicts
            .get_or_create(&[("source", source.label()), ("verdict", label)])
            .clone();
        counter.inc();
    }
}
