//! What the read-lease tests share: in-process sidecars on free ports in namespace `kit`, their
//! metrics, and the sidecar binary as a process a test can SIGSTOP and SIGKILL.

use std::time::Duration;

use coherence_sidecar::process::config::{Config, Settings};
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
    // No canary bumps: they would wait for lease holders too, and these tests count the bumps
    // that did.
    s.canary_interval_ms = 0;
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

/// The sum of a metric's samples on an in-process sidecar (`name` without labels; 0 when
/// absent).
pub fn metric(sidecar: &Sidecar, name: &str) -> f64 {
    coherence_testkit::metric_sum(&sidecar.state.metrics.encode(), name)
}

/// A `coherence-sidecar` process, so a test can SIGKILL it for real. Killed on drop.
pub struct SidecarProcess {
    pub server_id: String,
    pub grpc_url: String,
    child: Option<std::process::Child>,
}

impl SidecarProcess {
    /// Starts the binary against `redis` with `extra` flags, on free ports.
    pub fn spawn(redis: &RedisServer, server_id: &str, extra: &[&str]) -> SidecarProcess {
        let port = coherence_testkit::free_port();
        let admin = coherence_testkit::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_coherence-sidecar"))
            .args(["--redis-url", &redis.url()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--server-id", server_id, "--namespace", "kit"])
            .args(["--canary-interval-ms", "0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn coherence-sidecar");
        SidecarProcess {
            server_id: server_id.to_string(),
            grpc_url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        }
    }

    /// A channel to its API, once it accepts connections (bounded wait).
    pub async fn channel(&self) -> Channel {
        let endpoint = Endpoint::from_shared(self.grpc_url.clone())
            .unwrap()
            .timeout(Duration::from_secs(5));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match endpoint.connect().await {
                Ok(channel) => return channel,
                Err(err) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} never accepted connections: {err}",
                    self.server_id
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGSTOP: the process stays, its connections stay open, it does nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`SidecarProcess::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = std::process::Command::new("kill")
                .arg(sig)
                .arg(child.id().to_string())
                .status();
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}
