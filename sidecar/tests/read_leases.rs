//! Read leases (issue 18) with real redis-server processes and real sidecars: a holder answers
//! strong checks from its mirror, a bump returns only after every holder acknowledged it or ran
//! out, and no fault — a holder paused with SIGSTOP, its subscription killed, Redis paused or
//! restarted empty — makes a holder call a version current after a bump that superseded it
//! completed (guarantee 3). Also: leases off, and a fleet mixing holders with sidecars that hold
//! none.

use std::time::Duration;

use coherence_client::{CheckResult, CheckSource, Client, Consistency, Version};
use coherence_sidecar::Sidecar;
use coherence_testkit::{
    eventually, metric_sum, Await, Flow, Link, RedisProxy, RedisServer, SidecarProcess,
    TestSidecar, TestSidecarBuilder,
};

/// The lease period of these tests, in ms.
const LEASE_MS: u64 = 1_000;
/// Bound of every wait for an event.
const WAIT: Duration = Duration::from_secs(20);

/// A sidecar named `id` in namespace `kit` against `redis_url` with `read_lease_ms` =
/// `lease_ms`; started, it waits for its Redis link. No canary bumps: they would wait for lease
/// holders too, and these tests count the bumps that did.
fn leased(redis_url: &str, id: &str, lease_ms: u64) -> TestSidecarBuilder {
    TestSidecar::builder(redis_url)
        .server_id(id)
        .namespace("kit")
        .read_leases(lease_ms)
        .wait(Await::Connected)
}

/// The sum of a metric's samples on an in-process sidecar.
fn metric(sidecar: &Sidecar, name: &str) -> f64 {
    metric_sum(&sidecar.state.metrics.encode(), name)
}

async fn sidecar(redis: &RedisServer, id: &str, lease_ms: u64) -> (TestSidecar, Client) {
    let sidecar = leased(&redis.url(), id, lease_ms).start().await;
    assert!(sidecar.wait_ready(WAIT).await, "{id} never became ready");
    let client = Client::connect(format!("http://{}", sidecar.grpc_addr))
        .await
        .unwrap()
        .with_timeout(WAIT);
    (sidecar, client)
}

async fn strong(client: &Client, key: &str, version: &Version) -> CheckResult {
    client
        .check(&[(key, version)], Consistency::Strong)
        .await
        .expect("strong check answers")
        .remove(0)
}

/// Whether `client`'s sidecar comes to answer a strong check of `version` from its mirror,
/// current (it holds a lease and has applied up to it).
async fn answers_locally(client: &Client, key: &str, version: &Version) -> bool {
    eventually(WAIT, || async {
        let r = strong(client, key, version).await;
        r.current && r.source == CheckSource::Mirror
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_answers_strong_locally_and_a_bump_from_a_sidecar_without_leases_waits_for_its_ack(
) {
    let redis = RedisServer::start();
    let (holder, via_holder) = sidecar(&redis, "holder", LEASE_MS).await;
    let (bumper, via_bumper) = sidecar(&redis, "bumper", 0).await;
    let v1 = via_holder.get_one("content").await.unwrap();
    assert!(answers_locally(&via_holder, "content", &v1).await);
    assert!(metric(&holder, "coherence_read_leases_held") > 0.0);
    let local_before = metric(&holder, "coherence_strong_answers_total");

    let v2 = via_bumper.bump(&["content"]).await.unwrap().remove(0);
    // No waiting here: the bump returned, so the holder has applied it.
    let old = strong(&via_holder, "content", &v1).await;
    assert!(!old.current, "a completed bump missed: {old:?}");
    assert_eq!(old.version.as_ref(), Some(&v2), "{old:?}");
    assert!(metric(&holder, "coherence_strong_answers_total") > local_before);
    assert_eq!(
        metric(&bumper, "coherence_bump_ack_wait_seconds_count"),
        1.0,
        "the bump had one holder to wait for"
    );
    assert_eq!(
        metric(&bumper, "coherence_bumps_waited_for_expiry_total"),
        0.0,
        "the holder acknowledged; nothing ran out"
    );
    // The bumper holds no lease: its strong checks read Redis.
    let r = strong(&via_bumper, "content", &v2).await;
    assert!(r.current && r.source == CheckSource::Redis, "{r:?}");
    assert_eq!(metric(&bumper, "coherence_read_leases_held"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leases_off_strong_checks_read_redis_and_bumps_wait_for_no_one() {
    let redis = RedisServer::start();
    let (a, via_a) = sidecar(&redis, "a", 0).await;
    let (b, via_b) = sidecar(&redis, "b", 0).await;
    let v1 = via_a.get_one("content").await.unwrap();
    for _ in 0..5 {
        let r = strong(&via_a, "content", &v1).await;
        assert!(r.current && r.source == CheckSource::Redis, "{r:?}");
    }
    let v2 = via_b.bump(&["content"]).await.unwrap().remove(0);
    assert!(strong(&via_a, "content", &v2).await.current);
    assert_eq!(metric(&b, "coherence_bump_ack_wait_seconds_count"), 0.0);
    assert_eq!(metric(&a, "coherence_read_leases_held"), 0.0);
    let mut conn = redis.connection();
    let tables: Vec<String> = redis::cmd("KEYS")
        .arg("coh:*:leases")
        .query(&mut conn)
        .unwrap();
    assert!(tables.is_empty(), "no lease taken: {tables:?}");
}

/// Strong checks of every superseded version through `client` until it answers `current` from
/// its mirror (lease re-taken, caught up): none may call a superseded version current.
async fn never_stale_until_local_again(
    client: &Client,
    key: &str,
    old: &[&Version],
    current: &Version,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for v in old {
            let r = strong(client, key, v).await;
            assert!(!r.current, "a superseded version answered current: {r:?}");
        }
        let r = strong(client, key, current).await;
        if r.current && r.source == CheckSource::Mirror {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the holder never answered locally again: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigstopped_holder_delays_one_bump_until_its_lease_ran_out_and_never_answers_the_old_version(
) {
    let redis = RedisServer::start();
    let lease = LEASE_MS.to_string();
    let process = SidecarProcess::builder(env!("CARGO_BIN_EXE_coherence-sidecar"), &redis.url())
        .args(&["--server-id", "paused", "--namespace", "kit"])
        .args(&["--read-lease-ms", &lease, "--canary-interval-ms", "0"])
        .env("RUST_LOG", "warn")
        .spawn();
    let via_process = Client::from_channel(process.channel().await).with_timeout(WAIT);
    let (bumper, via_bumper) = sidecar(&redis, "bumper", LEASE_MS).await;
    let answered = eventually(WAIT, || async {
        via_process.get_one("content").await.is_ok()
    })
    .await;
    assert!(answered, "the process never answered");
    let v1 = via_process.get_one("content").await.unwrap();
    assert!(answers_locally(&via_process, "content", &v1).await);

    process.signal("-STOP");
    let v2 = tokio::time::timeout(WAIT, via_bumper.bump(&["content"]))
        .await
        .expect("the bump completes while the holder is stopped")
        .unwrap()
        .remove(0);
    let after_first = metric(&bumper, "coherence_bumps_waited_for_expiry_total");
    let v3 = via_bumper.bump(&["content"]).await.unwrap().remove(0);
    let after_second = metric(&bumper, "coherence_bumps_waited_for_expiry_total");

    // Resumed, the holder's own clock says its lease is over; it must not answer v1 or v2
    // current, however soon it is asked, and it takes a lease again once caught up.
    process.signal("-CONT");
    never_stale_until_local_again(&via_process, "content", &[&v1, &v2], &v3).await;
    assert_eq!(
        after_first, 1.0,
        "the bump waited for the stopped holder's lease to run out"
    );
    assert_eq!(
        after_second, 1.0,
        "the holder lost its lease: the next bump did not wait for it again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_subscription_stalls_is_waited_out_and_does_not_answer_what_it_missed() {
    let redis = RedisServer::start();
    let proxy = RedisProxy::start(redis.port()).await;
    let holder = leased(&proxy.url(), "holder", LEASE_MS).start().await;
    assert!(holder.wait_ready(WAIT).await);
    let via_holder = Client::connect(format!("http://{}", holder.grpc_addr))
        .await
        .unwrap()
        .with_timeout(WAIT);
    let (bumper, via_bumper) = sidecar(&redis, "bumper", LEASE_MS).await;
    let v1 = via_holder.get_one("content").await.unwrap();
    assert!(answers_locally(&via_holder, "content", &v1).await);

    // The holder's lease and fence are fresh, but it receives nothing more: it cannot apply
    // the bump nor acknowledge it, so the bump must outwait its lease.
    proxy.set_flow(Link::Subscription, Flow::Stall);
    let v2 = via_bumper.bump(&["content"]).await.unwrap().remove(0);
    let r = strong(&via_holder, "content", &v1).await;
    assert!(!r.current, "a completed bump missed: {r:?}");
    assert_eq!(
        metric(&bumper, "coherence_bumps_waited_for_expiry_total"),
        1.0
    );
    proxy.set_flow(Link::Subscription, Flow::Pass);
    never_stale_until_local_again(&via_holder, "content", &[&v1], &v2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_subscription_is_killed_never_answers_a_superseded_version() {
    let redis = RedisServer::start();
    let (_holder, via_holder) = sidecar(&redis, "holder", LEASE_MS).await;
    let (_bumper, via_bumper) = sidecar(&redis, "bumper", LEASE_MS).await;
    let v1 = via_holder.get_one("content").await.unwrap();
    assert!(answers_locally(&via_holder, "content", &v1).await);
    let _: String = redis
        .cmd(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .map(|n: i64| n.to_string())
        .unwrap();
    let v2 = via_bumper.bump(&["content"]).await.unwrap().remove(0);
    never_stale_until_local_again(&via_holder, "content", &[&v1], &v2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_then_restarted_empty_the_bump_waits_out_the_quarantine_and_no_holder_answers_stale(
) {
    let mut redis = RedisServer::start();
    let (holder, via_holder) = sidecar(&redis, "holder", LEASE_MS).await;
    let (bumper, via_bumper) = sidecar(&redis, "bumper", LEASE_MS).await;
    let v1 = via_holder.get_one("content").await.unwrap();
    assert!(answers_locally(&via_holder, "content", &v1).await);

    // Paused: nothing renews, so the lease runs out by the holder's own clock.
    redis.pause();
    let lapsed = eventually(WAIT, || async {
        metric(&holder, "coherence_read_leases_held") == 0.0
    })
    .await;
    redis.resume();
    assert!(lapsed, "the lease outlived a paused Redis");
    assert!(answers_locally(&via_holder, "content", &v1).await);

    // Restarted empty: the lease table is gone; the new epoch's first bump waits out the
    // quarantine, past any lease granted before.
    redis.restart_empty();
    let v2 = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(mut v) = via_bumper.bump(&["content"]).await {
                return v.remove(0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a bump succeeds after the restart");
    assert!(metric(&bumper, "coherence_bumps_waited_for_expiry_total") >= 1.0);
    never_stale_until_local_again(&via_holder, "content", &[&v1], &v2).await;
}
