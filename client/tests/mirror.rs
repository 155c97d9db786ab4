//! The in-process mirror against real sidecars on a real Redis.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coherence_client::{Client, MirrorEvent, MirrorOptions};
use coherence_sidecar::versions::state::WatchItem;
use coherence_testkit::{eventually, RedisServer, TestSidecar};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn mirror_answers_locally_and_sees_bumps_from_other_servers() {
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let b = TestSidecar::start_named(&redis, "b").await;
    let mirrored = Client::connect(a.grpc_url())
        .await
        .unwrap()
        .with_mirror(MirrorOptions::default());
    let other = Client::connect(b.grpc_url()).await.unwrap();
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
    let a = TestSidecar::start_named(&redis, "a").await;
    let mirrored = Client::connect(a.grpc_url())
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
    let a = TestSidecar::start_named(&redis, "a").await;
    let b = TestSidecar::start_named(&redis, "b").await;
    let mirrored = Client::connect(a.grpc_url())
        .await
        .unwrap()
        .with_mirror(MirrorOptions::default());
    let other = Client::connect(b.grpc_url()).await.unwrap();
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
    let a = TestSidecar::start_named(&redis, "a").await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let options = MirrorOptions::default().on_event(move |e| seen.lock().unwrap().push(e.clone()));
    let mirrored = Client::connect(a.grpc_url())
        .await
        .unwrap()
        .with_mirror(options);
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
    let a = TestSidecar::start_named(&redis, "a").await;
    let b = TestSidecar::start_named(&redis, "b").await;
    let addr = a.grpc_addr;
    let mirrored = Client::connect(a.grpc_url())
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(300))
        .with_mirror(MirrorOptions::default().max_staleness(max_staleness));
    let other = Client::connect(b.grpc_url()).await.unwrap();
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

    let a = TestSidecar::builder(&redis.url())
        .server_id("a")
        .listen(addr)
        .start()
        .await;
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

/// Guarantee 7 through the mirror, under concurrency: while this process bumps a key over and
/// over, strong checks of the same key (whose answers fill the mirror) and another server's
/// bumps (whose invalidations may arrive after this process's newer bump answered) race it.
/// Once an own bump has returned, the version it replaced must never again be answered
/// current, locally or not. Ported rule for rule, the earlier generation-only rule showed
/// thousands of such answers within max_staleness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_bumps_stay_visible_under_concurrent_checks_and_late_invalidations() {
    use coherence_client::{Consistency, Version};
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let b = TestSidecar::start_named(&redis, "b").await;
    let mirrored = Client::connect(a.grpc_url())
        .await
        .unwrap()
        .with_mirror(MirrorOptions::default());
    let other = Client::connect(b.grpc_url()).await.unwrap();
    assert!(mirrored.wait_trusted(WAIT).await);
    const KEY: &str = "hot";
    let first = mirrored.get_one(KEY).await.unwrap();
    // Versions this process's bumps returned, in order: each one's predecessor is superseded
    // by a completed own bump from the moment it is pushed.
    let own: Arc<Mutex<Vec<Version>>> = Arc::new(Mutex::new(vec![first]));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let bumper = {
        let (mirrored, own) = (mirrored.clone(), Arc::clone(&own));
        tokio::spawn(async move {
            for _ in 0..1_000 {
                let v = mirrored.bump(&[KEY]).await.expect("own bump").remove(0);
                own.lock().unwrap().push(v);
            }
        })
    };
    let stranger = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                other.bump(&[KEY]).await.expect("other bump");
            }
        })
    };
    let mut checkers = Vec::new();
    for strong in [true, true, false, false] {
        let (mirrored, own, done) = (mirrored.clone(), Arc::clone(&own), Arc::clone(&done));
        checkers.push(tokio::spawn(async move {
            let (mut checks, mut violations) = (0u64, Vec::new());
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (latest, superseded) = {
                    let own = own.lock().unwrap();
                    let n = own.len();
                    (own[n - 1].clone(), n.checked_sub(2).map(|i| own[i].clone()))
                };
                if strong {
                    // Fills the mirror with answers that race the bumps.
                    mirrored
                        .is_current_with(KEY, &latest, Consistency::Strong)
                        .await;
                }
                if let Some(old) = superseded {
                    checks += 1;
                    if mirrored.is_current(KEY, &old).await {
                        violations.push(old);
                    }
                }
                // A local answer never waits: let the bumps run.
                tokio::task::yield_now().await;
            }
            (checks, violations)
        }));
    }
    bumper.await.expect("bumper");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    stranger.await.expect("stranger");
    let (mut checks, mut violations) = (0, Vec::new());
    for checker in checkers {
        let (c, v) = checker.await.expect("checker");
        checks += c;
        violations.extend(v);
    }
    println!(
        "OWN WRITES: {checks} checks of superseded own versions, {} answered current; {:?}",
        violations.len(),
        mirrored.stats()
    );
    assert!(checks >= 1_000, "only {checks} checks");
    assert!(
        violations.is_empty(),
        "{} superseded own versions answered current, e.g. {:?}",
        violations.len(),
        violations.first()
    );
    a.shutdown().await;
    b.shutdown().await;
}
