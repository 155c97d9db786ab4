//! Shared set-up of the kit tests: in-process sidecars on port 0 against a test Redis, and gRPC
//! channels to them.
#![allow(dead_code)]

use std::time::Duration;

use coherence_sidecar::config::{Config, Settings};
use coherence_sidecar::Sidecar;
use coherence_testkit::RedisServer;
use tonic::transport::{Channel, Endpoint};

/// Settings for a sidecar named `server_id` against `redis`, on free ports.
pub fn settings(redis: &RedisServer, server_id: &str) -> Settings {
    let mut s = Config::defaults();
    s.redis_url = redis.url();
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.admin_listen = "127.0.0.1:0".parse().unwrap();
    s.server_id = server_id.to_string();
    s.namespace = "kit".to_string();
    s
}

/// Starts a sidecar and waits until its Redis link is verified.
pub async fn start(settings: Settings) -> Sidecar {
    let sidecar = Sidecar::start(Config::validate(settings).unwrap())
        .await
        .unwrap();
    assert!(
        sidecar
            .state
            .link
            .wait_connected(Duration::from_secs(10))
            .await,
        "sidecar did not connect to redis"
    );
    sidecar
}

/// A gRPC channel to a sidecar's API.
pub async fn channel(sidecar: &Sidecar) -> Channel {
    Endpoint::from_shared(format!("http://{}", sidecar.grpc_addr))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap()
}
