//! The consistency observer sees what it claims to see: a sidecar made to skip invalidations
//! without noticing (the `fault-injection` feature) is caught by its auditor, while a healthy
//! sidecar of the same run, asked the same questions, reports zero violations; what Redis can no
//! longer tell is counted undecided, never correct.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coherence_client::{Client, Consistency, Version};
use coherence_sidecar::process::config::Settings;
use coherence_sidecar::redis::keyspace::Keyspace;
use coherence_sidecar::Sidecar;
use coherence_testkit::{eventually, RedisServer};
use common::{grpc_url, start_sidecar_with, WAIT};

fn audited(settings: &mut Settings) {
    settings.audit_sample_rate = 1.0;
    // Reconciliation would repair the skipped invalidations; the test must see them first.
    settings.reconcile_interval_ms = 3_600_000;
    settings.canary_interval_ms = 0;
}

fn verdicts(sidecar: &Sidecar, verdict: &'static str) -> u64 {
    ["mirror", "redis", "client_mirror"]
        .into_iter()
        .map(|source| {
            sidecar
                .state
                .metrics
                .audit
                .verdicts
                .get_or_create(&[("source", source), ("verdict", verdict)])
                .get()
        })
        .sum()
}

fn all_verdicts(sidecar: &Sidecar) -> u64 {
    ["correct", "stale_within_bound", "violation", "undecided"]
        .into_iter()
        .map(|v| verdicts(sidecar, v))
        .sum()
}

async fn client(sidecar: &Sidecar) -> Client {
    Client::connect(grpc_url(sidecar))
        .await
        .expect("client connects")
        .with_timeout(Duration::from_secs(5))
}

/// Checks every `(key, version)` and returns how many were answered current.
async fn current_answers(client: &Client, entries: &[(String, Version)]) -> u64 {
    let mut current = 0;
    for (key, version) in entries {
        if client
            .is_current(key, version, Consistency::Bounded)
            .await
            .expect("check answers")
        {
            current += 1;
        }
    }
    current
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditor_confirms_violations_of_a_sidecar_that_skips_invalidations_and_none_elsewhere()
{
    let redis = RedisServer::start();
    let faulty = start_sidecar_with(&redis.url(), "faulty", audited).await;
    let healthy = start_sidecar_with(&redis.url(), "healthy", audited).await;
    let bumper = start_sidecar_with(&redis.url(), "bumper", audited).await;
    faulty
        .state
        .faults
        .skip_invalidations_under(Some("victim/"));
    let (via_faulty, via_healthy, via_bumper) = (
        client(&faulty).await,
        client(&healthy).await,
        client(&bumper).await,
    );

    let keys: Vec<String> = (0..5).map(|i| format!("victim/{i}")).collect();
    let mut old = Vec::new();
    for key in &keys {
        let version = via_faulty.get_one(key).await.expect("get");
        assert_eq!(via_healthy.get_one(key).await.expect("get"), version);
        old.push((key.clone(), version));
    }
    let mut new = Vec::new();
    for key in &keys {
        let bumped = via_bumper.bump(&[key]).await.expect("bump").remove(0);
        new.push((key.clone(), bumped));
    }
    // The healthy sidecar applies the bumps; the faulty one skips them unnoticed.
    assert!(
        eventually(WAIT, || async {
            current_answers(&via_healthy, &old).await == 0
        })
        .await,
        "the healthy sidecar never saw the bumps"
    );

    // The faulty sidecar keeps calling the old versions current; once the bumps are more than
    // max_staleness old, its auditor must confirm violations.
    let healthy_current = AtomicU64::new(0);
    let caught = eventually(WAIT, || async {
        // The same questions to both sidecars: the healthy one answers the new versions
        // current (audited), the old ones not current (nothing to audit).
        current_answers(&via_faulty, &old).await;
        let answered =
            current_answers(&via_healthy, &new).await + current_answers(&via_healthy, &old).await;
        healthy_current.fetch_add(answered, Ordering::Relaxed);
        verdicts(&faulty, "violation") > 0
    })
    .await;
    let healthy_current = healthy_current.load(Ordering::Relaxed);
    assert!(
        caught,
        "the faulty sidecar's auditor confirmed no violation (verdicts: correct {}, stale {}, undecided {})",
        verdicts(&faulty, "correct"),
        verdicts(&faulty, "stale_within_bound"),
        verdicts(&faulty, "undecided")
    );
    assert!(
        faulty.state.metrics.audit.suspected.get() >= verdicts(&faulty, "violation"),
        "every confirmed violation was suspected first"
    );

    // Every current answer of the healthy sidecar is decided, and none is a violation.
    assert!(
        healthy_current > 0,
        "the healthy sidecar answered nothing current"
    );
    assert!(
        eventually(WAIT, || async { all_verdicts(&healthy) >= healthy_current }).await,
        "the healthy sidecar's auditor decided {} of {healthy_current} answers",
        all_verdicts(&healthy)
    );
    assert_eq!(verdicts(&healthy, "violation"), 0);
    assert_eq!(healthy.state.metrics.audit.dropped.get(), 0);
    assert!(verdicts(&healthy, "correct") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_trimmed_log_cannot_judge_is_undecided_not_correct() {
    let redis = RedisServer::start();
    let faulty = start_sidecar_with(&redis.url(), "faulty", audited).await;
    let bumper = start_sidecar_with(&redis.url(), "bumper", audited).await;
    faulty
        .state
        .faults
        .skip_invalidations_under(Some("trimmed/"));
    let (via_faulty, via_bumper) = (client(&faulty).await, client(&bumper).await);
    let key = "trimmed/k";
    let old = via_faulty.get_one(key).await.expect("get");
    via_bumper.bump(&[key]).await.expect("bump");
    // The replay log loses the bump before the faulty sidecar's answer is audited.
    let keyspace = Keyspace::new("default", 16);
    let log = keyspace.shard_keys(keyspace.shard_of(key)).log;
    let _: i64 = redis.cmd(&["DEL", &log]).expect("DEL log");

    let before = all_verdicts(&faulty);
    assert!(
        via_faulty
            .is_current(key, &old, Consistency::Bounded)
            .await
            .expect("check"),
        "the faulty sidecar should still call the old version current"
    );
    assert!(
        eventually(WAIT, || async { all_verdicts(&faulty) > before }).await,
        "the answer was never decided"
    );
    assert_eq!(all_verdicts(&faulty), 1, "one answer was sampled");
    assert_eq!(verdicts(&faulty, "undecided"), 1);
    assert_eq!(verdicts(&faulty, "correct"), 0);
    assert_eq!(
        faulty
            .state
            .metrics
            .audit
            .undecided
            .get_or_create(&[("reason", "log_trimmed")])
            .get(),
        1
    );
}
