//! Shared set-up for the end-to-end tests: in-process sidecars on port 0 against a test Redis,
//! a bare HTTP GET for the admin listener, and running the real `coherencectl` binary.
#![allow(dead_code)]

pub mod topology;

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use coherence_sidecar::process::config::{Config, Settings};
use coherence_sidecar::Sidecar;
use coherence_testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Generous bound for anything the tests await: the box is small and shared.
pub const WAIT: Duration = Duration::from_secs(20);

/// Starts a sidecar on free ports against `redis_url` and waits until it is ready.
pub async fn start_sidecar(redis_url: &str, server_id: &str) -> Sidecar {
    start_sidecar_with(redis_url, server_id, |_| {}).await
}

/// [`start_sidecar`] with settings adjusted by `adjust` (limits, timeouts …).
pub async fn start_sidecar_with(
    redis_url: &str,
    server_id: &str,
    adjust: impl FnOnce(&mut Settings),
) -> Sidecar {
    let sidecar = start_unready(redis_url, server_id, adjust).await;
    assert!(
        sidecar.wait_ready(WAIT).await,
        "sidecar {server_id} did not become ready"
    );
    sidecar
}

/// Starts a sidecar without waiting for it to be ready (e.g. while Redis is down).
pub async fn start_unready(
    redis_url: &str,
    server_id: &str,
    adjust: impl FnOnce(&mut Settings),
) -> Sidecar {
    let mut settings = Config::defaults();
    settings.redis_url = redis_url.to_string();
    settings.server_id = server_id.to_string();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.admin_listen = "127.0.0.1:0".parse().unwrap();
    adjust(&mut settings);
    Sidecar::start(Config::validate(settings).expect("valid test settings"))
        .await
        .expect("sidecar starts")
}

/// A Redis user that may do everything the sidecar needs except subscribe: a sidecar started
/// with it answers `Get` and serves `Watch` but cannot subscribe (the watch contract's "not yet
/// subscribed"), until [`allow_subscribe`].
pub fn user_without_subscribe(redis: &RedisServer) -> String {
    let _: String = redis
        .cmd(&[
            "ACL",
            "SETUSER",
            "early",
            "on",
            ">early-password",
            "~*",
            "&*",
            "+@all",
            "-subscribe",
            "-ssubscribe",
            "-psubscribe",
        ])
        .expect("ACL SETUSER");
    format!("redis://early:early-password@127.0.0.1:{}", redis.port())
}

pub fn allow_subscribe(redis: &RedisServer) {
    let _: String = redis
        .cmd(&["ACL", "SETUSER", "early", "+subscribe", "+ssubscribe"])
        .expect("ACL SETUSER +subscribe");
}

/// `http://<grpc address>` of a sidecar, for clients.
pub fn grpc_url(sidecar: &Sidecar) -> String {
    format!("http://{}", sidecar.grpc_addr)
}

/// `GET path` on an HTTP/1.1 listener; the status code and body, or `None` when nothing
/// answered (connection refused, closed, or no answer within 5 s).
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split(' ').nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Runs the real `coherencectl` binary against `addr` with `args`, within [`WAIT`].
pub async fn coherencectl(addr: &str, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_coherencectl"))
        .arg("--addr")
        .arg(addr)
        .args(args)
        .env_remove("COHERENCE_ADDR")
        .env_remove("COHERENCE_AUTH_TOKEN_FILE")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("coherencectl finished in time")
        .expect("coherencectl runs")
}

/// Standard output of a finished command, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error of a finished command, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
