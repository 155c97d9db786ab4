//! A holder shutting down must not release its read-lease grants while the leases it passed on
//! to client mirrors still run: end to end (real Redis, real sidecars, the raw client API
//! playing a mirror that follows docs/client-protocol.md rules 16–19 to the letter). Found by
//! review: the first version removed its lease-table fields at once, so a bump elsewhere
//! completed while a mirror that had not yet seen its stream end still held a valid lease and
//! the superseded version.

use std::time::{Duration, Instant};

use coherence_client::{Client, MirrorLeaseAnswer, WatchEvent};
use coherence_testkit::{Await, RedisServer, TestSidecar};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(20);

async fn sidecar(redis: &RedisServer, id: &str, lease_ms: u64) -> TestSidecar {
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id(id)
        .namespace("kit")
        .settings(|s| {
            s.read_lease_ms = lease_ms;
            s.canary_interval_ms = 0;
        })
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
