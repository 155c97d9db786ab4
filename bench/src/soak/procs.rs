//! The soak's processes: release `coherence-sidecar` binaries started as children (so that
//! each one's RSS is its own, read from `/proc/<pid>/statm`), and the samples of their memory
//! and of Redis's taken while the load runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use coherence_client::Client;
use coherence_testkit::free_port;
use tokio::process::{Child, Command};

use crate::fleet::rss_bytes_of;

/// One `coherence-sidecar` child process.
pub struct SidecarProcess {
    child: Child,
    pub pid: u32,
    pub url: String,
}

impl SidecarProcess {
    /// Starts the binary beside this one (`target/release/coherence-sidecar` when the bench is
    /// the release build) and waits until it answers a Get, for at most 30 s.
    pub async fn start(
        redis_url: &str,
        namespace: &str,
        index: usize,
        log_dir: &Path,
    ) -> anyhow::Result<SidecarProcess> {
        let binary = sidecar_binary()?;
        let port = free_port();
        let log = std::fs::File::create(log_dir.join(format!("soak-sidecar-{index}.log")))?;
        let child = Command::new(&binary)
            .args(["--redis-url", redis_url, "--namespace", namespace])
            .args(["--server-id", &format!("{namespace}-{index}")])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id().context("the sidecar exited at once")?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(client) = Client::connect(&url).await {
                if client.get(&["soak:ready"]).await.is_ok() {
                    break;
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "sidecar {index} not answering within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(SidecarProcess { child, pid, url })
    }

    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes_of(self.pid)
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub async fn stop(mut self) {
        // SAFETY: kill(2) with a pid this process spawned and has not reaped.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn sidecar_binary() -> anyhow::Result<PathBuf> {
    let binary = std::env::current_exe()?.with_file_name("coherence-sidecar");
    anyhow::ensure!(
        binary.exists(),
        "{} not found: build it first (cargo build --release -p coherence-sidecar)",
        binary.display()
    );
    Ok(binary)
}

/// One sample of every process's memory.
#[derive(Debug, Clone)]
pub struct MemorySample {
    pub at: Duration,
    /// RSS of each sidecar, bytes (`None` when it could not be read).
    pub sidecars: Vec<Option<u64>>,
    /// Redis `used_memory` (`None` while Redis does not answer).
    pub redis_used: Option<u64>,
}

/// Redis's `used_memory`, from `INFO memory`, with a 1 s bound (Redis may be paused).
pub async fn redis_used_memory(redis_url: &str) -> Option<u64> {
    let read = async {
        let client = redis::Client::open(redis_url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))?
            .trim()
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(1), read)
        .await
        .ok()
        .flatten()
}

/// Least-squares slope of `(minutes, MiB)` points, MiB per minute; `None` under two points.
pub fn slope_per_minute(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points
        .iter()
        .map(|(x, y)| (x - mean_x) * (y - mean_y))
        .sum();
    let var: f64 = points.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    (var > 0.0).then(|| cov / var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_is_its_gradient() {
        let points: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 0.5 * i as f64)).collect();
        assert!((slope_per_minute(&points).unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(slope_per_minute(&points[..1]), None);
    }
}
