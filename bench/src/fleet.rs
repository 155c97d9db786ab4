//! The parts under test, started by the benchmark itself: in-process sidecars on free loopback
//! ports, run on the benchmark's *server* runtime so that their worker threads are separate
//! from the load generators' (and can be sized apart with `--server-workers`).

use std::time::Duration;

use anyhow::Context;
use coherence_sidecar::process::config::Settings;
use coherence_testkit::TestSidecar;
use tokio::runtime::Handle;

/// Sidecars of one namespace, all against one Redis.
pub struct Fleet {
    server: Handle,
    pub sidecars: Vec<TestSidecar>,
    redis_url: String,
    namespace: String,
}

impl Fleet {
    pub fn new(server: Handle, redis_url: &str, namespace: &str) -> Fleet {
        Fleet {
            server,
            sidecars: Vec::new(),
            redis_url: redis_url.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// Grows the fleet to `n` sidecars, each ready (subscribed and fenced) before this returns.
    pub async fn grow_to(&mut self, n: usize) -> anyhow::Result<()> {
        self.grow_to_with(n, |_, _| {}).await
    }

    /// [`Fleet::grow_to`], each new sidecar's settings adjusted by `tune` (its Redis URL may
    /// be changed, to go through a proxy).
    pub async fn grow_with(
        &mut self,
        n: usize,
        tune: impl Fn(&mut Settings),
    ) -> anyhow::Result<()> {
        self.grow_to_with(n, |_, s| tune(s)).await
    }

    /// [`Fleet::grow_to`], with the settings of sidecar `i` adjusted by `tune(i, settings)`.
    pub async fn grow_to_with(
        &mut self,
        n: usize,
        tune: impl Fn(usize, &mut Settings),
    ) -> anyhow::Result<()> {
        while self.sidecars.len() < n {
            // Started (and awaited ready) on the server runtime: the sidecar's tasks live there.
            let index = self.sidecars.len();
            let start = TestSidecar::builder(&self.redis_url)
                .namespace(&self.namespace)
                .server_id(&format!("{}-{}", self.namespace, self.sidecars.len()))
                .settings(|s| tune(index, s))
                .try_start();
            let sidecar = self.server.spawn(start).await?.context("start a sidecar")?;
            self.sidecars.push(sidecar);
        }
        Ok(())
    }

    /// `http://` address of sidecar `i`.
    pub fn url(&self, i: usize) -> String {
        self.sidecars[i].grpc_url()
    }

    /// Shuts every sidecar down (on the server runtime), bounded.
    pub async fn shutdown(self) {
        for sidecar in self.sidecars {
            let stopping = self.server.spawn(sidecar.shutdown());
            let _ = tokio::time::timeout(Duration::from_secs(5), stopping).await;
        }
    }
}

/// Resident set size of this process, in bytes, from `/proc/self/statm`.
pub fn own_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// Resident set size of process `pid`, in bytes, from `/proc/<pid>/statm`.
pub fn rss_bytes_of(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("PAGESIZE")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096)
    })
}
