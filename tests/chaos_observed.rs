//! The chaos run of the consistency observer (issue 17): the fault suite's workload — gRPC
//! checks, gets and bumps, a client mirror per sidecar and coherent caches — through three
//! sidecars on one Redis for `COHERENCE_CHAOS_SECS` seconds (default 60), while the suite's
//! faults are injected one after another (Redis paused, restarted empty, flushed, its
//! subscriptions killed, sidecar 2's invalidations dropped and its link delayed), each followed by
//! recovery. Every sidecar audits a fifth of its current answers and the client mirrors a
//! twentieth of theirs; at the end the test prints what the auditors decided, the nines with the
//! number of decided answers they rest on, and the canary propagation percentiles — through the
//! real `coherencectl slo` — and requires zero confirmed violations, as the fault suite's own
//! history checker requires a clean history of the same run.
//!
//! Ignored by default (it runs a minute or more): `COHERENCE_CHAOS_SECS=600 cargo test --test
//! chaos_observed -- --ignored --nocapture`.

mod fault_support;

use std::time::{Duration, Instant};

use coherence_testkit::{Flow, Link};
use fault_support::{Fleet, Workload};

const PROXIED: usize = 2;
/// Recovery bound after each fault. Looser than the fault suite's 10 s (asserted there, on a
/// fresh fleet per fault): this run shares a 2-core box with other builds and tests, and a late
/// recovery is a fault-suite finding, not the observer's. Every recovery time is printed.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);
/// Workload between two faults.
const CALM: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy)]
enum Fault {
    Pause,
    KillPubsub,
    RestartEmpty,
    FlushAll,
    DropInvalidations,
    DelayCommands,
}

const FAULTS: [Fault; 6] = [
    Fault::Pause,
    Fault::KillPubsub,
    Fault::DropInvalidations,
    Fault::RestartEmpty,
    Fault::DelayCommands,
    Fault::FlushAll,
];

async fn inject(fleet: &mut Fleet, fault: Fault) {
    // Each sleep is the fault's duration, not a synchronisation.
    match fault {
        Fault::Pause => {
            fleet.redis().pause();
            tokio::time::sleep(Duration::from_millis(800)).await;
            fleet.redis().resume();
        }
        Fault::KillPubsub => {
            let _: i64 = fleet
                .redis()
                .cmd(&["CLIENT", "KILL", "TYPE", "pubsub"])
                .expect("CLIENT KILL");
        }
        Fault::RestartEmpty => tokio::task::block_in_place(|| fleet.redis_mut().restart_empty()),
        Fault::FlushAll => {
            let _: () = fleet.redis().cmd(&["FLUSHALL"]).expect("FLUSHALL");
        }
        Fault::DropInvalidations => {
            fleet.proxy(PROXIED).drop_invalidations(true);
            tokio::time::sleep(Duration::from_secs(1)).await;
            fleet.proxy(PROXIED).drop_invalidations(false);
        }
        Fault::DelayCommands => {
            let proxy = fleet.proxy(PROXIED);
            proxy.set_flow(Link::Command, Flow::Delay(Duration::from_millis(200)));
            tokio::time::sleep(Duration::from_secs(1)).await;
            proxy.set_flow(Link::Command, Flow::Pass);
        }
    }
}

fn seconds() -> u64 {
    std::env::var("COHERENCE_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a chaos run of a minute or more; see the module docs"]
async fn a_chaos_run_confirms_no_violation_and_reports_the_fleets_nines() {
    let mut fleet = Fleet::start_proxied(3, &[PROXIED], |s| {
        s.audit_sample_rate = 0.2;
        s.canary_interval_ms = 250;
    })
    .await;
    let history = std::sync::Arc::clone(&fleet.history);
    history.begin_phase("chaos");
    let workload = Workload::start(&fleet, 300).await;
    let started = Instant::now();
    let length = Duration::from_secs(seconds());
    let mut injected = Vec::new();
    while started.elapsed() < length {
        // The workload's calm stretch between faults.
        tokio::time::sleep(CALM).await;
        let fault = FAULTS[injected.len() % FAULTS.len()];
        inject(&mut fleet, fault).await;
        let recovery = fleet.wait_recovered(RECOVERY_BOUND).await;
        injected.push((fault, recovery));
        if recovery.is_none() {
            // Judged at the end, after the observer's figures are printed; the run goes on
            // once the fleet is back.
            fleet.wait_recovered(RECOVERY_BOUND).await;
        }
    }
    let recoveries: Vec<String> = injected
        .iter()
        .map(|(f, r)| match r {
            Some(r) => format!("{f:?} {:.1} s", r.as_secs_f64()),
            None => format!("{f:?} NOT RECOVERED within {RECOVERY_BOUND:?}"),
        })
        .collect();
    tokio::time::sleep(CALM).await;
    let judged = workload.judge(&fleet).await;
    let ran = started.elapsed();

    // Let the auditors finish their queues (bounded).
    let settled = coherence_testkit::eventually(Duration::from_secs(30), || async {
        let before: Vec<u64> = fleet.sidecars.iter().map(decided_or_not).collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        fleet
            .sidecars
            .iter()
            .map(decided_or_not)
            .collect::<Vec<_>>()
            == before
    })
    .await;
    let addresses: Vec<String> = fleet
        .sidecars
        .iter()
        .map(|s| format!("http://{}", s.grpc_addr))
        .collect();
    let mut args = vec!["slo".to_string()];
    for a in &addresses {
        args.push("--sidecar".into());
        args.push(a.clone());
    }
    let slo = tokio::process::Command::new(env!("CARGO_BIN_EXE_coherencectl"))
        .args(&args)
        .env_remove("COHERENCE_ADDR")
        .kill_on_drop(true)
        .output();
    let slo = tokio::time::timeout(Duration::from_secs(20), slo)
        .await
        .expect("coherencectl slo finished")
        .expect("coherencectl runs");
    let text = String::from_utf8_lossy(&slo.stdout);
    let mut counts = Vec::new();
    for s in &fleet.sidecars {
        let audit = &s.state.metrics.audit;
        let by_source: Vec<String> = ["mirror", "redis", "client_mirror"]
            .iter()
            .map(|source| {
                let n: u64 = ["correct", "stale_within_bound", "violation", "undecided"]
                    .iter()
                    .map(|v| {
                        audit
                            .verdicts
                            .get_or_create(&[("source", source), ("verdict", v)])
                            .get()
                    })
                    .sum();
                format!("{source} {n}")
            })
            .collect();
        let reasons: Vec<String> = [
            "log_trimmed",
            "epoch_changed",
            "redis_unavailable",
            "scan_limit",
            "unparsable",
            "recheck_disagreed",
        ]
        .iter()
        .map(|r| {
            format!(
                "{r} {}",
                audit.undecided.get_or_create(&[("reason", r)]).get()
            )
        })
        .collect();
        counts.push(format!(
            "{}: audited by source [{}]; undecided by reason [{}]; suspected {}",
            s.state.settings.server_id,
            by_source.join(", "),
            reasons.join(", "),
            audit.suspected.get()
        ));
    }
    println!(
        "CHAOS run {ran:?} (asked {length:?}), {} faults injected, recovery times [{}], auditors settled: {settled}\n{}\nhistory checker: {}; {}\n{}",
        injected.len(),
        recoveries.join(", "),
        counts.join("\n"),
        judged.report,
        judged.client_stats,
        text
    );
    judged.report.assert_clean("chaos run");
    assert_eq!(
        slo.status.code(),
        Some(0),
        "coherencectl slo reported a violation or failed: {text}{}",
        String::from_utf8_lossy(&slo.stderr)
    );
    let violations: u64 = fleet
        .sidecars
        .iter()
        .map(|s| s.state.metrics.audit.totals().violations)
        .sum();
    assert_eq!(violations, 0, "confirmed violations in the chaos run");
    assert!(
        fleet
            .sidecars
            .iter()
            .all(|s| s.state.metrics.audit.totals().correct > 0),
        "a sidecar's auditor decided nothing correct: the run was vacuous"
    );
    assert!(
        injected.iter().all(|(_, r)| r.is_some()),
        "a fault was not recovered from within {RECOVERY_BOUND:?}: {recoveries:?}"
    );
}

fn decided_or_not(s: &coherence_testkit::TestSidecar) -> u64 {
    let t = s.state.metrics.audit.totals();
    t.correct + t.stale_within_bound + t.violations + t.undecided
}
