//! Metrics of the consistency observer: the auditor's verdicts on sampled answers and the
//! propagation prober's canary latencies (docs/operations.md, "The consistency SLO"). Their
//! label values are fixed sets, so cardinality stays fixed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::metrics::labels::{Labels1, Labels2};

/// Where an audited answer was given (the label `source`).
pub const AUDIT_SOURCES: [&str; 3] = ["mirror", "redis", "client_mirror"];
/// What the auditor decided (the label `verdict`).
pub const AUDIT_VERDICTS: [&str; 4] = ["correct", "stale_within_bound", "violation", "undecided"];

#[derive(Clone)]
pub struct AuditMetrics {
    /// Sampled answers decided, by source and verdict (violations only once re-checked).
    pub verdicts: Family<Labels2, Counter>,
    /// Undecided samples by reason.
    pub undecided: Family<Labels1, Counter>,
    /// Samples whose first reading looked like a violation (before the re-check).
    pub suspected: Counter,
    /// Samples dropped because the queue was full (never audited).
    pub dropped: Counter,
    /// Canary bumps this sidecar made.
    pub canary_bumps: Counter,
    /// From a canary bump on Redis to this sidecar's mirror applying it.
    pub canary_propagation: Propagation,
}

/// The canary propagation histogram, with its bucket counts readable (prometheus-client keeps
/// its own private), for `coherence.v1.Observer/GetSlo`.
#[derive(Clone)]
pub struct Propagation {
    histogram: Histogram,
    /// Observations per bucket (not cumulative), the last one past every bound.
    buckets: Arc<[AtomicU64; PROPAGATION_BUCKETS + 1]>,
    /// Sum of the observations in microseconds.
    sum_us: Arc<AtomicU64>,
}

/// Bucket upper bounds of the propagation histogram: 0.25 ms doubling to about 4 s.
const PROPAGATION_BUCKETS: usize = 15;

fn propagation_bounds() -> impl Iterator<Item = f64> {
    exponential_buckets(0.00025, 2.0, PROPAGATION_BUCKETS as u16)
}

/// A snapshot of [`Propagation`]: cumulative counts per upper bound, the last one `+Inf`.
#[derive(Debug, Clone, Default)]
pub struct PropagationSnapshot {
    pub upper_bounds: Vec<f64>,
    pub cumulative_counts: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Propagation {
    fn new() -> Propagation {
        Propagation {
            histogram: Histogram::new(propagation_bounds()),
            buckets: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
            sum_us: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn observe(&self, seconds: f64) {
        self.histogram.observe(seconds);
        let bucket = propagation_bounds()
            .position(|bound| seconds <= bound)
            .unwrap_or(PROPAGATION_BUCKETS);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> PropagationSnapshot {
        let mut running = 0;
        let cumulative_counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        PropagationSnapshot {
            upper_bounds: propagation_bounds().chain([f64::INFINITY]).collect(),
            cumulative_counts,
            count: running,
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// The verdict counts of every source together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictTotals {
    pub correct: u64,
    pub stale_within_bound: u64,
    pub violations: u64,
    pub undecided: u64,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        AuditMetrics {
            verdicts: Family::default(),
            undecided: Family::default(),
            suspected: Counter::default(),
            dropped: Counter::default(),
            canary_bumps: Counter::default(),
            canary_propagation: Propagation::new(),
        }
    }
}

impl AuditMetrics {
    /// The verdicts of every source, summed.
    pub fn totals(&self) -> VerdictTotals {
        let sum = |verdict: &'static str| -> u64 {
            AUDIT_SOURCES
                .iter()
                .map(|source| {
                    self.verdicts
                        .get_or_create(&[("source", source), ("verdict", verdict)])
                        .get()
                })
                .sum()
        };
        VerdictTotals {
            correct: sum("correct"),
            stale_within_bound: sum("stale_within_bound"),
            violations: sum("violation"),
            undecided: sum("undecided"),
        }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        // Every series exists from the first scrape, at 0, as rate() and the SLO rules want
        // (the undecided reasons are created by the auditor, which knows them).
        for source in AUDIT_SOURCES {
            for verdict in AUDIT_VERDICTS {
                let _ = self
                    .verdicts
                    .get_or_create(&[("source", source), ("verdict", verdict)]);
            }
        }
        r.register(
            "audit_verdicts",
            "Sampled answers the consistency auditor decided, by source (mirror, redis, client_mirror) and verdict (correct, stale_within_bound, violation, undecided); violations are confirmed by a re-check",
            self.verdicts.clone(),
        );
        r.register(
            "audit_undecided",
            "Sampled answers the auditor could not decide, by reason",
            self.undecided.clone(),
        );
        r.register(
            "audit_suspected",
            "Sampled answers whose first reading looked like a violation, before the re-check",
            self.suspected.clone(),
        );
        r.register(
            "audit_samples_dropped",
            "Sampled answers dropped unaudited because the auditor's queue was full",
            self.dropped.clone(),
        );
        r.register(
            "canary_bumps",
            "Canary keys bumped by this sidecar's propagation prober",
            self.canary_bumps.clone(),
        );
        r.register(
            "canary_propagation_seconds",
            "Time from a canary bump on Redis to this sidecar's mirror applying it (Redis clock corrected by this sidecar's offset estimate)",
            self.canary_propagation.histogram.clone(),
        );
    }
}
