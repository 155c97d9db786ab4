//! What the sidecar leaves in Redis: a `Check` writes nothing at all, and version keys leave
//! Redis `version_ttl` after their last `Get` or `Bump` — safely: a key that comes back gets a
//! version never issued before, and no mirror calls the retired one current again.

use std::time::{Duration, Instant};

use coherence_client::{Client, Consistency, MirrorOptions, Version, WatchEvent};
use coherence_sidecar::process::config::Settings;
use coherence_testkit::{eventually, RedisServer, TestSidecar, WAIT};
use futures::StreamExt;

/// No background script calls or registry writes while a test counts writes.
fn quiet(s: &mut Settings) {
    // The observer's canary bumps and audit reads are Redis calls of their own too.
    s.canary_interval_ms = 0;
    s.audit_sample_rate = 0.0;
    s.heartbeat_interval_ms = 600_000;
    s.max_staleness_ms = 1_200_000;
    s.reconcile_interval_ms = 600_000;
    s.server_refresh_ms = 600_000;
    s.lease_ms = 1_800_000;
    s.server_ttl_ms = 1_800_000;
}

/// Writes Redis has applied since start (`rdb_changes_since_last_save`, counted with or
/// without persistence).
fn writes(redis: &RedisServer) -> u64 {
    info_field(redis, "persistence", "rdb_changes_since_last_save")
}

fn info_field(redis: &RedisServer, section: &str, field: &str) -> u64 {
    let info: String = redis.cmd(&["INFO", section]).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
}

fn dbsize(redis: &RedisServer) -> u64 {
    redis.cmd(&["DBSIZE"]).expect("DBSIZE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_checks_of_unknown_keys_write_nothing_to_redis() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("a")
        .settings(quiet)
        .start()
        .await;
    let client = Client::connect(sidecar.grpc_url())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(30));
    let mut watch = client.watch(&[]).await.unwrap();
    let known = client.get_one("known").await.unwrap();

    let (writes_before, keys_before) = (writes(&redis), dbsize(&redis));
    let keys: Vec<String> = (0..10_000).map(|i| format!("random:{i}")).collect();
    let stale = Version::from_token("0123456789abcdef.1.0000000000000001");
    for (consistency, chunk) in [Consistency::Bounded, Consistency::Strong]
        .into_iter()
        .cycle()
        .zip(keys.chunks(1_000))
    {
        let entries: Vec<(&str, &Version)> = chunk.iter().map(|k| (k.as_str(), &stale)).collect();
        for result in client.check(&entries, consistency).await.unwrap() {
            assert!(!result.current, "{result:?}");
            assert!(
                result.no_version,
                "a key without a version says so: {result:?}"
            );
        }
    }
    let known_check = client
        .check(&[("known", &known)], Consistency::Strong)
        .await
        .unwrap();
    assert!(known_check[0].current && !known_check[0].no_version);

    assert_eq!(
        writes(&redis),
        writes_before,
        "10,000 checks changed Redis's data"
    );
    assert_eq!(dbsize(&redis), keys_before, "checks created keys");
    // Nothing was published either: the watcher hears no invalidation (a heartbeat or a quiet
    // stream is all there may be).
    let heard = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(Ok(event)) = watch.next().await {
            if let WatchEvent::Invalidated { key, .. } = event {
                if key != "known" {
                    return Some(key);
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    assert_eq!(heard, None, "a check published an invalidation");
    sidecar.shutdown().await;
}

/// Polls until `key`'s version key is gone from Redis (expired), within `limit`.
async fn expired(redis: &RedisServer, sidecar: &TestSidecar, key: &str) -> bool {
    let keyspace = &sidecar.state.keyspace;
    let version_key = keyspace.version_key(keyspace.shard_of(key), key);
    eventually(WAIT, || async {
        redis.cmd::<u64>(&["EXISTS", &version_key]).expect("EXISTS") == 0
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_comes_back_with_a_version_never_issued_and_the_retired_one_is_never_current(
) {
    let redis = RedisServer::start();
    let ttl = |s: &mut Settings| s.version_ttl_ms = 1_000;
    let a = TestSidecar::builder(&redis.url())
        .server_id("a")
        .settings(ttl)
        .start()
        .await;
    let b = TestSidecar::builder(&redis.url())
        .server_id("b")
        .settings(ttl)
        .start()
        .await;
    let via_a = Client::connect(a.grpc_url()).await.unwrap();
    let via_b = Client::connect(b.grpc_url()).await.unwrap();
    let mirrored = via_a.clone().with_mirror(MirrorOptions::default());
    assert!(mirrored.wait_trusted(WAIT).await);

    let retired = mirrored.get_one("member:1").await.unwrap();
    assert_eq!(mirrored.is_current_local("member:1", &retired), Some(true));
    assert!(
        expired(&redis, &a, "member:1").await,
        "the version never expired"
    );
    let strong = via_a
        .check(&[("member:1", &retired)], Consistency::Strong)
        .await
        .unwrap();
    assert!(
        !strong[0].current && strong[0].no_version,
        "an expired key has no current version: {strong:?}"
    );

    // The key comes back through another server: a new version, announced like a bump.
    let back = via_b
        .get_with(&["member:1"], Consistency::Strong)
        .await
        .unwrap()
        .remove(0);
    assert_ne!(back, retired, "a version was issued twice");
    let turned = eventually(WAIT, || async {
        mirrored.is_current_local("member:1", &retired) == Some(false)
    })
    .await;
    assert!(turned, "the client mirror never learnt the key came back");
    for client in [&via_a, &via_b] {
        for consistency in [Consistency::Bounded, Consistency::Strong] {
            let results = client
                .check(&[("member:1", &retired), ("member:1", &back)], consistency)
                .await
                .unwrap();
            assert!(
                !results[0].current && results[1].current,
                "{consistency:?}: {results:?}"
            );
        }
    }
    assert!(!mirrored.is_current("member:1", &retired).await);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_that_reach_redis_keep_a_version_alive() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("a")
        .settings(|s| s.version_ttl_ms = 1_500)
        .start()
        .await;
    let client = Client::connect(sidecar.grpc_url()).await.unwrap();
    let first = client.get_one("page:1").await.unwrap();
    // Strong gets read Redis each time and refresh the key's time to live: three TTLs later
    // the version is the same.
    let until = Instant::now() + Duration::from_millis(4_500);
    while Instant::now() < until {
        let again = client
            .get_with(&["page:1"], Consistency::Strong)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(again, first, "a key kept alive by Gets changed version");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A bump refreshes it too, and a Check does not.
    let bumped = client.bump(&["page:1"]).await.unwrap().remove(0);
    assert!(expired(&redis, &sidecar, "page:1").await);
    let after = client
        .check(&[("page:1", &bumped)], Consistency::Strong)
        .await
        .unwrap();
    assert!(after[0].no_version, "{after:?}");
    sidecar.shutdown().await;
}

/// Issue 11's done-when: a workload reading 1,000,000 distinct keys once each (short
/// `version_ttl`) leaves Redis's key count and memory back near where they started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_distinct_keys_read_once_leave_redis_as_it_was() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("a")
        .settings(|s| {
            s.version_ttl_ms = 2_000;
            s.replay_log_len = 100;
            s.mirror_max_keys = 10_000;
            // 10,000 new keys per script call on a busy box: not a latency test.
            s.request_timeout_ms = 10_000;
        })
        .start()
        .await;
    let (keys_before, memory_before) =
        (dbsize(&redis), info_field(&redis, "memory", "used_memory"));
    let started = Instant::now();
    let (mut keys_peak, mut memory_peak) = (0, 0);
    for chunk in 0..100 {
        let keys: Vec<String> = (0..10_000)
            .map(|i| format!("entity:{}", chunk * 10_000 + i))
            .collect();
        let versions = sidecar.versions.get(&keys, false).await.expect("Get");
        assert_eq!(versions.len(), keys.len());
        keys_peak = keys_peak.max(dbsize(&redis));
        memory_peak = memory_peak.max(info_field(&redis, "memory", "used_memory"));
    }
    let read_in = started.elapsed();
    // (Keys read early may expire before the last are read: the peak is what lived at once.)
    assert!(keys_peak >= 10_000, "the reads created {keys_peak} keys");
    let drained = eventually(Duration::from_secs(120), || async {
        dbsize(&redis) <= keys_before + 100
    })
    .await;
    let keys_after = dbsize(&redis);
    // Redis shrinks its key table in its periodic cron; give it that chance.
    let memory_limit = memory_before + 16 * 1024 * 1024;
    let shrunk = eventually(Duration::from_secs(30), || async {
        info_field(&redis, "memory", "used_memory") <= memory_limit
    })
    .await;
    let memory_after = info_field(&redis, "memory", "used_memory");
    println!(
        "REDIS FOOTPRINT: 1,000,000 keys read in {read_in:?}; keys {keys_before} -> {keys_peak} -> {keys_after}; used_memory {} -> {} -> {} MiB",
        memory_before >> 20,
        memory_peak >> 20,
        memory_after >> 20
    );
    assert!(drained, "{keys_after} keys left, {keys_before} before");
    assert!(
        shrunk,
        "used_memory {memory_after} stayed above {memory_limit} (before: {memory_before})"
    );
    sidecar.shutdown().await;
}
