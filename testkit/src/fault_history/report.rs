//! What the history checker found, the bounds it judged against, and the floors that make a
//! run that tested nothing fail.

use std::collections::BTreeMap;
use std::time::Duration;

use super::history::Via;

/// The bounds a run is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Allowance of bounded reads (the sidecar's and the client mirrors' `max_staleness`).
    pub max_staleness: Duration,
    pub check_deadline: Duration,
    /// Allowance for a noisy machine on top of the check deadline. Generous on purpose: the
    /// point is "never hangs", not latency.
    pub check_slack: Duration,
    /// Judge strong reads by *completed* bumps only (guarantee 3 as worded): with read leases
    /// a holder may answer the previous version while a bump is still waiting for its
    /// acknowledgement, though another read has already returned the new one (see
    /// docs/design.md, "Read leases"); without leases any version some operation returned
    /// supersedes the older ones for strong reads too.
    pub strong_by_completed_bumps: bool,
}

/// The least a phase must contain for its verdict to mean anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Floors {
    /// Checks that answered "current" (a sidecar answering "not current" to everything would
    /// pass every other rule).
    pub current_answers: u64,
    /// Checks of tokens already superseded when the check began: the only ones that can show
    /// a false "current".
    pub superseded_answers: u64,
    /// Answers from each source the phase is required to hear from.
    pub answers_per_source: u64,
    /// Completed bumps.
    pub bumps: u64,
}

/// Counts of one phase of a run.
#[derive(Debug, Clone, Default)]
pub struct PhaseStats {
    pub bumps_ok: u64,
    pub answers: u64,
    pub current_answers: u64,
    pub superseded_answers: u64,
    pub answers_by_source: BTreeMap<Via, u64>,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    pub bumps_ok: u64,
    pub bumps_failed: u64,
    pub gets: u64,
    pub gets_failed: u64,
    pub default_checks: u64,
    pub strong_checks: u64,
    /// Checks that failed while their sidecar was known to be down (tolerated).
    pub checks_failed_in_outage: u64,
    pub current_answers: u64,
    /// Checks by the sidecar's stated source (`mirror`, `redis`, `fail_closed`, `client` for a
    /// client mirror, which does not say).
    pub checks_by_source: BTreeMap<&'static str, u64>,
    pub data_reads: u64,
    pub data_writes: u64,
    /// Bounded reads that called a superseded version current, within `max_staleness`.
    pub stale_within_bound: u64,
    pub max_default_staleness: Duration,
    pub max_strong_staleness: Duration,
    /// The largest staleness of a bounded answer, per source.
    pub max_staleness_by_source: BTreeMap<Via, Duration>,
    pub max_check_latency: Duration,
    pub phases: BTreeMap<&'static str, PhaseStats>,
    pub violations: Vec<String>,
}

impl Report {
    pub fn checks(&self) -> u64 {
        self.default_checks + self.strong_checks
    }

    /// Panics with the first violations, if any.
    pub fn assert_clean(&self, what: &str) {
        if !self.violations.is_empty() {
            let shown: Vec<String> = self
                .violations
                .iter()
                .take(10)
                .map(|s| format!("  - {s}"))
                .collect();
            panic!(
                "{what}: {} violation(s) of the guarantees, first ones:\n{}",
                self.violations.len(),
                shown.join("\n")
            );
        }
    }

    /// What `phase` lacks to meet `floors` (with every source in `sources` heard from).
    pub fn shortfalls(&self, phase: &str, floors: &Floors, sources: &[Via]) -> Vec<String> {
        let empty = PhaseStats::default();
        let stats = self.phases.get(phase).unwrap_or(&empty);
        let mut out = Vec::new();
        let mut floor = |what: &str, got: u64, need: u64| {
            if got < need {
                out.push(format!("phase {phase}: {got} {what}, fewer than {need}"));
            }
        };
        floor("completed bumps", stats.bumps_ok, floors.bumps);
        floor(
            "current answers",
            stats.current_answers,
            floors.current_answers,
        );
        floor(
            "answers on superseded tokens",
            stats.superseded_answers,
            floors.superseded_answers,
        );
        for source in sources {
            let got = stats.answers_by_source.get(source).copied().unwrap_or(0);
            floor(
                &format!("answers from {source}"),
                got,
                floors.answers_per_source,
            );
        }
        out
    }

    /// Panics unless `phase` meets `floors`: a run too thin to have caught anything fails.
    pub fn assert_not_vacuous(&self, what: &str, phase: &str, floors: &Floors, sources: &[Via]) {
        let short = self.shortfalls(phase, floors, sources);
        assert!(
            short.is_empty(),
            "{what}: the run was too thin to judge:\n  - {}\n{self}",
            short.join("\n  - ")
        );
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bumps {} ok / {} failed, gets {} ({} failed), checks {} default + {} strong ({} failed in outages, {} current), by source {:?}, cache reads {} / writes {}, stale-within-bound {}, max staleness default {:?} / strong {:?}, by source {:?}, max check latency {:?}, violations {}",
            self.bumps_ok,
            self.bumps_failed,
            self.gets,
            self.gets_failed,
            self.default_checks,
            self.strong_checks,
            self.checks_failed_in_outage,
            self.current_answers,
            self.checks_by_source,
            self.data_reads,
            self.data_writes,
            self.stale_within_bound,
            self.max_default_staleness,
            self.max_strong_staleness,
            self.max_staleness_by_source,
            self.max_check_latency,
            self.violations.len()
        )?;
        for (phase, s) in &self.phases {
            write!(
                f,
                "; phase {phase}: {} bumps, {} answers ({} current, {} on superseded tokens) by source {:?}",
                s.bumps_ok, s.answers, s.current_answers, s.superseded_answers, s.answers_by_source
            )?;
        }
        Ok(())
    }
}
