//! Shared set-up for the client's integration tests: in-process sidecars on a test Redis.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use coherence_sidecar::process::config::Config;
use coherence_sidecar::Sidecar;

/// Starts a sidecar on `listen` (port 0 for any) against `redis_url` and waits until ready.
pub async fn start_sidecar_on(redis_url: &str, server_id: &str, listen: SocketAddr) -> Sidecar {
    let mut settings = Config::defaults();
    settings.redis_url = redis_url.to_string();
    settings.server_id = server_id.to_string();
    settings.listen = listen.into();
    settings.admin_listen = "127.0.0.1:0".parse().unwrap();
    let sidecar = Sidecar::start(Config::validate(settings).unwrap())
        .await
        .unwrap();
    assert!(
        sidecar.wait_ready(Duration::from_secs(20)).await,
        "sidecar {server_id} did not become ready"
    );
    sidecar
}

/// Starts a sidecar on a free port.
pub async fn start_sidecar(redis_url: &str, server_id: &str) -> Sidecar {
    start_sidecar_on(redis_url, server_id, "127.0.0.1:0".parse().unwrap()).await
}

/// `http://<addr>` for a client.
pub fn url(sidecar: &Sidecar) -> String {
    format!("http://{}", sidecar.grpc_addr)
}
