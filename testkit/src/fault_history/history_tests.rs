//! The checker fed crafted histories, one per rule: each bad history must be rejected, and
//! the good history next to it accepted.

use super::*;

fn limits() -> Limits {
    Limits {
        max_staleness: Duration::from_millis(100),
        check_deadline: Duration::from_millis(250),
        check_slack: Duration::from_millis(500),
        strong_by_completed_bumps: false,
    }
}

/// Instants in milliseconds after one origin.
struct Clock(Instant);

impl Clock {
    fn new() -> Clock {
        Clock(Instant::now())
    }

    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn bump(c: &Clock, from: u64, to: u64, via: &[Via], version: &str) -> BumpRecord {
    BumpRecord {
        key: "k".into(),
        start: c.at(from),
        end: c.at(to),
        via: via.to_vec(),
        outcome: Ok(Some(version.into())),
    }
}

fn check(c: &Clock, at: u64, via: Via, strong: bool, token: &str, current: bool) -> ReadRecord {
    ReadRecord {
        key: "k".into(),
        via,
        strong,
        start: c.at(at),
        end: c.at(at + 1),
        read: Read::Check {
            token: token.into(),
            answer: Ok(CheckAnswer {
                current,
                version: current.then(|| token.to_string()),
                source: Some(CheckSource::Mirror),
            }),
        },
    }
}

fn get(c: &Clock, at: u64, via: Via, strong: bool, version: &str) -> ReadRecord {
    ReadRecord {
        key: "k".into(),
        via,
        strong,
        start: c.at(at),
        end: c.at(at + 1),
        read: Read::Get {
            answer: Ok(version.into()),
        },
    }
}

fn violations(h: &History) -> Vec<String> {
    h.analyse(&limits()).violations
}

const S0: Via = Via::Sidecar(0);
const S1: Via = Via::Sidecar(1);

#[test]
fn a_claim_after_a_later_started_bump_completed_is_judged_by_consistency() {
    let c = Clock::new();
    let h = History::default();
    h.saw("k", "v1", c.at(0));
    h.record_bump(bump(&c, 10, 20, &[S1], "v2"));
    // Strong: superseded 1 ms before the check began: violation.
    h.record_read(check(&c, 21, S0, true, "v1", true));
    // Bounded: within max_staleness allowed; beyond it a violation.
    h.record_read(check(&c, 60, S0, false, "v1", true));
    h.record_read(check(&c, 200, S0, false, "v1", true));
    // Current answers for the new token, and "not current" answers, are always fine.
    h.record_read(check(&c, 300, S0, true, "v2", true));
    h.record_read(check(&c, 300, S0, true, "v1", false));
    let report = h.analyse(&limits());
    assert_eq!(report.violations.len(), 2, "{:#?}", report.violations);
    assert_eq!(report.stale_within_bound, 1);
    assert_eq!(report.max_strong_staleness, Duration::from_millis(1));
    assert_eq!(report.max_default_staleness, Duration::from_millis(180));
}

#[test]
fn overlapping_bumps_are_ordered_by_their_versions() {
    // B1 100–104 issues e.41.a, B2 101–105 issues e.42.b (Redis applied B2 last). Neither
    // began after the other ended, so only the version order tells that e.41.a is superseded.
    let c = Clock::new();
    let h = History::default();
    h.saw("k", "e.40.z", c.at(50));
    h.record_bump(bump(&c, 100, 104, &[S0], "e.41.a"));
    h.record_bump(bump(&c, 101, 105, &[S1], "e.42.b"));
    h.record_read(check(&c, 110, Via::Sidecar(2), true, "e.41.a", true));
    h.record_read(check(&c, 2000, Via::Sidecar(2), false, "e.41.a", true));
    // The newest version is current, strongly and otherwise.
    h.record_read(check(&c, 110, Via::Sidecar(2), true, "e.42.b", true));
    h.record_read(check(&c, 2000, Via::Sidecar(2), false, "e.42.b", true));
    let v = violations(&h);
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(v.iter().all(|v| v.contains("e.41.a")), "{v:#?}");
    // The final sweep re-checks it too.
    let swept = h.superseded_tokens();
    assert!(swept.contains(&("k".into(), "e.41.a".into())), "{swept:?}");
    assert!(!swept.contains(&("k".into(), "e.42.b".into())), "{swept:?}");
}

#[test]
fn versions_of_other_epochs_are_not_ordered() {
    let c = Clock::new();
    let h = History::default();
    h.record_bump(bump(&c, 100, 104, &[S0], "e.41.a"));
    h.record_bump(bump(&c, 101, 105, &[S1], "f.1.b"));
    h.record_read(check(&c, 110, S0, true, "f.1.b", true));
    h.record_read(check(&c, 110, S1, true, "e.41.a", true));
    assert_eq!(violations(&h), Vec::<String>::new());
}

#[test]
fn a_bump_overlapping_the_token_does_not_supersede_it() {
    let c = Clock::new();
    let h = History::default();
    h.record_bump(bump(&c, 0, 10, &[S0], "v2"));
    // v1 was seen only at 5 ms, while the bump ran: order unknown, no claim.
    h.saw("k", "v1", c.at(5));
    h.record_read(check(&c, 50, S1, true, "v1", true));
    assert_eq!(violations(&h), Vec::<String>::new());
}

#[test]
fn gets_are_judged_like_checks() {
    let c = Clock::new();
    let h = History::default();
    h.saw("k", "e.1.a", c.at(0));
    h.record_bump(bump(&c, 10, 20, &[S1], "e.2.b"));
    h.record_read(get(&c, 50, S0, false, "e.1.a")); // within max_staleness
    h.record_read(get(&c, 500, S0, false, "e.1.a")); // beyond
    h.record_read(get(&c, 30, S0, true, "e.1.a")); // strong: never
    h.record_read(get(&c, 30, S0, true, "e.2.b"));
    let v = violations(&h);
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(v.iter().all(|v| v.contains("returned e.1.a")), "{v:#?}");
}

#[test]
fn the_current_version_a_check_reports_is_judged() {
    let c = Clock::new();
    let h = History::default();
    h.record_bump(bump(&c, 10, 20, &[S1], "e.2.b"));
    h.record_bump(bump(&c, 30, 40, &[S1], "e.3.c"));
    // Checks of e.1.a answering "not current" and naming the version they take as current.
    let reporting = |at: u64, strong: bool, reported: &str, source: CheckSource| ReadRecord {
        read: Read::Check {
            token: "e.1.a".into(),
            answer: Ok(CheckAnswer {
                current: false,
                version: Some(reported.into()),
                source: Some(source),
            }),
        },
        ..check(&c, at, S0, strong, "e.1.a", false)
    };
    h.record_read(reporting(500, false, "e.2.b", CheckSource::Mirror)); // beyond the bound
    h.record_read(reporting(45, true, "e.2.b", CheckSource::Redis)); // strong
    h.record_read(reporting(60, false, "e.2.b", CheckSource::Mirror)); // within the bound
    h.record_read(reporting(45, true, "e.3.c", CheckSource::Redis));
    // A fail-closed answer vouches for nothing.
    h.record_read(reporting(500, false, "e.2.b", CheckSource::FailClosed));
    let v = violations(&h);
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(
        v.iter().all(|v| v.contains("reported as current e.2.b")),
        "{v:#?}"
    );
}

#[test]
fn own_writes_are_visible_at_once() {
    let c = Clock::new();
    let h = History::default();
    h.saw("k", "e.1.a", c.at(0));
    h.record_bump(bump(&c, 100, 104, &[S1], "e.2.b"));
    // Through s1, which made the bump: stale at once is a violation, even within the bound.
    h.record_read(check(&c, 110, S1, false, "e.1.a", true));
    // Through s0, within max_staleness: allowed.
    h.record_read(check(&c, 110, S0, false, "e.1.a", true));
    // A mirror's own bump binds the mirror and its sidecar, not another mirror.
    h.record_bump(bump(&c, 200, 204, &[Via::Mirror(0), S1], "e.3.c"));
    h.record_read(check(&c, 210, Via::Mirror(0), false, "e.2.b", true));
    h.record_read(check(&c, 210, Via::Mirror(1), false, "e.2.b", true));
    h.record_read(get(&c, 210, S1, false, "e.2.b"));
    let v = violations(&h);
    assert_eq!(v.len(), 3, "{v:#?}");
    assert!(v.iter().all(|v| v.contains("own writes")), "{v:#?}");
    assert!(v.iter().any(|v| v.contains("through m0")), "{v:#?}");
    assert!(!v.iter().any(|v| v.contains("through m1")), "{v:#?}");
    assert!(!v.iter().any(|v| v.contains("through s0")), "{v:#?}");
}

#[test]
fn a_check_that_fails_is_a_violation_unless_its_sidecar_was_down() {
    let c = Clock::new();
    let failed = |at: u64| ReadRecord {
        read: Read::Check {
            token: "e.1.a".into(),
            answer: Err("unavailable".into()),
        },
        start: Instant::now() + Duration::from_millis(at),
        end: Instant::now() + Duration::from_millis(at + 1),
        ..check(&c, 0, S0, false, "e.1.a", false)
    };
    let h = History::default();
    h.record_read(failed(0));
    assert_eq!(violations(&h).len(), 1);
    let h = History::default();
    h.outage_begins(S0);
    h.record_read(failed(0));
    h.outage_ends(S0);
    let report = h.analyse(&limits());
    assert_eq!(report.violations, Vec::<String>::new());
    assert_eq!(report.checks_failed_in_outage, 1);
    // After the outage ended, failing is a violation again.
    h.record_read(failed(1_000));
    assert_eq!(violations(&h).len(), 1);
}

#[test]
fn a_slow_check_is_a_violation() {
    let c = Clock::new();
    let h = History::default();
    h.record_read(ReadRecord {
        end: c.at(2_000),
        ..check(&c, 60, S0, false, "v2", false)
    });
    let v = violations(&h);
    assert_eq!(v.len(), 1, "{v:#?}");
    assert!(v[0].contains("took"));
}

#[test]
fn a_panicked_worker_fails_the_run() {
    let h = History::default();
    h.record_failure("checker worker panicked: boom".into());
    assert_eq!(violations(&h), vec!["checker worker panicked: boom"]);
}

#[test]
fn a_vacuous_run_fails_its_floors() {
    let floors = Floors {
        current_answers: 1,
        superseded_answers: 1,
        answers_per_source: 1,
        bumps: 1,
    };
    let sources = [S0, S1];
    // A sidecar that answers "not current" to everything, and a source never heard from.
    let c = Clock::new();
    let h = History::default();
    h.saw("k", "e.1.a", c.at(0));
    h.record_read(check(&c, 10, S0, false, "e.1.a", false));
    let short = h.analyse(&limits()).shortfalls("run", &floors, &sources);
    assert_eq!(short.len(), 4, "{short:#?}");
    // The same with a bump, a current answer, an answer on a superseded token, and s1.
    h.record_bump(bump(&c, 20, 30, &[S0], "e.2.b"));
    h.record_read(check(&c, 40, S1, false, "e.2.b", true));
    h.record_read(check(&c, 40, S0, false, "e.1.a", false));
    let report = h.analyse(&limits());
    assert_eq!(
        report.shortfalls("run", &floors, &sources),
        Vec::<String>::new()
    );
    assert_eq!(report.violations, Vec::<String>::new());
}

#[test]
fn phases_are_counted_apart() {
    let h = History::default();
    h.begin_phase("before");
    let a = Instant::now();
    h.begin_phase("after");
    let b = Instant::now();
    let at = |start: Instant| ReadRecord {
        key: "k".into(),
        via: S0,
        strong: false,
        start,
        end: start,
        read: Read::Get {
            answer: Ok("e.1.a".into()),
        },
    };
    h.record_read(at(a));
    h.record_read(at(b));
    h.record_read(at(b));
    let report = h.analyse(&limits());
    assert_eq!(report.phases["before"].answers, 1);
    assert_eq!(report.phases["after"].answers, 2);
}

#[test]
fn cache_reads_are_judged_against_the_source_of_truth() {
    let c = Clock::new();
    let h = History::default();
    let write = |value: u64, bumped: Option<u64>| DataWrite {
        key: "k".into(),
        value,
        via: Via::Cache(1),
        bumped: bumped.map(|ms| c.at(ms)),
    };
    let read = |value: u64, at: u64, via: Via, strong: bool| DataRead {
        key: "k".into(),
        value,
        via,
        strong,
        start: c.at(at),
        end: c.at(at + 1),
    };
    h.record_write(write(1, Some(100)));
    h.record_write(write(2, Some(200)));
    // A write whose bump failed binds nobody.
    h.record_write(write(3, None));
    h.record_data_read(read(1, 250, Via::Cache(0), false)); // 50 ms stale: allowed
    h.record_data_read(read(2, 250, Via::Cache(0), false));
    h.record_data_read(read(1, 400, Via::Cache(0), false)); // beyond the bound
    h.record_data_read(read(1, 201, Via::Cache(0), true)); // strong
    h.record_data_read(read(1, 210, Via::Cache(1), false)); // its own write
    let report = h.analyse(&limits());
    assert_eq!(report.violations.len(), 3, "{:#?}", report.violations);
    assert!(report.violations[2].contains("own write"));
    assert_eq!(report.stale_within_bound, 2);
}

#[test]
fn with_leases_strong_reads_are_judged_by_completed_bumps_only() {
    // A bump issuing e.2.b is still waiting for a lease holder's acknowledgement at 30 (it
    // completes at 50); a read through s1 has already returned e.2.b at 20. A strong read
    // through the holder s0 at 30 still calling e.1.a current misses no completed bump, but a
    // strong read at 60 does.
    let c = Clock::new();
    let h = History::default();
    h.record_bump(bump(&c, 0, 1, &[S0], "e.1.a"));
    h.record_bump(bump(&c, 10, 50, &[S1], "e.2.b"));
    h.record_read(get(&c, 19, S1, true, "e.2.b"));
    h.record_read(check(&c, 30, S0, true, "e.1.a", true));
    let strict = h.analyse(&limits()).violations;
    assert_eq!(strict.len(), 1, "without leases: {strict:?}");
    let leased = Limits {
        strong_by_completed_bumps: true,
        ..limits()
    };
    assert!(h.analyse(&leased).violations.is_empty());
    h.record_read(check(&c, 60, S0, true, "e.1.a", true));
    assert_eq!(h.analyse(&leased).violations.len(), 1);
}
