//! The auditor's decision rule, as a pure function of one sampled answer and one reading of
//! Redis: correct, stale within the bound, a violation, or undecided. Kept apart from the I/O so
//! that every branch is unit-tested (docs/design.md, "The auditor").
//!
//! A sampled answer called token T of key K current at local instant `t0` (the check's start).
//! T was issued at sequence `q` of epoch `E`. The first bump that superseded T is the first
//! replay-log entry of K after `q` (sequences order a shard's scripts, so it is also the
//! earliest in time). Its `t` field is Redis's `TIME` when its script ran, in milliseconds.
//! The reading carries Redis's `TIME` `R`, read by a script sent at local instant `s` and
//! answered at `r`. With every clock running at a rate within ρ of real time (the design's
//! "Clocks assumed", no agreement between clocks), Redis's clock at real instant `t0 − M` was
//! at least `R − (1+ρ)(r − t0 + M)`, and at `t0` at most `R − (1−ρ)(s − t0)`; a margin of
//! `MARGIN_MS` covers millisecond rounding. A violation is a superseding bump whose script ran
//! provably before `t0 − M` (M = `max_staleness`, or zero for a strong check). A bump completes
//! no earlier than its script runs, so this is stricter than the guarantee's "completed": it is
//! what the fences actually vouch for (every script that ran before a fence was sent) and what
//! a strong check's Redis read sees. (A strong answer given from a mirror under a read lease may
//! legitimately miss a bump whose script ran but which had not completed; such answers need the
//! bump's completion instant, which the log does not hold.)
//! Anything Redis cannot tell (log trimmed, epoch rotated, Redis away) is undecided, never
//! correct.

use std::time::{Duration, Instant};

/// Rate error allowed for every clock (the design's ρ = 0.1 %), in parts per million.
pub const RHO_PPM: u64 = 1_000;
/// Fixed margin added against the verdict that would blame the sidecar, in milliseconds.
pub const MARGIN_MS: u64 = 20;

/// What a sampled answer turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No bump superseded the token before the check began.
    Correct,
    /// A bump superseded it, but not provably more than the bound before the check.
    StaleWithinBound,
    /// A bump of sequence `seq` superseded it provably more than the bound before the check.
    Violation { seq: u64 },
    /// Redis cannot tell (see [`Undecided`]); never counted as correct.
    Undecided(Undecided),
}

/// Why a sample could not be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecided {
    /// The replay log no longer holds the entries after the token.
    LogTrimmed,
    /// The shard started a new epoch: when the token was retired is not recorded.
    EpochChanged,
    /// Redis could not be read in time.
    RedisUnavailable,
    /// More log entries to scan than one audit reads ([`super::evidence::SCAN_LIMIT`]).
    ScanLimit,
    /// The token is not in the form the sidecar issues: its position is unknown.
    Unparsable,
    /// A suspected violation's re-check did not confirm it.
    RecheckDisagreed,
}

impl Undecided {
    pub const ALL: [Undecided; 6] = [
        Undecided::LogTrimmed,
        Undecided::EpochChanged,
        Undecided::RedisUnavailable,
        Undecided::ScanLimit,
        Undecided::Unparsable,
        Undecided::RecheckDisagreed,
    ];

    /// The metric label `reason`.
    pub fn label(self) -> &'static str {
        match self {
            Undecided::LogTrimmed => "log_trimmed",
            Undecided::EpochChanged => "epoch_changed",
            Undecided::RedisUnavailable => "redis_unavailable",
            Undecided::ScanLimit => "scan_limit",
            Undecided::Unparsable => "unparsable",
            Undecided::RecheckDisagreed => "recheck_disagreed",
        }
    }
}

/// One sampled answer "T is current", as the rule needs it.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    pub token: &'a str,
    /// When the check began (local monotonic clock).
    pub at: Instant,
    /// The staleness the answer was allowed: `max_staleness`, or zero for a strong check.
    pub bound: Duration,
}

/// How a log scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// It found the key's first entry after the token.
    Found { seq: u64, at_ms: u64 },
    /// It reached the end of the log, or entries written after the check began: none of the key.
    NoneBeforeCheck,
    /// It stopped at the scan limit without reaching either.
    Truncated,
}

/// One reading of Redis about the answer's key (see [`super::evidence`]).
#[derive(Debug, Clone)]
pub struct Reading {
    /// When the reading script was sent and its answer received (local monotonic clock).
    pub sent: Instant,
    pub received: Instant,
    /// Redis's `TIME` during the script, in milliseconds since the Unix epoch.
    pub redis_ms: u64,
    /// The shard's current epoch ("" when it has none).
    pub epoch: String,
    /// The key's current version ("" when it has none).
    pub version: String,
    /// The sequence of the oldest entry still in the replay log, if any.
    pub oldest_seq: Option<u64>,
    pub scan: Scan,
}

/// Redis milliseconds that elapse at most while `local` elapses on our clock.
fn stretched(local: Duration) -> u64 {
    let ms = local.as_millis() as u64;
    ms + (ms * RHO_PPM).div_ceil(1_000_000)
}

/// Redis milliseconds that elapse at least while `local` elapses on our clock.
fn shrunk(local: Duration) -> u64 {
    let ms = local.as_millis() as u64;
    ms - (ms * RHO_PPM).div_ceil(1_000_000).min(ms)
}

/// How long before the reading script's `TIME` the check began at the earliest, less the
/// margin, in Redis milliseconds: log entries written after `TIME` minus this cannot have run
/// before the check began, and the scan stops there. Negative when the check began less than
/// the margin before the script was sent.
pub fn scan_horizon_age_ms(answer_at: Instant, sent: Instant) -> i64 {
    shrunk(sent.saturating_duration_since(answer_at)) as i64 - MARGIN_MS as i64
}

/// Decides one sample from one reading.
pub fn decide(answer: &Answer<'_>, reading: &Reading) -> Verdict {
    let Some((epoch, Some(seq))) = crate::versions::version::Version::position(answer.token) else {
        return Verdict::Undecided(Undecided::Unparsable);
    };
    if reading.epoch == epoch && reading.version == answer.token {
        // Still current now, and versions are never issued twice: nothing superseded it.
        return Verdict::Correct;
    }
    if reading.epoch != epoch {
        return Verdict::Undecided(Undecided::EpochChanged);
    }
    let trimmed = reading.oldest_seq.is_none_or(|oldest| oldest > seq + 1);
    match reading.scan {
        Scan::Found { seq: found, at_ms } => {
            // Redis's clock at real instant `at − bound` was at least `latest_before`.
            let since = reading.received.saturating_duration_since(answer.at) + answer.bound;
            let latest_before = reading.redis_ms.saturating_sub(stretched(since));
            if at_ms + 1 + MARGIN_MS <= latest_before {
                Verdict::Violation { seq: found }
            } else if trimmed {
                // An earlier entry of the key may be missing, and might prove a violation.
                Verdict::Undecided(Undecided::LogTrimmed)
            } else {
                Verdict::StaleWithinBound
            }
        }
        Scan::NoneBeforeCheck if trimmed => Verdict::Undecided(Undecided::LogTrimmed),
        Scan::NoneBeforeCheck => Verdict::Correct,
        Scan::Truncated => Verdict::Undecided(Undecided::ScanLimit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "e1.5.00000000000000aa";

    fn reading(at: Instant, later: Duration, scan: Scan) -> Reading {
        Reading {
            sent: at + later,
            received: at + later + Duration::from_millis(1),
            redis_ms: 1_000_000,
            epoch: "e1".into(),
            version: "e1.9.00000000000000bb".into(),
            oldest_seq: Some(1),
            scan,
        }
    }

    fn answer(at: Instant, bound_ms: u64) -> Answer<'static> {
        Answer {
            token: T,
            at,
            bound: Duration::from_millis(bound_ms),
        }
    }

    #[test]
    fn a_token_still_current_is_correct() {
        let at = Instant::now();
        let mut r = reading(at, Duration::from_millis(10), Scan::Truncated);
        r.version = T.into();
        assert_eq!(decide(&answer(at, 500), &r), Verdict::Correct);
    }

    #[test]
    fn a_bump_long_before_the_check_is_a_violation_and_one_within_the_bound_is_not() {
        let at = Instant::now();
        // Read 1 s after the check: Redis's clock at the check was about 999_000.
        let later = Duration::from_secs(1);
        let long_before = Scan::Found {
            seq: 9,
            at_ms: 998_000,
        };
        assert_eq!(
            decide(&answer(at, 500), &reading(at, later, long_before)),
            Verdict::Violation { seq: 9 }
        );
        let within = Scan::Found {
            seq: 9,
            at_ms: 998_700,
        };
        assert_eq!(
            decide(&answer(at, 500), &reading(at, later, within)),
            Verdict::StaleWithinBound
        );
        // A strong answer tolerates nothing beyond the clock margin.
        assert_eq!(
            decide(&answer(at, 0), &reading(at, later, within)),
            Verdict::Violation { seq: 9 }
        );
        // Inside the margin nothing is blamed.
        let at_margin = Scan::Found {
            seq: 9,
            at_ms: 998_990,
        };
        assert_eq!(
            decide(&answer(at, 0), &reading(at, later, at_margin)),
            Verdict::StaleWithinBound
        );
    }

    #[test]
    fn what_redis_cannot_tell_is_undecided_never_correct() {
        let at = Instant::now();
        let later = Duration::from_millis(10);
        let mut r = reading(at, later, Scan::NoneBeforeCheck);
        assert_eq!(decide(&answer(at, 500), &r), Verdict::Correct);
        r.oldest_seq = Some(7);
        assert_eq!(
            decide(&answer(at, 500), &r),
            Verdict::Undecided(Undecided::LogTrimmed)
        );
        r.oldest_seq = None;
        assert_eq!(
            decide(&answer(at, 500), &r),
            Verdict::Undecided(Undecided::LogTrimmed)
        );
        let mut r = reading(at, later, Scan::Truncated);
        assert_eq!(
            decide(&answer(at, 500), &r),
            Verdict::Undecided(Undecided::ScanLimit)
        );
        r.epoch = "e2".into();
        assert_eq!(
            decide(&answer(at, 500), &r),
            Verdict::Undecided(Undecided::EpochChanged)
        );
        let garbage = Answer {
            token: "hand-written",
            ..answer(at, 500)
        };
        assert_eq!(
            decide(&garbage, &r),
            Verdict::Undecided(Undecided::Unparsable)
        );
    }

    #[test]
    fn a_trimmed_log_still_proves_a_violation_it_shows() {
        let at = Instant::now();
        let mut r = reading(
            at,
            Duration::from_secs(1),
            Scan::Found {
                seq: 9,
                at_ms: 990_000,
            },
        );
        r.oldest_seq = Some(8);
        assert_eq!(decide(&answer(at, 500), &r), Verdict::Violation { seq: 9 });
        r.scan = Scan::Found {
            seq: 9,
            at_ms: 998_900,
        };
        assert_eq!(
            decide(&answer(at, 500), &r),
            Verdict::Undecided(Undecided::LogTrimmed)
        );
    }

    #[test]
    fn the_scan_horizon_is_the_latest_redis_time_of_the_check_plus_the_margin() {
        let at = Instant::now();
        let sent = at + Duration::from_secs(1);
        assert_eq!(scan_horizon_age_ms(at, sent), 999 - MARGIN_MS as i64);
        assert_eq!(scan_horizon_age_ms(sent, at), -(MARGIN_MS as i64));
    }
}
