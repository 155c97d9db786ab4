//! The in-process mirror against real sidecars on a real Redis.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coherence_client::{Client, MirrorEvent, MirrorOptions};
use coherence_sidecar::state::WatchItem;
use coherence_testkit::{eventually, RedisServer};
use support::{start_sidecar, start_sidecar_on, url};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn mirror_answers_locally_and_sees_bumps_from_other_servers() {
    let redis = RedisServer::start();
    let a = start_sidecar(&redis.url(), "a").await;
    let b = start_sidecar(&redis.url(), "b").await;
    let mirrored = Client::connect(url(&a))
        .await
        .unwrap()
        .with_mirror(MirrorOptions::default());
    let other = Client::connect(url(&b)).await.unwrap();
    assert!(
        mirrored.wait_trusted(WAIT).await,
        "mirror never became trusted"
    );

    let stamp = mirrored.get_one("content").await.unwrap();
    assert_eq!(
        mirrored.is_current_local("content", &stamp),
        Some(true),
        "the fill answers locally"
    );
    assert!(mirrored.is_current("content", &stamp).await);
    let hits = mirrored.stats().hits;
    assert!(hits >= 2, "{:?}", mirrored.stats());

    let bumped = other.bump(&["content"]).await.unwrap().remove(0);
    let seen = eventually(WAIT, || async {
        mirrored.is_current_local("content", &stamp) == Some(false)
    })
    .await;
    assert!(
        seen,
        "the invalidation from server b never reached the mirror"
    );
    assert_eq!(mirrored.is_current_local("content", &bumped), Some(true));
    assert!(!mirrored.is_current("content", &stamp).await);
    assert!(mirrored.stats().invalidations >= 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn own_bump_is_visible_at_once() {
    let redis = RedisServer::start();
    let a = start_sidecar(&redis.url(), "a").await;
    let mirrored = Client::connect(url(&a))
        .await
        .unwrap()
        .with_mirror(MirrorOptions::default());
    assert!(mirrored.wait_trusted(WAIT).await);
    for round in 0..50 {
        let old = mirrored.get_one("k").await.unwrap();
        let new = mirrored.bump(&["k"]).await.unwrap().remove(0);
        assert!(
            !mirrored.is_current("k", &old).await,
            "round {round}: old version still current after own bump"
        );
        assert!(mirrored.is_current("k", &new).await, "round {round}");
    }
    a.shutdown().await;
}

#[tokio::test]
async fn strong_checks_always_ask_the_sidecar() {
    let redis = RedisServer::start();
    let a = start_sidecar(&redis.url(), "a").await;
    let b = start_sidecar(&redis.url(), "b").await;
    let mirrored = Client::connect(url(&a))
        .await
        .unwrap()
        .with_mirror(MirrorOptions::default());
    let other = Client::connect(url(&b)).await.unwrap();
    assert!(mirrored.wait_trusted(WAIT).await);
    let stamp = mirrored.get_one("strong").await.unwrap();
    for _ in 0..20 {
        other.bump(&["strong"]).await.unwrap();
        // Reflects the bump that completed before the call, whatever the mirror knows yet.
        assert!(
            !mirrored
                .is_current_with("strong", &stamp, coherence_client::Consistency::Strong)
                .await
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn resync_empties_the_mirror() {
    let redis = RedisServer::start();
    let a = start_sidecar(&redis.url(), "a").await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let options = MirrorOptions::default().on_event(move |e| seen.lock().unwrap().push(e.clone()));
    let mirrored = Client::connect(url(&a)).await.unwrap().with_mirror(options);
    assert!(mirrored.wait_trusted(WAIT).await);
    let keys = ["r1", "r2", "r3"];
    let stamps = mirrored.client().get(&keys).await.unwrap();
    for key in keys {
        mirrored.get_one(key).await.unwrap();
    }
    assert_eq!(mirrored.mirrored_keys(), 3);
    assert_eq!(mirrored.is_current_local("r1", &stamps[0]), Some(true));
    // The first Get of a key issues its version and publishes it through Redis; those three
    // invalidations must be in before the resync, or they would refill the emptied mirror.
    let announced = eventually(WAIT, || async { mirrored.stats().invalidations >= 3 }).await;
    assert!(
        announced,
        "the new keys were never announced: {:?}",
        mirrored.stats()
    );

    a.state.publish(WatchItem::Resync("test resync".into()));
    let emptied = eventually(WAIT, || async { mirrored.mirrored_keys() == 0 }).await;
    assert!(
        emptied,
        "the mirror still holds {} keys",
        mirrored.mirrored_keys()
    );
    assert_eq!(
        mirrored.is_current_local("r1", &stamps[0]),
        None,
        "nothing is answered locally after a resync"
    );
    assert!(mirrored.stats().resyncs >= 1);
    assert!(events.lock().unwrap().contains(&MirrorEvent::Resync {
        reason: "test resync".into()
    }));
    // Still correct afterwards: the sidecar answers and refills.
    assert!(mirrored.is_current("r1", &stamps[0]).await);
    assert_eq!(mirrored.is_current_local("r1", &stamps[0]), Some(true));
    a.shutdown().await;
}

#[tokio::test]
async fn sidecar_restart_under_the_client_no_stale_read_then_recovery() {
    let redis = RedisServer::start();
    let max_staleness = Duration::from_millis(500);
    let a = start_sidecar(&redis.url(), "a").await;
    let b = start_sidecar(&redis.url(), "b").await;
    let addr = a.grpc_addr;
    let mirrored = Client::connect(url(&a))
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(300))
        .with_mirror(MirrorOptions::default().max_staleness(max_staleness));
    let other = Client::connect(url(&b)).await.unwrap();
    assert!(mirrored.wait_trusted(WAIT).await);
    let old = mirrored.get_one("restart").await.unwrap();
    assert!(mirrored.is_current("restart", &old).await);

    a.shutdown().await;
    let new = other.bump(&["restart"]).await.unwrap().remove(0);
    let bumped_at = Instant::now();
    // While the sidecar is down nothing can vouch for anything: fail closed.
    while bumped_at.elapsed() < max_staleness * 2 {
        let began = Instant::now();
        let current = mirrored.is_current("restart", &old).await;
        if began.duration_since(bumped_at) > max_staleness {
            assert!(
                !current,
                "stale version reported current while the sidecar was down"
            );
        }
    }
    assert!(!mirrored.is_trusted());
    assert!(
        !mirrored.is_current("restart", &new).await,
        "fail closed: no sidecar, no vouching"
    );

    let a = start_sidecar_on(&redis.url(), "a", addr).await;
    assert!(
        mirrored.wait_trusted(WAIT).await,
        "the mirror never recovered: {:?}",
        mirrored.stats()
    );
    assert!(
        !mirrored.is_current("restart", &old).await,
        "stale after recovery"
    );
    assert!(mirrored.is_current("restart", &new).await);
    assert_eq!(
        mirrored.is_current_local("restart", &new),
        Some(true),
        "local answers again"
    );
    let stats = mirrored.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert!(stats.resyncs >= 1, "{stats:?}");
    assert!(stats.fallback_failures >= 1, "{stats:?}");
    a.shutdown().await;
    b.shutdown().await;
}
