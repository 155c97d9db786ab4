//! The watch contract (docs/design.md): every bump that completes after a `Watch` stream was
//! opened reaches it as an `Invalidation`, or is covered by a `Resync` sent before any heartbeat
//! that vouches past it — from the very start of a sidecar, before it could subscribe.
//!
//! A sidecar whose subscription cannot come up yet (its Redis user lacks SUBSCRIBE for a moment,
//! for real) already answers `Get` from Redis and serves `Watch`. A client reads a key, another
//! server bumps it — an invalidation nobody on this sidecar can hear — and only then does the
//! subscription come up. The early stream must hear of the bump, and a `MirroredClient` that
//! filled the key from that `Get` must never call the superseded version current.

mod common {
    pub mod acl;
}

use std::collections::HashMap;
use std::time::{Duration, Instant};

use coherence_client::{Client, MirrorOptions, Version, WatchEvent};
use coherence_testkit::{RedisServer, TestSidecar, WAIT};
use common::acl::{allow_subscribe, sidecar_that_cannot_subscribe};
use futures::StreamExt;

const KEY: &str = "content";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_opened_before_its_sidecar_is_ready_hears_of_bumps_it_could_not_see() {
    let redis = RedisServer::start();
    let other = TestSidecar::start_named(&redis, "other").await;
    let early = sidecar_that_cannot_subscribe(&redis).await;
    let via_early = Client::connect(early.grpc_url()).await.unwrap();
    let via_other = Client::connect(other.grpc_url()).await.unwrap();

    // A raw stream and a mirror, both opened while the sidecar cannot subscribe.
    let mut stream = via_early.watch(&[]).await.expect("Watch is served early");
    let mirrored = via_early.clone().with_mirror(MirrorOptions::default());
    let stamped = via_early.get_one(KEY).await.expect("Get is served early");
    // The mirror asks too; whether it may keep the answer is its business.
    let filled = mirrored.get_one(KEY).await.expect("Get through the mirror");
    assert_eq!(stamped, filled);
    assert!(!early.is_ready(), "the sidecar cannot be ready yet");

    let bumped = via_other.bump(&[KEY]).await.unwrap().remove(0);
    assert_ne!(bumped, stamped);
    allow_subscribe(&redis);
    assert!(early.wait_ready(WAIT).await, "the sidecar never got ready");

    // Read the early stream up to its first vouching heartbeat: the bump must be covered by
    // then.
    let covered = tokio::time::timeout(WAIT, async {
        let mut covered = false;
        while let Some(event) = stream.next().await {
            match event.expect("the stream stays up") {
                WatchEvent::Resync { .. } => covered = true,
                WatchEvent::Invalidated { key, version, .. } if key == KEY => {
                    covered |= version == bumped
                }
                WatchEvent::Heartbeat {
                    fence_age: Some(_), ..
                } => return covered,
                _ => {}
            }
        }
        panic!("the stream ended");
    })
    .await
    .expect("a vouching heartbeat arrives");
    assert!(
        covered,
        "a heartbeat vouched for the stream although the bump made before the sidecar \
         subscribed was neither announced nor covered by a Resync"
    );

    assert!(
        mirrored.wait_trusted(WAIT).await,
        "the mirror never trusted"
    );
    assert_ne!(
        mirrored.is_current_local(KEY, &stamped),
        Some(true),
        "the mirror calls a superseded version current from its own memory"
    );
    assert!(!mirrored.is_current(KEY, &stamped).await);
    assert!(mirrored.is_current(KEY, &bumped).await);
    // And it keeps saying so while trusted (no late fill revives it).
    for _ in 0..20 {
        assert!(!mirrored.is_current(KEY, &stamped).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!is_current_strong(&via_early, &stamped).await);
    early.shutdown().await;
    other.shutdown().await;
}

async fn is_current_strong(client: &Client, version: &Version) -> bool {
    client
        .is_current(KEY, version, coherence_client::Consistency::Strong)
        .await
        .expect("a strong check answers")
}

/// The sequence inside a version token `<epoch>.<seq>.<nonce>` (the test knows the format).
fn token_seq(version: &Version) -> (String, u64) {
    let mut parts = version.token().split('.');
    let epoch = parts.next().unwrap_or_default().to_string();
    let seq = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (epoch, seq)
}

/// Ordered announcements: reconciliation re-reads every mirrored version from Redis while other
/// servers bump the same keys as fast as they can. A difference it sees while invalidations are
/// in flight is no mismatch, and nothing it announces may reach a watcher after a newer version
/// of the key did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_beside_hot_bumps_announces_nothing_out_of_order() {
    let redis = RedisServer::start();
    let watched = TestSidecar::builder(&redis.url())
        .server_id("watched")
        .settings(|s| s.reconcile_interval_ms = 10)
        .start()
        .await;
    let bumper = TestSidecar::start_named(&redis, "bumper").await;
    let via_watched = Client::connect(watched.grpc_url()).await.unwrap();
    let via_bumper = Client::connect(bumper.grpc_url()).await.unwrap();
    let keys: Vec<String> = (0..8).map(|i| format!("hot:{i}")).collect();
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    // The watched sidecar mirrors the keys, so reconciliation reads them every round.
    via_watched.get(&names).await.unwrap();
    let mut stream = via_watched.watch(&["hot:"]).await.unwrap();

    let bumps = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(3);
        let mut n = 0u64;
        while Instant::now() < until {
            let key = format!("hot:{}", n % 8);
            via_bumper.bump(&[key.as_str()]).await.expect("bump");
            n += 1;
        }
        n
    });
    let mut newest: HashMap<String, (String, u64)> = HashMap::new();
    let mut announced = 0u64;
    let listen = async {
        while let Some(event) = stream.next().await {
            if let WatchEvent::Invalidated { key, version, .. } = event.expect("stream") {
                let (epoch, seq) = token_seq(&version);
                if let Some((last_epoch, last_seq)) = newest.get(&key) {
                    assert!(
                        *last_epoch != epoch || *last_seq <= seq,
                        "{key}: version {seq} announced after {last_seq}"
                    );
                }
                newest.insert(key, (epoch, seq));
                announced += 1;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(4), listen).await;
    let bumped = bumps.await.expect("the bumper did not panic");
    let mismatches = watched.state.metrics.reconcile_mismatches.get();
    println!("RECONCILE BESIDE HOT BUMPS: {bumped} bumps, {announced} announced, {mismatches} mismatches counted");
    assert!(
        bumped >= 100 && announced >= 100,
        "too little traffic to prove anything"
    );
    assert_eq!(
        mismatches, 0,
        "reconciliation counted invalidations in flight as mismatches"
    );
    watched.shutdown().await;
    bumper.shutdown().await;
}
