//! Admission control and deadlines of the Redis batchers (sidecar/src/versions/batcher.rs):
//! work whose caller went away is not sent to Redis, a full batcher refuses at once
//! (`RESOURCE_EXHAUSTED`; `Check` fails closed), a small call does not wait behind a huge one,
//! and `Get` gives up after `request_timeout` even while queued.
//!
//! Redis is paused (SIGSTOP) while the calls begin, so that a batch stays in flight and the
//! rest queue behind it: what the sidecar does with the queue is then deterministic, and each
//! test asserts it through the batcher's counters and the Redis calls it made — never through
//! how long anything took.

use std::time::Duration;

use coherence_proto::v1 as pb;
use coherence_proto::v1::cache_versions_client::CacheVersionsClient;
use coherence_testkit::{eventually, RedisServer, TestSidecar, WAIT};
use tonic::transport::Channel;

/// Script calls the sidecar has made to read versions (Get and Check), from its metrics.
fn read_script_calls(sidecar: &TestSidecar) -> u64 {
    sidecar
        .state
        .metrics
        .encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix("coherence_redis_command_duration_seconds_count{op=\"read\"} ")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn unknown_keys(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}:{i}")).collect()
}

fn check_request(keys: &[String]) -> pb::CheckRequest {
    pb::CheckRequest {
        entries: keys
            .iter()
            .map(|k| pb::KeyVersion {
                key: k.clone(),
                version: Some(pb::Version {
                    token: "x".into(),
                    ..Default::default()
                }),
            })
            .collect(),
        consistency: pb::Consistency::Strong as i32,
    }
}

fn get_request(keys: Vec<String>) -> pb::GetRequest {
    pb::GetRequest {
        keys,
        consistency: 0,
    }
}

/// Settings under which the sidecar makes no read of its own while a test counts them.
fn quiet(s: &mut coherence_sidecar::process::config::Settings) {
    s.reconcile_interval_ms = 600_000;
}

async fn client(sidecar: &TestSidecar) -> CacheVersionsClient<Channel> {
    CacheVersionsClient::new(sidecar.channel().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_past_their_deadline_are_never_sent_to_redis() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .settings(|s| {
            quiet(s);
            // Room for all 20 calls: this test is about deadlines, not admission.
            s.batch_queue_bytes = 64 << 20;
            s.request_buffer_bytes = 64 << 20;
        })
        .start()
        .await;
    let reader = sidecar.versions.reader();
    let client = client(&sidecar).await;
    let before = read_script_calls(&sidecar);
    let begun = reader.calls_begun();

    // 20 callers, 5,000 unknown keys each, while Redis cannot answer: one batch goes out, the
    // rest queue behind it, and each Check answers "not current" at check_deadline (fail
    // closed), withdrawing its read.
    redis.pause();
    let calls = (0..20).map(|i| {
        let mut client = client.clone();
        let keys = unknown_keys(&format!("caller{i}"), 5_000);
        async move { client.check(check_request(&keys)).await }
    });
    let answers = futures::future::join_all(calls).await;
    let all_begun = reader.calls_begun() - begun;
    redis.resume();
    for answer in answers {
        let results = answer.expect("a Check is answered").into_inner().results;
        assert!(results
            .iter()
            .all(|r| !r.current && r.source == pb::CheckSource::FailClosed as i32));
    }
    assert_eq!(all_begun, 20, "the 20 checks reached the batcher");

    // Once the batch in flight is done, nothing is left, and the abandoned calls were dropped
    // rather than sent: 100,000 keys would have been at least 10 batches of script calls.
    let settled = eventually(WAIT, || async { reader.queued_bytes() == 0 }).await;
    assert!(settled, "the batcher emptied");
    let abandoned = reader.calls_abandoned();
    let sent = read_script_calls(&sidecar) - before;
    println!("ABANDONED: 20 checks of 5,000 keys abandoned -> {abandoned} dropped unsent, {sent} read script calls");
    assert!(
        abandoned >= 18,
        "only {abandoned} of 20 abandoned calls were dropped"
    );
    assert!(sent <= 2, "{sent} script calls for abandoned work");
    // And the sidecar serves as before.
    let mut client = client;
    let got = client
        .get(get_request(vec!["after".into()]))
        .await
        .expect("Get after the storm");
    assert_eq!(got.get_ref().versions.len(), 1);
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batcher_refuses_at_once_and_check_fails_closed() {
    const QUEUE_BYTES: usize = 64 * 1024;
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .settings(|s| {
            quiet(s);
            s.batch_queue_bytes = QUEUE_BYTES;
        })
        .start()
        .await;
    let getter = sidecar.versions.getter();
    let reader = sidecar.versions.reader();
    let mut client = client(&sidecar).await;

    redis.pause();
    // A Get of a new key goes to Redis and stays in flight; another fills the reader.
    let in_flight = tokio::spawn({
        let mut client = client.clone();
        async move { client.get(get_request(vec!["first".into()])).await }
    });
    let check_in_flight = tokio::spawn({
        let mut client = client.clone();
        let keys = unknown_keys("inflight", 1);
        async move { client.check(check_request(&keys)).await }
    });
    let queued = eventually(WAIT, || async {
        getter.queued_bytes() > 0 && reader.queued_bytes() > 0
    })
    .await;
    assert!(queued, "the first calls wait for Redis");

    // 2,000 keys of ~75 bytes: more than the 64 KiB left. Answered while Redis is still
    // paused: refused, not queued.
    let big = unknown_keys("big", 2_000);
    let refused = client
        .get(get_request(big.clone()))
        .await
        .expect_err("a Get past batch_queue_bytes is refused");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("batch_queue_bytes"),
        "{refused:?}"
    );
    let checked = client
        .check(check_request(&big))
        .await
        .expect("a Check past batch_queue_bytes is answered")
        .into_inner();
    assert!(checked
        .results
        .iter()
        .all(|r| !r.current && r.source == pb::CheckSource::FailClosed as i32));
    let refusals = sidecar
        .state
        .metrics
        .limits_reached
        .get_or_create(&[("limit", "batch_queue_bytes")])
        .get();
    assert_eq!(refusals, 2, "both refusals counted");
    assert!(getter.queued_bytes() <= QUEUE_BYTES);

    redis.resume();
    in_flight
        .await
        .unwrap()
        .expect("the Get in flight completes once Redis is back");
    let _ = check_in_flight.await.unwrap();
    let admitted = eventually(WAIT, || {
        let mut client = client.clone();
        let big = big.clone();
        async move { client.get(get_request(big)).await.is_ok() }
    })
    .await;
    assert!(
        admitted,
        "the budget is given back once the calls are answered"
    );
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_call_has_a_lane_of_its_own_beside_huge_ones() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .settings(quiet)
        .start()
        .await;
    let getter = sidecar.versions.getter();
    let client = client(&sidecar).await;
    let (small_before, bulk_before) = getter.batches_sent();

    redis.pause();
    let huge = |name: &'static str| {
        let mut client = client.clone();
        tokio::spawn(async move { client.get(get_request(unknown_keys(name, 5_000))).await })
    };
    let first = huge("first");
    let in_flight = eventually(WAIT, || async { getter.batches_sent().1 > bulk_before }).await;
    assert!(in_flight, "the first huge Get is in flight");
    let second = huge("second");
    let small = tokio::spawn({
        let mut client = client.clone();
        async move { client.get(get_request(vec!["small".into()])).await }
    });
    // The small Get is sent while the huge batch is still in flight (Redis is paused), not
    // queued behind it with the second huge one.
    let sent = eventually(WAIT, || async { getter.batches_sent().0 > small_before }).await;
    let (_, bulk_now) = getter.batches_sent();
    redis.resume();
    assert!(sent, "the small call's batch went out beside the huge one");
    assert_eq!(
        bulk_now,
        bulk_before + 1,
        "the second huge Get was still queued"
    );
    for call in [first, second, small] {
        call.await
            .unwrap()
            .expect("every Get completes once Redis is back");
    }
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_answers_unavailable_at_request_timeout_and_a_queued_get_whose_caller_left_is_never_sent(
) {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .settings(|s| {
            quiet(s);
            s.request_timeout_ms = 300;
        })
        .start()
        .await;
    let getter = sidecar.versions.getter();
    let client = client(&sidecar).await;

    redis.pause();
    let first = tokio::spawn({
        let mut client = client.clone();
        async move { client.get(get_request(vec!["first".into()])).await }
    });
    let in_flight = eventually(WAIT, || async { getter.batches_sent().0 >= 1 }).await;
    assert!(in_flight, "the first Get is in flight");
    // A caller that gives up after 50 ms (grpc-timeout), queued behind the batch in flight.
    let mut request = tonic::Request::new(get_request(vec!["queued".into()]));
    request.set_timeout(Duration::from_millis(50));
    let queued = client.clone().get(request).await.expect_err("gave up");
    assert!(
        matches!(
            queued.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{queued:?}"
    );
    // The first Get answers UNAVAILABLE at request_timeout, while Redis is still paused.
    let first = first.await.unwrap().expect_err("Redis is paused");
    assert_eq!(first.code(), tonic::Code::Unavailable, "{first:?}");
    let dropped = eventually(WAIT, || async {
        getter.queued_bytes() == 0 && getter.calls_abandoned() >= 1
    })
    .await;
    let sent = getter.batches_sent().0;
    redis.resume();
    assert!(dropped, "the abandoned Get was dropped from the queue");
    assert_eq!(sent, 1, "the abandoned Get was never sent");
    sidecar.shutdown().await;
}
