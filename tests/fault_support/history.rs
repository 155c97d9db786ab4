//! The history checker: every operation of a fault run, with its start and end instants, and
//! the judgement of the checks in it against the design's guarantees.
//!
//! A token T of key K is *superseded* by a bump B of K when B began after some operation that
//! returned T had ended: T was current at that moment and B's version is newer (versions are
//! never reissued). From then on T may be reported current only by a default check that began
//! less than `max_staleness` after B completed, and never by a strong one. The checker finds,
//! for every "current" answer, the earliest completion of a bump that supersedes its token; the
//! difference to the check's start is the answer's *staleness* (positive: stale).
//!
//! All instants are `std::time::Instant` of this process, the same monotonic clock the
//! in-process sidecars use, so no clock agreement is assumed here either.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coherence_client::CheckSource;

/// One bump of one key (single-key bumps only).
#[derive(Debug, Clone)]
pub struct BumpRecord {
    pub key: String,
    pub start: Instant,
    pub end: Instant,
    /// The new version, when the bump completed.
    pub version: Option<String>,
}

/// One check of one entry.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    pub key: String,
    pub token: String,
    pub strong: bool,
    pub start: Instant,
    pub end: Instant,
    /// `(current, source)`, or the error text when the call failed.
    pub answer: Result<(bool, CheckSource), String>,
}

/// Everything recorded during one run.
#[derive(Default)]
pub struct History {
    inner: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    bumps: Vec<BumpRecord>,
    checks: Vec<CheckRecord>,
    /// Token → its key and the earliest end of an operation that returned it.
    seen: HashMap<String, (String, Instant)>,
    gets: u64,
    failed_gets: u64,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that an operation ending at `end` returned `token` of `key` (a Get, a Bump or a
    /// Check's answer).
    pub fn saw(&self, key: &str, token: &str, end: Instant) {
        let mut r = self.lock();
        let seen = r
            .seen
            .entry(token.to_string())
            .or_insert_with(|| (key.to_string(), end));
        seen.1 = seen.1.min(end);
    }

    /// Every token seen so far that a completed bump superseded, with its key.
    pub fn superseded_tokens(&self) -> Vec<(String, String)> {
        let r = self.lock();
        let mut last_start: HashMap<&str, Instant> = HashMap::new();
        for b in r.bumps.iter().filter(|b| b.version.is_some()) {
            let s = last_start.entry(&b.key).or_insert(b.start);
            *s = (*s).max(b.start);
        }
        r.seen
            .iter()
            .filter(|(_, (key, seen))| last_start.get(key.as_str()).is_some_and(|s| s > seen))
            .map(|(token, (key, _))| (key.clone(), token.clone()))
            .collect()
    }

    pub fn record_get(&self, ok: bool) {
        let mut r = self.lock();
        r.gets += 1;
        if !ok {
            r.failed_gets += 1;
        }
    }

    pub fn record_bump(&self, bump: BumpRecord) {
        if let Some(v) = &bump.version {
            self.saw(&bump.key, v, bump.end);
        }
        self.lock().bumps.push(bump);
    }

    pub fn record_check(&self, check: CheckRecord) {
        self.lock().checks.push(check);
    }

    /// Judges everything recorded so far.
    pub fn analyse(&self, limits: &Limits) -> Report {
        let r = self.lock();
        // Per key: completed bumps sorted by start, with the suffix minimum of their ends, so
        // "earliest completion among bumps that began after t" is one binary search.
        let mut by_key: HashMap<&str, Vec<(Instant, Instant)>> = HashMap::new();
        for b in r.bumps.iter().filter(|b| b.version.is_some()) {
            by_key.entry(&b.key).or_default().push((b.start, b.end));
        }
        let mut suffix_min: HashMap<&str, (Vec<Instant>, Vec<Instant>)> = HashMap::new();
        for (key, mut bumps) in by_key {
            bumps.sort_by_key(|(start, _)| *start);
            let starts: Vec<Instant> = bumps.iter().map(|(s, _)| *s).collect();
            let mut mins = vec![bumps.last().map_or_else(Instant::now, |(_, e)| *e); bumps.len()];
            for i in (0..bumps.len()).rev() {
                mins[i] = if i + 1 < bumps.len() {
                    bumps[i].1.min(mins[i + 1])
                } else {
                    bumps[i].1
                };
            }
            suffix_min.insert(key, (starts, mins));
        }
        let superseded_at = |key: &str, token: &str| -> Option<Instant> {
            let seen = r.seen.get(token)?.1;
            let (starts, mins) = suffix_min.get(key)?;
            let first_after = starts.partition_point(|s| *s <= seen);
            mins.get(first_after).copied()
        };

        let mut report = Report {
            bumps_ok: r.bumps.iter().filter(|b| b.version.is_some()).count() as u64,
            bumps_failed: r.bumps.iter().filter(|b| b.version.is_none()).count() as u64,
            gets: r.gets,
            gets_failed: r.failed_gets,
            ..Report::default()
        };
        for c in &r.checks {
            let took = c.end.saturating_duration_since(c.start);
            report.max_check_latency = report.max_check_latency.max(took);
            if took > limits.check_deadline + limits.check_slack {
                report.violations.push(format!(
                    "check of {} ({}) took {took:?}, beyond deadline {:?} + slack {:?}",
                    c.key,
                    if c.strong { "strong" } else { "default" },
                    limits.check_deadline,
                    limits.check_slack
                ));
            }
            let (current, source) = match &c.answer {
                Ok(answer) => *answer,
                Err(err) => {
                    report.checks_failed += 1;
                    report.violations.push(format!(
                        "check of {} failed instead of answering: {err}",
                        c.key
                    ));
                    continue;
                }
            };
            *report
                .checks_by_source
                .entry(source_label(source))
                .or_default() += 1;
            if c.strong {
                report.strong_checks += 1;
            } else {
                report.default_checks += 1;
            }
            if !current {
                continue;
            }
            report.current_answers += 1;
            let Some(superseded) = superseded_at(&c.key, &c.token) else {
                continue;
            };
            let Some(stale_by) = c.start.checked_duration_since(superseded) else {
                continue;
            };
            let allowance = if c.strong {
                Duration::ZERO
            } else {
                limits.max_staleness
            };
            if c.strong {
                report.max_strong_staleness = report.max_strong_staleness.max(stale_by);
            } else {
                report.max_default_staleness = report.max_default_staleness.max(stale_by);
                report.stale_within_bound += u64::from(stale_by <= allowance);
            }
            if stale_by > allowance && !stale_by.is_zero() {
                report.violations.push(format!(
                    "{} check of {} answered current for token {} superseded by a bump that completed {stale_by:?} before the check began (allowed {allowance:?}; source {source:?})",
                    if c.strong { "strong" } else { "default" },
                    c.key,
                    c.token
                ));
            }
        }
        report
    }
}

fn source_label(source: CheckSource) -> &'static str {
    match source {
        CheckSource::Mirror => "mirror",
        CheckSource::Redis => "redis",
        CheckSource::FailClosed => "fail_closed",
        CheckSource::Unknown => "unknown",
    }
}

/// The bounds a run is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_staleness: Duration,
    pub check_deadline: Duration,
    /// Allowance for a noisy machine on top of the check deadline. Generous on purpose: the
    /// point is "never hangs", not latency.
    pub check_slack: Duration,
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
    pub checks_failed: u64,
    pub current_answers: u64,
    pub checks_by_source: std::collections::BTreeMap<&'static str, u64>,
    /// Default checks that answered current for a superseded token, within `max_staleness`.
    pub stale_within_bound: u64,
    pub max_default_staleness: Duration,
    pub max_strong_staleness: Duration,
    pub max_check_latency: Duration,
    pub violations: Vec<String>,
}

impl Report {
    pub fn checks(&self) -> u64 {
        self.default_checks + self.strong_checks
    }

    /// Panics with the first violations, if any.
    pub fn assert_clean(&self, what: &str) {
        if !self.violations.is_empty() {
            let shown: Vec<&String> = self.violations.iter().take(10).collect();
            panic!(
                "{what}: {} violation(s) of the guarantees, first ones:\n{}",
                self.violations.len(),
                shown
                    .iter()
                    .map(|s| format!("  - {s}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bumps {} ok / {} failed, gets {} ({} failed), checks {} default + {} strong ({} failed, {} current), by source {:?}, stale-within-bound {}, max staleness default {:?} / strong {:?}, max check latency {:?}, violations {}",
            self.bumps_ok,
            self.bumps_failed,
            self.gets,
            self.gets_failed,
            self.default_checks,
            self.strong_checks,
            self.checks_failed,
            self.current_answers,
            self.checks_by_source,
            self.stale_within_bound,
            self.max_default_staleness,
            self.max_strong_staleness,
            self.max_check_latency,
            self.violations.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_staleness: Duration::from_millis(100),
            check_deadline: Duration::from_millis(250),
            check_slack: Duration::from_millis(500),
        }
    }

    fn check(token: &str, strong: bool, start: Instant, current: bool) -> CheckRecord {
        CheckRecord {
            key: "k".into(),
            token: token.into(),
            strong,
            start,
            end: start + Duration::from_millis(1),
            answer: Ok((current, CheckSource::Mirror)),
        }
    }

    #[test]
    fn flags_a_stale_current_answer_and_only_that() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let h = History::default();
        h.saw("k", "v1", t0);
        h.record_bump(BumpRecord {
            key: "k".into(),
            start: t0 + ms(10),
            end: t0 + ms(20),
            version: Some("v2".into()),
        });
        // Strong: superseded 1 ms before the check began: violation.
        h.record_check(check("v1", true, t0 + ms(21), true));
        // Default: within max_staleness: allowed; beyond it: violation.
        h.record_check(check("v1", false, t0 + ms(60), true));
        h.record_check(check("v1", false, t0 + ms(200), true));
        // Current answers for the new token, and "not current" answers, are always fine.
        h.record_check(check("v2", true, t0 + ms(300), true));
        h.record_check(check("v1", true, t0 + ms(300), false));
        let report = h.analyse(&limits());
        assert_eq!(report.violations.len(), 2, "{:#?}", report.violations);
        assert_eq!(report.stale_within_bound, 1);
        assert_eq!(report.max_strong_staleness, ms(1));
        assert_eq!(report.max_default_staleness, ms(180));
    }

    #[test]
    fn a_bump_overlapping_the_token_does_not_supersede_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let h = History::default();
        h.record_bump(BumpRecord {
            key: "k".into(),
            start: t0,
            end: t0 + ms(10),
            version: Some("v2".into()),
        });
        // v1 was seen only at t0 + 5 ms, while the bump ran: order unknown, no claim.
        h.saw("k", "v1", t0 + ms(5));
        h.record_check(check("v1", true, t0 + ms(50), true));
        let slow = CheckRecord {
            end: t0 + ms(2000),
            ..check("v2", false, t0 + ms(60), false)
        };
        h.record_check(slow);
        let report = h.analyse(&limits());
        assert_eq!(
            report.violations.len(),
            1,
            "only the slow check: {:#?}",
            report.violations
        );
        assert!(report.violations[0].contains("took"));
    }
}
