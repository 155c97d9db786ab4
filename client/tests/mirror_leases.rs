//! Read leases in client mirrors (issue 18; docs/client-protocol.md, rules 16–19), against real
//! sidecars on a real Redis: a mirror answers strong checks in its own memory while it holds a
//! lease, a bump anywhere completes only once that mirror applied it (so the old version is
//! never answered current afterwards, locally or not), a mirror that stops acknowledging delays
//! bumps at most until its lease ran out, and without leases strong checks go to the sidecar.

use std::time::{Duration, Instant};

use coherence_client::{
    Client, Consistency, Freshness, MirrorLeaseAnswer, MirrorOptions, MirroredClient, Version,
    WatchEvent,
};
use coherence_sidecar::Sidecar;
use coherence_testkit::{eventually, metric_sum, Await, RedisServer, TestSidecar};
use futures::StreamExt;

/// The read-lease period of these tests, in ms.
const LEASE_MS: u64 = 1_000;
/// Bound of every wait for an event.
const WAIT: Duration = Duration::from_secs(20);

/// A sidecar named `id` holding read leases of `lease_ms` (0: none); no canary bumps (they
/// would wait for lease holders too, and these tests count the waits).
async fn sidecar(redis: &RedisServer, id: &str, lease_ms: u64) -> TestSidecar {
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id(id)
        .namespace("kit")
        .read_leases(lease_ms)
        .wait(Await::Connected)
        .start()
        .await;
    assert!(sidecar.wait_ready(WAIT).await, "{id} never became ready");
    sidecar
}

async fn client(sidecar: &TestSidecar) -> Client {
    Client::connect(sidecar.grpc_url())
        .await
        .expect("connects")
        .with_timeout(WAIT)
}

fn metric(sidecar: &Sidecar, name: &str) -> f64 {
    metric_sum(&sidecar.state.metrics.encode(), name)
}

/// Waits until `mirror` answers a strong check of `version` locally, current.
async fn answers_strong_locally(mirror: &MirroredClient, key: &str, version: &Version) -> bool {
    eventually(WAIT, || async {
        let before = mirror.stats().strong_hits;
        let fresh = mirror.freshness(key, version, Consistency::Strong).await;
        fresh == Freshness::Current && mirror.stats().strong_hits > before
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_answers_strong_locally_and_no_bump_elsewhere_completes_before_it_applied_it() {
    let redis = RedisServer::start();
    let holder = sidecar(&redis, "holder", LEASE_MS).await;
    let other = sidecar(&redis, "other", LEASE_MS).await;
    let mirror = client(&holder).await.with_mirror(MirrorOptions::default());
    let elsewhere = client(&other).await;
    assert!(mirror.wait_trusted(WAIT).await, "mirror never trusted");

    let mut current = mirror.get_one("content").await.expect("a version");
    assert!(
        answers_strong_locally(&mirror, "content", &current).await,
        "the mirror never answered strong under a lease: {:?}",
        mirror.stats()
    );
    assert!(mirror.holds_strong_lease());
    assert!(metric(&holder, "coherence_mirror_leases_held") >= 1.0);

    // Each bump completes elsewhere; at once, the superseded version must not be current —
    // the mirror may answer locally only because the bump waited for it.
    let local_before = mirror.stats().strong_hits;
    for round in 0..40 {
        let bumped = elsewhere.bump(&["content"]).await.expect("bump").remove(0);
        let old = mirror
            .freshness("content", &current, Consistency::Strong)
            .await;
        assert_ne!(
            old,
            Freshness::Current,
            "round {round}: a version superseded by a completed bump answered current"
        );
        current = bumped;
        // Fill, so that the next round's check of the old version can be answered locally.
        assert!(
            mirror
                .is_current_with("content", &current, Consistency::Strong)
                .await,
            "round {round}: the new version is not current"
        );
    }
    assert!(
        mirror.stats().strong_hits > local_before,
        "no strong check after a bump was answered locally: {:?}",
        mirror.stats()
    );
    assert!(
        metric(&holder, "coherence_mirror_ack_wait_seconds_count") >= 40.0,
        "the holder acknowledged without waiting for its mirror"
    );

    // Its own bumps too: the holder waits for its mirror before answering.
    let before = current.clone();
    let own = mirror.bump(&["content"]).await.expect("own bump").remove(0);
    assert_eq!(
        mirror
            .freshness("content", &before, Consistency::Strong)
            .await,
        Freshness::Stale
    );
    assert!(
        mirror
            .is_current_with("content", &own, Consistency::Strong)
            .await
    );
    holder.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_that_stops_acknowledging_delays_bumps_only_until_its_lease_ran_out() {
    let redis = RedisServer::start();
    let holder = sidecar(&redis, "holder", LEASE_MS).await;
    let other = sidecar(&redis, "other", LEASE_MS).await;
    let elsewhere = client(&other).await;
    let via_holder = client(&holder).await;
    // Settle: the first bumps of a namespace wait out the quarantine of a new epoch.
    elsewhere.bump(&["warm"]).await.expect("bump");
    assert!(
        eventually(WAIT, || async {
            metric(&holder, "coherence_read_leases_held") > 0.0
        })
        .await,
        "the holder never took its own lease"
    );

    // A mirror that takes a lease, then never reads its stream nor acknowledges (a frozen app).
    let lease_id = "frozen-mirror-0123456789";
    let _stream = via_holder
        .watch_with_lease(&[], lease_id)
        .await
        .expect("watch");
    let granted = eventually(WAIT, || async {
        matches!(
            via_holder.mirror_lease(lease_id, 0, true).await,
            Ok(MirrorLeaseAnswer::Granted { .. })
        )
    })
    .await;
    assert!(granted, "no lease granted");
    let waited_before = metric(&holder, "coherence_mirror_leases_waited_out_total");

    // The bump completes (its lease runs out) and is visible everywhere afterwards.
    let v = elsewhere
        .bump(&["content"])
        .await
        .expect("bump completes")
        .remove(0);
    assert!(via_holder
        .is_current("content", &v, Consistency::Strong)
        .await
        .expect("check"));
    assert!(
        metric(&holder, "coherence_mirror_leases_waited_out_total") > waited_before,
        "the holder acknowledged without waiting out the frozen mirror's lease"
    );
    // Not renewed, its lease stays over: the next bumps do not wait for it again.
    let waited = metric(&holder, "coherence_mirror_leases_waited_out_total");
    for _ in 0..5 {
        elsewhere.bump(&["content"]).await.expect("bump");
    }
    assert_eq!(
        metric(&holder, "coherence_mirror_leases_waited_out_total"),
        waited,
        "a lease that ran out was waited for again"
    );
    holder.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_leases_strong_checks_ask_the_sidecar() {
    let redis = RedisServer::start();
    let plain = sidecar(&redis, "plain", 0).await;
    let leasing = sidecar(&redis, "leasing", LEASE_MS).await;

    // A sidecar without read leases grants none, saying why.
    let mirror = client(&plain).await.with_mirror(MirrorOptions::default());
    assert!(mirror.wait_trusted(WAIT).await);
    let v = mirror.get_one("content").await.expect("version");
    for _ in 0..20 {
        assert!(
            mirror
                .is_current_with("content", &v, Consistency::Strong)
                .await
        );
    }
    assert_eq!(mirror.stats().strong_hits, 0, "{:?}", mirror.stats());
    let raw = client(&plain).await;
    let _stream = raw
        .watch_with_lease(&[], "plain-mirror-0123456789")
        .await
        .expect("watch");
    match raw.mirror_lease("plain-mirror-0123456789", 0, true).await {
        Ok(MirrorLeaseAnswer::Refused(why)) => assert!(why.contains("off"), "{why}"),
        other => panic!("a sidecar without leases granted one: {other:?}"),
    }

    // A mirror that opts out asks the sidecar even when it could hold a lease.
    let opted_out = client(&leasing)
        .await
        .with_mirror(MirrorOptions::default().strong_leases(false));
    assert!(opted_out.wait_trusted(WAIT).await);
    let v = opted_out.get_one("content").await.expect("version");
    for _ in 0..20 {
        assert!(
            opted_out
                .is_current_with("content", &v, Consistency::Strong)
                .await
        );
    }
    assert_eq!(opted_out.stats().strong_hits, 0);
    assert!(!opted_out.holds_strong_lease());
    plain.shutdown().await;
    leasing.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_ids_are_validated_and_unknown_streams_are_refused() {
    let redis = RedisServer::start();
    let holder = sidecar(&redis, "holder", LEASE_MS).await;
    let raw = client(&holder).await;
    for bad in ["short", "has a space in it, long enough", &"x".repeat(129)] {
        let err = raw.watch_with_lease(&[], bad).await.expect_err(bad);
        assert!(err.to_string().contains("lease_id"), "{err}");
        let err = raw.mirror_lease(bad, 0, true).await.expect_err(bad);
        assert!(err.to_string().contains("lease_id"), "{err}");
    }
    match raw.mirror_lease("never-opened-0123456789", 0, true).await {
        Ok(MirrorLeaseAnswer::Refused(why)) => assert!(why.contains("no Watch stream"), "{why}"),
        other => panic!("a lease for no stream: {other:?}"),
    }
    // One stream per id: a second stream with the same id would be granted leases judged on
    // the first one's progress, which nothing waits for. Refused.
    let first = raw
        .watch_with_lease(&[], "shared-id-0123456789")
        .await
        .expect("watch");
    let err = raw
        .watch_with_lease(&[], "shared-id-0123456789")
        .await
        .expect_err("a second stream with the same lease id");
    assert!(err.to_string().contains("another Watch stream"), "{err}");
    drop(first);
    holder.shutdown().await;
}

/// A holder shutting down must not release its read-lease grants while the leases it passed on
/// to client mirrors still run — here a raw client plays a mirror that follows rules 16–19 to
/// the letter and has not yet seen its stream end. Found by review: the first version removed its
/// lease-table fields at once, so a bump elsewhere completed while the mirror still held a valid
/// lease and the superseded version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_shutting_down_keeps_its_grants_until_its_mirrors_leases_ran_out() {
    let redis = RedisServer::start();
    let holder = sidecar(&redis, "holder", 1_500).await;
    let other = sidecar(&redis, "other", 0).await;
    let c = client(&holder).await;
    let elsewhere = client(&other).await;
    // A first bump so that the shards' new-epoch quarantines are behind us.
    let first = Instant::now();
    while elsewhere.bump(&["content"]).await.is_err() {
        assert!(first.elapsed() < WAIT, "no bump ever completed");
    }

    let lease_id = "review0123456789abcdef0123456789";
    let mut stream = c.watch_with_lease(&[], lease_id).await.expect("watch");
    // Rule 2/3: wait for the first vouching heartbeat, then fill.
    loop {
        match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Ok(WatchEvent::Heartbeat {
                fence_age: Some(_), ..
            }))) => break,
            Ok(Some(Ok(_))) => {}
            other => panic!("stream: {other:?}"),
        }
    }
    let v0 = c.get(&["content"]).await.expect("get").remove(0);

    // Rule 17: a lease, counted from t_send.
    let started = Instant::now();
    let (sent_at, granted, min_position) = loop {
        let sent_at = Instant::now();
        match c
            .mirror_lease(lease_id, stream.position(), true)
            .await
            .expect("mirror_lease")
        {
            MirrorLeaseAnswer::Granted {
                granted,
                min_position,
            } => break (sent_at, granted, min_position),
            MirrorLeaseAnswer::Refused(why) => {
                assert!(started.elapsed() < WAIT, "never granted: {why}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let lease_until = sent_at + granted - granted / 1_000;
    // Rule 19: apply up to min_position (heartbeats every 100 ms), acknowledge (rule 18).
    let mut last_heartbeat = Instant::now();
    while stream.position() < min_position || last_heartbeat.elapsed() > Duration::from_millis(50) {
        match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Ok(WatchEvent::Heartbeat { .. }))) => last_heartbeat = Instant::now(),
            Ok(Some(Ok(event))) => panic!("unexpected {event:?}"),
            other => panic!("stream: {other:?}"),
        }
    }
    c.mirror_lease(lease_id, stream.position(), false)
        .await
        .expect("ack");

    // The holder shuts down. The mirror's Watch loop has not yet read what follows on its
    // stream (the stream's end is in flight, or the loop is busy for a moment).
    let shutdown = tokio::spawn(holder.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;

    let bumped = elsewhere.bump(&["content"]).await.expect("bump").remove(0);
    let completed = Instant::now();
    assert_ne!(bumped, v0);
    assert!(
        completed >= lease_until,
        "the bump superseding {v0:?} completed {:?} before the mirror's lease (granted by the \
         holder, {granted:?} from t_send) ran out; the mirror had not applied it (its stream \
         delivered nothing after the ack), so under rule 19 it may still answer {v0:?} current \
         to a strong check that begins after the bump completed (last heartbeat {:?} ago)",
        lease_until - completed,
        last_heartbeat.elapsed(),
    );
    let _ = shutdown.await;
}
