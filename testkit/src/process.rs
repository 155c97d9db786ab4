//! [`SidecarProcess`]: the real `coherence-sidecar` binary on free loopback ports, for tests
//! that must see what only a process shows — exit codes, logs, signals (SIGTERM drains,
//! SIGKILL leaves leases behind) — and for the benchmark's RSS figure. In-process sidecars are
//! [`crate::TestSidecar`]; this is the one place that starts the binary as a server.
//!
//! The binary's path is the caller's: only the sidecar crate's own tests know it
//! (`env!("CARGO_BIN_EXE_coherence-sidecar")`); the benchmark finds it next to itself.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use crate::{free_port, WAIT};

/// Most bytes of output kept (stdout and stderr together); lines past it are counted, not
/// kept, so that a chatty process cannot fill the test's memory.
pub const MAX_OUTPUT_BYTES: usize = 8 << 20;

/// A running `coherence-sidecar` process, SIGKILLed on drop.
pub struct SidecarProcess {
    child: Child,
    grpc: SocketAddr,
    admin: SocketAddr,
    output: Arc<Mutex<String>>,
}

/// How to start a [`SidecarProcess`]: the binary against a Redis URL, on free ports, with no
/// `COHERENCE_*` variable inherited from the test's environment, `NO_COLOR=1` and
/// `RUST_LOG=info` unless changed here.
pub struct SidecarProcessBuilder {
    command: Command,
}

impl SidecarProcess {
    /// Settings for `binary` against the Redis at `redis_url`.
    pub fn builder(binary: impl Into<PathBuf>, redis_url: &str) -> SidecarProcessBuilder {
        let mut command = sidecar_command(binary);
        command
            .env("RUST_LOG", "info")
            .args(["--redis-url", redis_url]);
        SidecarProcessBuilder { command }
    }

    /// The gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// `http://<gRPC address>`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far, stdout and stderr interleaved by line (up to
    /// [`MAX_OUTPUT_BYTES`]).
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// A channel to its gRPC API once it accepts connections; panics after [`WAIT`].
    pub async fn channel(&self) -> Channel {
        let endpoint = Endpoint::from_shared(self.grpc_url())
            .expect("a valid URL")
            .timeout(Duration::from_secs(5));
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match endpoint.connect().await {
                Ok(channel) => return channel,
                Err(err) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "the sidecar never accepted connections: {err}\n{}",
                    self.output()
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (`-TERM`, `-KILL`, `-STOP` …) with kill(1); panics if it cannot. After
    /// `-STOP` it returns only once every thread of the process has stopped ([`crate::wait_stopped`]).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
        if signal == "-STOP" {
            crate::wait_stopped(self.child.id());
        }
    }

    /// Waits up to `limit` for the process to exit; its exit code and how long it took.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<(Option<i32>, Duration)> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status.code(), started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl SidecarProcessBuilder {
    /// More flags (`--server-id`, `--namespace`, `--log-format` …).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.command.args(args);
        self
    }

    /// An environment variable (`RUST_LOG`, a `COHERENCE_*` setting …).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.command.env(name, value);
        self
    }

    /// An environment variable left unset (e.g. `NO_COLOR`).
    pub fn env_remove(mut self, name: &str) -> Self {
        self.command.env_remove(name);
        self
    }

    /// Starts it on two free loopback ports; panics if the binary cannot be run.
    pub fn spawn(mut self) -> SidecarProcess {
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut child = self
            .command
            .args(["--listen", &grpc.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn coherence-sidecar");
        let output = Arc::new(Mutex::new(String::new()));
        if let Some(stdout) = child.stdout.take() {
            collect(stdout, Arc::clone(&output));
        }
        if let Some(stderr) = child.stderr.take() {
            collect(stderr, Arc::clone(&output));
        }
        SidecarProcess {
            child,
            grpc,
            admin,
            output,
        }
    }
}

/// `binary` with no `COHERENCE_*` variable inherited from the test's environment and
/// `NO_COLOR=1`: what [`SidecarProcess::builder`] starts from, and what tests that run the
/// binary to completion (configuration errors, `--print-config`) use.
pub fn sidecar_command(binary: impl Into<PathBuf>) -> Command {
    let mut command = Command::new(binary.into());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COHERENCE_") {
            command.env_remove(name);
        }
    }
    command.env("NO_COLOR", "1");
    command
}

/// Appends every line of `pipe` to `output` (up to [`MAX_OUTPUT_BYTES`]) on a thread of its
/// own, until the process closes it.
fn collect(pipe: impl Read + Send + 'static, output: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let Ok(mut all) = output.lock() else { break };
            if all.len() + line.len() < MAX_OUTPUT_BYTES {
                all.push_str(&line);
                all.push('\n');
            }
        }
    });
}
