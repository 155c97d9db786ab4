//! `CoherentCache` against real sidecars on a real Redis.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coherence_client::{Client, CoherentCache, MirrorOptions, MirroredClient};
use coherence_testkit::{eventually, free_port, RedisServer, TestSidecar};

const WAIT: Duration = Duration::from_secs(10);

async fn mirrored(sidecar: &TestSidecar) -> MirroredClient {
    mirrored_with_timeout(sidecar, coherence_client::DEFAULT_TIMEOUT).await
}

/// A trusted mirrored client whose sidecar calls give up after `timeout`.
async fn mirrored_with_timeout(sidecar: &TestSidecar, timeout: Duration) -> MirroredClient {
    let client = Client::connect(sidecar.grpc_url())
        .await
        .unwrap()
        .with_timeout(timeout)
        .with_mirror(MirrorOptions::default());
    assert!(client.wait_trusted(WAIT).await);
    client
}

fn item_key(id: &u32) -> String {
    format!("item:{id}")
}

#[tokio::test(flavor = "current_thread")]
async fn single_flight_1000_concurrent_misses_cause_one_load() {
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let cache: CoherentCache<u32, u64> = CoherentCache::new(mirrored(&a).await, item_key);
    let loads = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());

    let run_round = |expected: u64| {
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let cache = cache.clone();
                let loads = Arc::clone(&loads);
                let gate = Arc::clone(&gate);
                let started = Arc::clone(&started);
                tokio::spawn(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    cache
                        .get_or_load(1, || {
                            let loads = Arc::clone(&loads);
                            let gate = Arc::clone(&gate);
                            async move {
                                loads.fetch_add(1, Ordering::SeqCst);
                                // Hold the load open until the test lets it finish, so every
                                // caller arrives while it is in flight.
                                gate.notified().await;
                                Ok::<_, std::convert::Infallible>(expected)
                            }
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        tasks
    };

    // A current-thread runtime: a task that has started has run up to its first wait, so once
    // all 1,000 have started, all are waiting on the one load in flight.
    let tasks = run_round(10);
    let all_waiting = eventually(WAIT, || async {
        started.load(Ordering::SeqCst) == 1000 && loads.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(all_waiting, "started {started:?}, loads {loads:?}");
    gate.notify_waiters();
    gate.notify_one();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 10);
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "1,000 concurrent misses must cause one load"
    );

    // After a write every caller finds the entry stale at once: still one load.
    assert!(cache.invalidate_after_write(&[1]).await.is_complete());
    let tasks = run_round(11);
    let all_waiting = eventually(WAIT, || async {
        started.load(Ordering::SeqCst) == 2000 && loads.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(all_waiting, "started {started:?}, loads {loads:?}");
    gate.notify_waiters();
    gate.notify_one();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 11);
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        2,
        "a stale entry must not stampede the loader"
    );
    assert_eq!(cache.stats().loads, 2, "{:?}", cache.stats());
    a.shutdown().await;
}

#[tokio::test]
async fn a_bump_racing_the_load_leaves_the_entry_stale() {
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let b = TestSidecar::start_named(&redis, "b").await;
    let cache: CoherentCache<u32, &'static str> = CoherentCache::new(mirrored(&a).await, item_key);
    let other = Client::connect(b.grpc_url()).await.unwrap();

    // The write (and its bump) lands after the version was read but while the old row is
    // being loaded: the entry must be stamped with the old version.
    let value = cache
        .get_or_load(5, || {
            let other = other.clone();
            async move {
                other.bump(&["item:5"]).await.unwrap();
                Ok::<_, std::convert::Infallible>("old row")
            }
        })
        .await
        .unwrap();
    assert_eq!(value, "old row");
    let reloaded = eventually(WAIT, || async { cache.get(&5).await.is_none() }).await;
    assert!(
        reloaded,
        "the entry loaded across a bump was served as current"
    );
    let fresh = cache
        .get_or_load(5, || async { Ok::<_, std::convert::Infallible>("new row") })
        .await
        .unwrap();
    assert_eq!(fresh, "new row");
    assert_eq!(cache.get(&5).await, Some("new row"));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn without_a_version_the_value_is_returned_but_not_cached() {
    // A sidecar that is not there: no version can be read.
    let client = Client::connect_lazy(format!("127.0.0.1:{}", free_port()))
        .unwrap()
        .with_timeout(Duration::from_millis(200))
        .with_mirror(MirrorOptions::default());
    let cache: CoherentCache<u32, u64> = CoherentCache::new(client, item_key);
    let loads = AtomicUsize::new(0);
    for round in 1..=3 {
        let value = cache
            .get_or_load(9, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(99)
            })
            .await
            .unwrap();
        assert_eq!(value, 99);
        assert_eq!(
            loads.load(Ordering::SeqCst),
            round,
            "nothing may be cached without a version"
        );
    }
    assert_eq!(cache.get(&9).await, None);
    assert_eq!(cache.stats().loads, 0);
    assert_eq!(cache.stats().uncached_loads, 3);
}

#[tokio::test]
async fn invalidate_after_write_reports_keys_it_could_not_bump() {
    let client = Client::connect_lazy(format!("127.0.0.1:{}", free_port()))
        .unwrap()
        .with_timeout(Duration::from_millis(200))
        .with_mirror(MirrorOptions::default());
    let cache: CoherentCache<u32, u64> = CoherentCache::builder(client, item_key)
        .bump_retry(3, Duration::from_millis(10))
        .build();
    let report = cache.invalidate_after_write(&[1, 2, 2]).await;
    assert!(!report.is_complete());
    assert_eq!(
        report.not_bumped,
        vec!["item:1".to_string(), "item:2".to_string()]
    );
    assert!(report.last_error.is_some());
}

#[tokio::test]
async fn a_loader_error_reaches_the_caller_and_is_not_cached() {
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let cache: CoherentCache<u32, u64> = CoherentCache::new(mirrored(&a).await, item_key);
    let err = cache
        .get_or_load(3, || async { Err::<u64, _>("database down") })
        .await
        .unwrap_err();
    assert_eq!(*err, "database down");
    let value = cache
        .get_or_load(3, || async { Ok::<_, &str>(3) })
        .await
        .unwrap();
    assert_eq!(value, 3);
    a.shutdown().await;
}

#[tokio::test]
async fn the_cache_rides_out_a_sidecar_restart_without_stale_reads() {
    let redis = RedisServer::start();
    let max_staleness = coherence_client::DEFAULT_MAX_STALENESS;
    let a = TestSidecar::start_named(&redis, "a").await;
    let b = TestSidecar::start_named(&redis, "b").await;
    let addr = a.grpc_addr;
    let client = mirrored_with_timeout(&a, Duration::from_millis(300)).await;
    let cache: CoherentCache<u32, u64> = CoherentCache::new(client, item_key);
    let other = Client::connect(b.grpc_url()).await.unwrap();
    let truth = AtomicU64::new(1);
    let read = || async {
        cache
            .get_or_load(1, || async {
                Ok::<_, std::convert::Infallible>(truth.load(Ordering::SeqCst))
            })
            .await
            .unwrap()
    };
    assert_eq!(read().await, 1);
    assert_eq!(read().await, 1);
    assert_eq!(cache.stats().hits, 1);

    a.shutdown().await;
    truth.store(2, Ordering::SeqCst);
    other.bump(&["item:1"]).await.unwrap();
    let written = Instant::now();
    while written.elapsed() < max_staleness * 2 {
        let began = Instant::now();
        let value = read().await;
        if began.duration_since(written) > max_staleness {
            assert_eq!(value, 2, "stale read while the sidecar was down");
        }
    }
    assert!(cache.stats().uncached_loads >= 1, "{:?}", cache.stats());

    let a = TestSidecar::builder(&redis.url())
        .server_id("a")
        .listen(addr)
        .start()
        .await;
    assert!(
        cache.client().wait_trusted(WAIT).await,
        "no recovery: {:?}",
        cache.client().stats()
    );
    assert_eq!(read().await, 2);
    let hits = cache.stats().hits;
    let recovered = eventually(WAIT, || async {
        read().await == 2 && cache.stats().hits > hits
    })
    .await;
    assert!(
        recovered,
        "the cache serves hits again after the restart: {:?}",
        cache.stats()
    );
    assert!(cache.client().stats().reconnects >= 1);
    a.shutdown().await;
    b.shutdown().await;
}

/// The loader shape apps reach for first: a `move` closure around an `async move` block that
/// owns what it needs, including things that cannot be cloned. It must compile (the loader is
/// `FnOnce`) and run once per call that loads.
#[tokio::test]
async fn the_natural_move_closure_loader_compiles_and_runs_once_per_load() {
    struct Db {
        loads: AtomicUsize,
    }
    impl Db {
        async fn row(&self, id: u32) -> Result<String, std::io::Error> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            Ok(format!("row {id}"))
        }
    }
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let cache: CoherentCache<u32, String> = CoherentCache::new(mirrored(&a).await, item_key);
    let db = Arc::new(Db {
        loads: AtomicUsize::new(0),
    });
    for _ in 0..3 {
        let id = 4;
        let db = Arc::clone(&db);
        // Owned and not Clone: only an FnOnce loader can move it into its future.
        let (done, _receiver) = tokio::sync::oneshot::channel::<()>();
        let row = cache
            .get_or_load(id, move || async move {
                let row = db.row(id).await;
                drop(done);
                row
            })
            .await;
        assert_eq!(row.unwrap(), "row 4");
    }
    assert_eq!(db.loads.load(Ordering::SeqCst), 1, "{:?}", cache.stats());
    assert_eq!(cache.stats().hits, 2);

    // The loader's own error comes back as Arc<E> and `?`s into the app's error type.
    async fn app_read(
        cache: &CoherentCache<u32, String>,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        Ok(cache
            .get_or_load(5, || async { Err(std::io::Error::other("db down")) })
            .await?)
    }
    let err = app_read(&cache).await.unwrap_err();
    assert_eq!(err.to_string(), "db down");
    a.shutdown().await;
}

#[tokio::test]
async fn stats_tell_superseded_entries_from_ones_nobody_could_vouch_for() {
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let b = TestSidecar::start_named(&redis, "b").await;
    let client = mirrored_with_timeout(&a, Duration::from_millis(300)).await;
    let cache: CoherentCache<u32, u64> = CoherentCache::new(client, item_key);
    for id in [1, 2] {
        let loaded = cache
            .get_or_load(id, || async {
                Ok::<_, std::convert::Infallible>(u64::from(id))
            })
            .await;
        assert_eq!(loaded.unwrap(), u64::from(id));
    }

    // A write elsewhere supersedes item 1: stale.
    Client::connect(b.grpc_url())
        .await
        .unwrap()
        .bump(&["item:1"])
        .await
        .unwrap();
    assert!(eventually(WAIT, || async { cache.get(&1).await.is_none() }).await);
    assert_eq!(cache.stats().stale, 1, "{:?}", cache.stats());
    assert_eq!(cache.stats().unverifiable, 0, "{:?}", cache.stats());

    // The sidecar goes away: item 2 may well be current, but nobody can vouch for it.
    a.shutdown().await;
    assert!(eventually(WAIT, || async { !cache.client().is_trusted() }).await);
    assert_eq!(cache.get(&2).await, None, "served without a voucher");
    assert_eq!(cache.stats().unverifiable, 1, "{:?}", cache.stats());
    assert_eq!(cache.stats().stale, 1, "{:?}", cache.stats());
    b.shutdown().await;
}
