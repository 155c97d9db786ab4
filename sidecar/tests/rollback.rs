//! Guarantee 1 against a Redis that goes back in time: a version superseded by a completed bump
//! is never current again after Redis restarts from an older snapshot — not on a sidecar that
//! saw the bump, and not on one started afterwards that never did.

use std::time::Duration;

use coherence_testkit::{RedisServer, TestSidecar};

async fn sidecar(redis: &RedisServer, id: &str) -> TestSidecar {
    TestSidecar::start_named(redis, id).await
}

#[tokio::test]
async fn superseded_version_stays_stale_after_restore_from_older_snapshot() {
    let mut redis = RedisServer::start();
    let a = sidecar(&redis, "a").await;
    let key = vec!["content".to_string()];
    let old = a.versions.get(&key, true).await.unwrap()[0].to_string();
    redis.snapshot("before-bump");
    let new = a.versions.bump(&key).await.unwrap()[0].to_string();
    assert_ne!(old, new);

    redis.restore_snapshot("before-bump");
    let stored: String = redis
        .cmd(&[
            "GET",
            &a.state
                .keyspace
                .version_key(a.state.keyspace.shard_of("content"), "content"),
        ])
        .unwrap();
    assert_eq!(
        stored, old,
        "the snapshot really holds the superseded version"
    );
    assert!(a.wait_ready(Duration::from_secs(10)).await, "a recovers");

    let late = sidecar(&redis, "late").await;
    let entries = vec![("content".to_string(), old.clone())];
    for (who, s) in [("a", &a), ("late", &late)] {
        for strong in [true, false] {
            let outcome = &s.versions.check(&entries, strong).await[0];
            assert!(
                !outcome.current,
                "{who} (strong={strong}) said the superseded version is current: {outcome:?}"
            );
        }
    }
    a.shutdown().await;
    late.shutdown().await;
}
