//! Test support: real `redis-server` processes on free ports, and sidecars started against
//! them.
//!
//! Tests must talk to a real Redis, and fault tests must kill, pause, restart and roll back
//! that Redis for real. [`RedisServer`] starts one in its own temporary directory on a free
//! loopback port (never 6379), waits until it answers, and stops it on drop. Nothing here
//! touches a Redis the test did not start. [`RedisProxy`] sits between one client and such a
//! Redis to delay, stall or drop what that client receives; [`FreezingProxy`] sits in front of
//! any server (a sidecar's gRPC port) to make open connections go silent without closing.
//!
//! [`TestSidecar`] is the one way tests and benchmarks run a sidecar in process (and
//! [`SidecarProcess`] the one way they run the `coherence-sidecar` binary as a server):
//!
//! ```no_run
//! # async fn example() {
//! use coherence_testkit::{RedisServer, TestSidecar};
//!
//! let redis = RedisServer::start();
//! // Ready (subscribed, fenced), on free ports, server id `test`:
//! let a = TestSidecar::start(&redis).await;
//! // Or with settings of its own:
//! let b = TestSidecar::builder(&redis.url())
//!     .server_id("b")
//!     .settings(|s| s.max_staleness_ms = 500)
//!     .start()
//!     .await;
//! let client = a.client().await; // coherence_client::Client
//! let ready = b.admin_get("/readyz").await.map(|r| r.status); // Some(200)
//! a.shutdown().await;
//! b.shutdown().await;
//! # }
//! ```
//!
//! # Which tests live where
//!
//! A test lives in the crate whose public surface it exercises, so that a failing test names
//! the part to look at:
//!
//! - `sidecar/tests/`: one sidecar's own behaviour seen from outside it — its binary (flags,
//!   exit codes, logs), configuration, the admin listener and metrics, its Redis deployments
//!   (ACL, TLS, eviction policy, rollback), the load-balancing services (roles, jobs,
//!   notifications). Unit tests of one module stay in that module (`#[cfg(test)]`).
//! - `client/tests/`: the Rust client library's API (`Client`, `MirroredClient`, the cache,
//!   errors), against a real sidecar.
//! - `tests/` (the workspace root, crate `coherence`): end-to-end behaviour of the system —
//!   several sidecars and clients together, the guarantees of docs/design.md (watch contract,
//!   conformance, faults, Redis Cluster and Sentinel, lifecycle, readiness), `coherencectl`,
//!   and the other clients' conformance.
//! - `testkit/tests/`: the harness itself (proxies, topologies).
//!
//! Every one of them starts its Redis with [`RedisServer`] (or a cluster/sentinel topology)
//! and its sidecars with [`TestSidecar`]; a support module next to the tests holds only what
//! those tests share and nobody else needs.

pub mod cluster;
pub mod exposition;
pub mod fault_history;
pub mod freeze;
pub mod fuzz;
pub mod http;
pub mod process;
pub mod proxy;
pub mod resp;
pub mod sentinel;
pub mod sidecar;
pub mod tls;

pub use cluster::RedisCluster;
pub use exposition::metric_sum;
pub use freeze::{FreezeStats, FreezingProxy};
pub use http::{http_get, HttpResponse};
pub use process::{SidecarProcess, SidecarProcessBuilder};
pub use proxy::{Flow, Link, ProxyStats, RedisProxy};
pub use sentinel::RedisSentinels;
pub use sidecar::{Await, TestSidecar, TestSidecarBuilder, TestSidecarError, WAIT};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process owned by a test.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

/// Ports [`free_port`] hands out: below the kernel's ephemeral range (32768 and up on Linux),
/// which outgoing connections take their local ports from — a port the OS picked with bind(0)
/// and released could be taken by any test's next outgoing connection before the process it was
/// meant for binds it. The range above it, up to 29999, is left for cluster bus ports (port +
/// 10000).
const PORTS: std::ops::Range<u32> = 10_000..20_000;

/// A free loopback TCP port for a server a test is about to start. Each process walks the
/// range from its own starting point (so concurrently running test binaries rarely try the same
/// ports), and a port is returned only if it could be bound just now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let span = PORTS.end - PORTS.start;
    // Fixed per process, so that one process never hands out the same port twice in a row.
    let start = *START.get_or_init(|| {
        std::process::id().wrapping_mul(7_919)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
    });
    for _ in 0..span {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = (PORTS.start + offset) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}");
}

impl RedisServer {
    /// Starts a Redis with persistence off (snapshots only when a test asks for one).
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a Redis with extra `redis-server` arguments (e.g. `["--maxmemory-policy", "allkeys-lru"]`).
    pub fn start_with(args: &[&str]) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("coherence-redis-")
            .tempdir()
            .expect("create a temporary directory");
        let mut server = RedisServer {
            port: 0,
            dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        for _ in 0..10 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start; is it installed and on PATH?");
    }

    fn spawn(&mut self) -> bool {
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--dbfilename", "dump.rdb"])
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        self.child = Some(child);
        if self.wait_until_answering(Duration::from_secs(10)) {
            true
        } else {
            self.kill();
            false
        }
    }

    /// Waits until *our* process answers on the port. A free port is only free until someone
    /// takes it: another test may start its Redis on the port we picked (or on ours while we
    /// restart). Answering PING is not enough — the server must report our child's pid, or the
    /// test would silently share another test's Redis.
    fn wait_until_answering(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let Some(pid) = self.pid() else {
            return false;
        };
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
                {
                    let info: redis::RedisResult<String> =
                        redis::cmd("INFO").arg("server").query(&mut conn);
                    if let Ok(info) = info {
                        let answering = info
                            .lines()
                            .find_map(|l| l.strip_prefix("process_id:"))
                            .and_then(|p| p.trim().parse::<u32>().ok());
                        if answering == Some(pid) {
                            return true;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A synchronous connection for test set-up and inspection.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("connect to the test redis")
    }

    /// Runs one command and returns its reply.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.connection())
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (loading `dump.rdb` if any).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// SIGKILL, then start again with no data at all.
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.rdb_path());
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    fn rdb_path(&self) -> PathBuf {
        self.dir.path().join("dump.rdb")
    }

    /// Takes an RDB snapshot now (SAVE) and keeps a copy under `name`.
    pub fn snapshot(&self, name: &str) {
        let _: String = self.cmd(&["SAVE"]).expect("SAVE");
        std::fs::copy(self.rdb_path(), self.dir.path().join(format!("{name}.rdb")))
            .expect("copy the snapshot");
    }

    /// SIGKILL, then start again from the snapshot `name`: the data goes back in time.
    pub fn restore_snapshot(&mut self, name: &str) {
        self.kill();
        std::fs::copy(self.dir.path().join(format!("{name}.rdb")), self.rdb_path())
            .expect("restore the snapshot");
        assert!(
            self.spawn(),
            "redis-server did not restart from snapshot {name}"
        );
    }

    /// SIGSTOP: the process stays, connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
            if sig == "-STOP" {
                wait_stopped(pid);
            }
        }
    }
}

/// Waits (at most 10 s) until every thread of process `pid` is stopped after a SIGSTOP.
///
/// kill(1) returns once the signal is queued; a thread of a busy process may go on running for
/// a few milliseconds on a loaded machine (seen: a stopped sidecar still acknowledging a bump
/// 7 ms after `kill -STOP` returned). A test that means "from now on it is frozen" awaits this.
pub fn wait_stopped(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if all_threads_stopped(pid) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Whether every thread of `pid` is in state `T` (stopped) or gone; false when unknown.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // `pid (comm) S ...`: the state follows the last ')' (comm may hold spaces).
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "T" || state == "t" || state == "Z" || state == "X")
        })
    })
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
