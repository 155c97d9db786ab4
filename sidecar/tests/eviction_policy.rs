//! Eviction safety: a Redis whose `maxmemory-policy` can evict keys without a time to live
//! (`allkeys-*`) could evict a shard's epoch or sequence (a fleet-wide resync each time) or a
//! job's per-period run record (a second run in one period); evicted version keys alone would
//! be safe (docs/design.md). The sidecar refuses to start on such a Redis (clear message, exit code 64) unless explicitly allowed,
//! and refuses to use it — failing closed — if the policy becomes evicting while it runs.
//! The policy is read over RESP3, where CONFIG GET answers a map.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coherence_sidecar::metrics::Metrics;
use coherence_sidecar::process::config::Config;
use coherence_sidecar::redis::link::RedisLink;
use coherence_sidecar::redis::link::VerifyError;
use coherence_sidecar::versions::CheckSource;
use coherence_testkit::{eventually, Await, RedisServer, TestSidecar, TestSidecarBuilder};

/// A Redis link as a sidecar configured with `allow_evicting_policy` builds it.
fn link(redis: &RedisServer, allow_evicting_policy: bool) -> RedisLink {
    let mut settings = Config::defaults();
    settings.redis_url = redis.url();
    settings.allow_evicting_policy = allow_evicting_policy;
    RedisLink::new(&Config::validate(settings).unwrap().redis, Metrics::new())
}

#[tokio::test]
async fn an_evicting_policy_is_refused_unless_allowed() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    match link(&redis, false).connect_and_verify().await {
        Err(VerifyError::EvictingPolicy(policy)) => assert_eq!(policy, "allkeys-lru"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a Redis that can evict version keys was accepted"),
    }
    assert!(link(&redis, true).connect_and_verify().await.is_ok());
}

#[tokio::test]
async fn noeviction_is_accepted() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    assert!(link(&redis, false).connect_and_verify().await.is_ok());
}

fn sidecar(redis: &RedisServer) -> TestSidecarBuilder {
    TestSidecar::builder(&redis.url())
        .namespace("eviction")
        .wait(Await::Started)
}

#[tokio::test]
async fn start_refuses_an_evicting_policy_and_says_why() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let err = match sidecar(&redis).try_start().await {
        Ok(_) => panic!("started on an allkeys-lru redis"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("maxmemory-policy is allkeys-lru"), "{err}");
    assert!(
        err.contains("allow-evicting-policy"),
        "the message names the way out: {err}"
    );
}

#[test]
fn the_binary_exits_with_code_64_on_an_evicting_policy() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-random"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_coherence-sidecar"))
        .args(["--redis-url", &redis.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run coherence-sidecar");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("coherence-sidecar kept running on an allkeys-random redis");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("maxmemory-policy is allkeys-random"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_explicitly_allowed_evicting_policy_starts_and_serves() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let sidecar = sidecar(&redis)
        .settings(|s| s.allow_evicting_policy = true)
        .start()
        .await;
    assert!(sidecar.wait_ready(Duration::from_secs(20)).await);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_policy_turned_evicting_while_running_fails_closed_until_fixed() {
    let redis = RedisServer::start();
    let sidecar = sidecar(&redis).start().await;
    assert!(sidecar.wait_ready(Duration::from_secs(20)).await);
    let keys = vec!["content".to_string()];
    let version = sidecar.versions.bump(&keys).await.unwrap()[0].to_string();

    let _: () = redis
        .cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"])
        .unwrap();
    // A new connection must be verified again, and verification now refuses this Redis.
    let _: i64 = redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            !sidecar.state.link.is_connected()
        })
        .await,
        "the sidecar kept a connection to a Redis that may evict version keys"
    );
    assert!(
        !eventually(Duration::from_secs(1), || async {
            sidecar.state.link.is_connected()
        })
        .await,
        "the sidecar reconnected to a Redis that may evict version keys"
    );
    assert!(!sidecar.is_ready());
    let entries = vec![("content".to_string(), version.clone())];
    let outcome = sidecar.versions.check(&entries, true).await;
    assert_eq!(
        (outcome[0].current, outcome[0].source),
        (false, CheckSource::FailClosed)
    );

    let _: () = redis
        .cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .unwrap();
    assert!(
        sidecar.wait_ready(Duration::from_secs(20)).await,
        "recovers once fixed"
    );
    let outcome = sidecar.versions.check(&entries, true).await;
    assert!(outcome[0].current, "{outcome:?}");
    sidecar.shutdown().await;
}
