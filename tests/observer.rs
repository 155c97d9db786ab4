//! The consistency observer sees what it claims to see: a sidecar made to skip invalidations
//! without noticing (the `fault-injection` feature) is caught by its auditor, while a healthy
//! sidecar of the same run, asked the same questions, reports zero violations; what Redis can no
//! longer tell is counted undecided, never correct.

mod common {
    pub mod ctl;
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coherence_client::{Client, Consistency, MirrorOptions, Version};
use coherence_proto::v1::AnsweredCheck;
use coherence_sidecar::process::config::Settings;
use coherence_sidecar::redis::keyspace::Keyspace;
use coherence_testkit::{eventually, RedisServer, TestSidecar, WAIT};

/// A sidecar on free ports named `server_id`, settings adjusted by `adjust`, ready.
async fn start_sidecar_with(
    redis_url: &str,
    server_id: &str,
    adjust: impl FnOnce(&mut Settings),
) -> TestSidecar {
    TestSidecar::builder(redis_url)
        .server_id(server_id)
        .settings(adjust)
        .start()
        .await
}

fn grpc_url(sidecar: &TestSidecar) -> String {
    sidecar.grpc_url()
}

fn audited(settings: &mut Settings) {
    settings.audit_sample_rate = 1.0;
    // Reconciliation would repair the skipped invalidations; the test must see them first.
    settings.reconcile_interval_ms = 3_600_000;
    settings.canary_interval_ms = 0;
}

fn verdicts(sidecar: &TestSidecar, verdict: &'static str) -> u64 {
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

fn all_verdicts(sidecar: &TestSidecar) -> u64 {
    ["correct", "stale_within_bound", "violation", "undecided"]
        .into_iter()
        .map(|v| verdicts(sidecar, v))
        .sum()
}

async fn client(sidecar: &TestSidecar) -> Client {
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

fn client_mirror_verdicts(sidecar: &TestSidecar, verdict: &'static str) -> u64 {
    sidecar
        .state
        .metrics
        .audit
        .verdicts
        .get_or_create(&[("source", "client_mirror"), ("verdict", verdict)])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mirror_answers_are_sampled_and_judged_by_their_sidecar() {
    let redis = RedisServer::start();
    let faulty = start_sidecar_with(&redis.url(), "faulty", audited).await;
    let healthy = start_sidecar_with(&redis.url(), "healthy", audited).await;
    faulty
        .state
        .faults
        .skip_invalidations_under(Some("mirrored/"));
    let options = || MirrorOptions::default().audit_sample_rate(1.0);
    let on_faulty = client(&faulty).await.with_mirror(options());
    let on_healthy = client(&healthy).await.with_mirror(options());
    for mirror in [&on_faulty, &on_healthy] {
        assert!(mirror.wait_trusted(WAIT).await, "mirror never trusted");
    }
    let key = "mirrored/k";
    let old = on_faulty.get_one(key).await.expect("get");
    assert_eq!(on_healthy.get_one(key).await.expect("get"), old);
    assert_eq!(on_healthy.is_current_local(key, &old), Some(true));
    // The healthy sidecar judges its client mirror's answer correct.
    assert!(
        eventually(WAIT, || async {
            client_mirror_verdicts(&healthy, "correct") >= 1
        })
        .await,
        "the healthy sidecar never judged its client mirror's answer"
    );

    // A bump the faulty sidecar skips never reaches its Watch stream either: its client mirror
    // keeps calling the old version current, and the sidecar's auditor confirms the violation.
    let new = on_healthy.bump(&[key]).await.expect("bump").remove(0);
    let caught = eventually(WAIT, || async {
        let _ = on_faulty.is_current_local(key, &old);
        let _ = on_healthy.is_current_local(key, &new);
        client_mirror_verdicts(&faulty, "violation") > 0
    })
    .await;
    assert!(
        caught,
        "no client-mirror violation confirmed on the faulty sidecar"
    );
    assert_eq!(client_mirror_verdicts(&healthy, "violation"), 0);
    assert_eq!(on_healthy.audit_samples_dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_answers_are_validated_and_coherencectl_slo_reports_the_fleet() {
    let redis = RedisServer::start();
    let a = start_sidecar_with(&redis.url(), "a", |s| {
        audited(s);
        s.canary_interval_ms = 100;
    })
    .await;
    let b = start_sidecar_with(&redis.url(), "b", |s| {
        audited(s);
        s.canary_interval_ms = 100;
    })
    .await;
    let via_a = client(&a).await;
    let observer = via_a.observer();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    for (answer, problem) in [
        (
            AnsweredCheck {
                key: "k".into(),
                token: "t".into(),
                answered_at_unix_us: now_us + 60_000_000,
                max_staleness_ms: 0,
            },
            "in the future",
        ),
        (
            AnsweredCheck {
                key: String::new(),
                token: "t".into(),
                answered_at_unix_us: now_us,
                max_staleness_ms: 0,
            },
            "key is empty",
        ),
        (
            AnsweredCheck {
                key: "k".into(),
                token: String::new(),
                answered_at_unix_us: now_us,
                max_staleness_ms: 0,
            },
            "token",
        ),
    ] {
        match observer.submit_answers(vec![answer]).await {
            Err(coherence_client::Error::InvalidArgument { status, .. }) => {
                assert!(status.message().contains(problem), "{}", status.message())
            }
            other => panic!("expected INVALID_ARGUMENT ({problem}), got {other:?}"),
        }
    }

    // Current answers on both, and canary bumps seen by both mirrors.
    let version = via_a.get_one("slo/k").await.expect("get");
    let via_b = client(&b).await;
    for c in [&via_a, &via_b] {
        assert!(c
            .is_current("slo/k", &version, Consistency::Bounded)
            .await
            .expect("check"));
    }
    assert!(
        eventually(WAIT, || async {
            [&a, &b].iter().all(|s| {
                all_verdicts(s) >= 1
                    && s.state.metrics.audit.canary_propagation.snapshot().count >= 2
            })
        })
        .await,
        "no verdicts or no canary propagation observed"
    );
    let out = common::ctl::coherencectl(
        &grpc_url(&a),
        &[
            "slo",
            "--sidecar",
            &grpc_url(&a),
            "--sidecar",
            &grpc_url(&b),
            "--sidecar",
            "http://127.0.0.1:1",
        ],
    )
    .await;
    let text = common::ctl::stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        common::ctl::stderr(&out)
    );
    assert!(text.contains("a (http://"), "{text}");
    assert!(text.contains("b (http://"), "{text}");
    assert!(text.contains("http://127.0.0.1:1  unreachable"), "{text}");
    let fleet = text
        .lines()
        .find(|l| l.starts_with("fleet (2 sidecars reached, 1 not)"))
        .unwrap_or_else(|| panic!("no fleet line: {text}"));
    assert!(fleet.contains("violations 0"), "{fleet}");
    assert!(fleet.contains("nines"), "{fleet}");
    assert!(
        !fleet.contains("p50 -"),
        "propagation percentiles missing: {fleet}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_judged_while_redis_is_away_is_undecided_not_correct() {
    let redis = RedisServer::start();
    let sidecar = start_sidecar_with(&redis.url(), "a", |s| {
        audited(s);
        // A mirror that stays trusted for a while without fences, and audit reads that give up
        // quickly.
        s.max_staleness_ms = 10_000;
        s.request_timeout_ms = 300;
    })
    .await;
    let via = client(&sidecar).await;
    let version = via.get_one("away/k").await.expect("get");
    redis.pause();
    let answered = via
        .check(&[("away/k", &version)], Consistency::Bounded)
        .await;
    let decided = eventually(WAIT, || async { all_verdicts(&sidecar) >= 1 }).await;
    redis.resume();
    let answered = answered.expect("check answers");
    assert!(
        answered[0].current && answered[0].source == coherence_client::CheckSource::Mirror,
        "{answered:?}"
    );
    assert!(decided, "the answer was never decided");
    assert_eq!(all_verdicts(&sidecar), 1);
    assert_eq!(verdicts(&sidecar, "undecided"), 1);
    assert_eq!(
        sidecar
            .state
            .metrics
            .audit
            .undecided
            .get_or_create(&[("reason", "redis_unavailable")])
            .get(),
        1
    );
}
