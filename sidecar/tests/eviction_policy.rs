//! A Redis whose maxmemory-policy can evict version keys is refused (an evicted version key
//! would make a superseded version look current) unless the operator accepts the risk. The
//! policy is read over RESP3, where CONFIG GET answers a map.

use coherence_sidecar::config::Config;
use coherence_sidecar::metrics::Metrics;
use coherence_sidecar::redis_link::VerifyError;
use coherence_sidecar::state::SidecarState;
use coherence_testkit::RedisServer;

fn state(redis: &RedisServer, allow_evicting_policy: bool) -> std::sync::Arc<SidecarState> {
    let mut settings = Config::defaults();
    settings.redis_url = redis.url();
    settings.allow_evicting_policy = allow_evicting_policy;
    SidecarState::new(Config::validate(settings).unwrap(), Metrics::new()).unwrap()
}

#[tokio::test]
async fn an_evicting_policy_is_refused_unless_allowed() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    match state(&redis, false).link.connect_and_verify().await {
        Err(VerifyError::EvictingPolicy(policy)) => assert_eq!(policy, "allkeys-lru"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a Redis that can evict version keys was accepted"),
    }
    assert!(state(&redis, true).link.connect_and_verify().await.is_ok());
}

#[tokio::test]
async fn noeviction_is_accepted() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    assert!(state(&redis, false).link.connect_and_verify().await.is_ok());
}
