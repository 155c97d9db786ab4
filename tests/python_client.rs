//! The Python client (`clients/python`) passes its pytest suite against real sidecars on real
//! Redis processes, so that `cargo test --workspace` covers it like the Rust client.
//!
//! This test starts two Redis servers on free ports, two sidecars of one namespace on the
//! first and a third sidecar on the second (which the suite pauses with SIGSTOP to see the
//! client fail closed), two more on the first Redis in a namespace of their own holding read
//! leases (for the mirror's strong checks under leases, docs/client-protocol.md rules 16–19),
//! then runs `python3 -m pytest clients/python` with their addresses in
//! `COHERENCE_TEST_*` variables (clients/python/tests/conftest.py reads them).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use coherence_testkit::{RedisServer, TestSidecar};

/// The read-lease period of the leased sidecars, in ms.
const LEASE_MS: u64 = 1_000;

/// The whole suite, under load from other test binaries: generous, but bounded.
const SUITE_LIMIT: Duration = Duration::from_secs(600);

/// The interpreter (`PYTHON` overrides `python3`).
fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Fails with what to install when Python or the suite's packages are missing.
fn require_python_packages(python: &str) {
    let probe = std::process::Command::new(python)
        .args(["-c", "import grpc, grpc_tools, google.protobuf, pytest"])
        .stdin(Stdio::null())
        .output();
    let install = "python3 -m pip install -r clients/python/requirements-dev.txt";
    match probe {
        Err(err) => panic!(
            "the Python client's tests need {python} (Python 3.10 or newer): {err}; \
             install it, then `{install}`"
        ),
        Ok(out) if !out.status.success() => panic!(
            "the Python client's tests need grpcio, grpcio-tools, protobuf and pytest: `{install}`\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_passes_its_suite_against_real_sidecars() {
    let python = python();
    require_python_packages(&python);
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "py-a").await;
    let b = TestSidecar::start_named(&redis, "py-b").await;
    let fault_redis = RedisServer::start();
    let fault = TestSidecar::start_named(&fault_redis, "py-fault").await;
    let fault_pid = fault_redis.pid().expect("the fault Redis runs");
    let leased = leased_sidecar(&redis, "py-leased").await;
    let leased_other = leased_sidecar(&redis, "py-leased-other").await;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = tokio::process::Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "clients/python",
        ])
        .current_dir(root)
        .env("COHERENCE_TEST_SIDECAR_A", a.grpc_url())
        .env("COHERENCE_TEST_SIDECAR_B", b.grpc_url())
        .env("COHERENCE_TEST_FAULT_SIDECAR", fault.grpc_url())
        .env("COHERENCE_TEST_FAULT_REDIS_PID", fault_pid.to_string())
        .env("COHERENCE_TEST_LEASED_SIDECAR", leased.grpc_url())
        .env("COHERENCE_TEST_LEASED_OTHER", leased_other.grpc_url())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SUITE_LIMIT, suite)
        .await
        .expect("the Python suite finished within its limit")
        .expect("pytest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "the Python client's suite failed:\n{stdout}\n{stderr}"
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" passed") && !summary.contains("failed"),
        "no tests ran? {summary}"
    );

    a.shutdown().await;
    b.shutdown().await;
    fault.shutdown().await;
    leased.shutdown().await;
    leased_other.shutdown().await;
}

/// A sidecar named `id` of the namespace `py-leases` holding read leases; no canary bumps (they
/// would wait for lease holders too). A namespace of its own keeps the other tests' bumps from
/// waiting for its mirrors.
async fn leased_sidecar(redis: &RedisServer, id: &str) -> TestSidecar {
    TestSidecar::builder(&redis.url())
        .server_id(id)
        .namespace("py-leases")
        .settings(|s| {
            s.read_lease_ms = LEASE_MS;
            s.canary_interval_ms = 0;
        })
        .start()
        .await
}
