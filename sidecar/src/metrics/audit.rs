//! Metrics of the consistency observer: the auditor's verdicts on sampled answers and the
//! propagation prober's canary latencies (docs/operations.md, "The consistency SLO"). Their
//! label values are fixed sets, so cardinality stays fixed.

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
    pub canary_propagation: Histogram,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        AuditMetrics {
            verdicts: Family::default(),
            undecided: Family::default(),
            suspected: Counter::default(),
            dropped: Counter::default(),
            canary_bumps: Counter::default(),
            // 0.25 ms .. ~4 s
            canary_propagation: Histogram::new(exponential_buckets(0.00025, 2.0, 15)),
        }
    }
}

impl AuditMetrics {
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
            self.canary_propagation.clone(),
        );
    }
}
