//! The `/metrics` endpoint of a live sidecar, checked by the tools operators use: `promtool
//! check metrics` lints the scrape, and every metric the shipped Grafana dashboard and alert
//! rules query must exist in it.

mod ops;

use std::io::Write;
use std::process::{Command, Stdio};

use coherence_testkit::exposition::sample;
use coherence_testkit::{http_get, Await, RedisServer, TestSidecar};
use ops::{exported_names, sidecars_after_traffic};

/// `promtool`, or a failure that says how to get it (never a silent skip).
fn promtool() -> Command {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "promtool is not installed: `apt-get install prometheus` (bash .ci/run installs it)"
    );
    Command::new("promtool")
}

fn promtool_check_metrics(exposition: &str) -> (bool, String) {
    let mut child = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_a_live_scrape_with_red_metrics_for_every_call() {
    let redis = RedisServer::start();
    let (a, b) = sidecars_after_traffic(&redis.url()).await;
    let text = a.scrape().await;

    let (ok, lint) = promtool_check_metrics(&text);
    assert!(
        ok,
        "promtool check metrics failed:\n{lint}\n--- scrape ---\n{text}"
    );
    // promtool prints lint findings even when it exits 0 for some versions; there must be none.
    assert!(
        lint.trim().is_empty(),
        "promtool lint findings:\n{lint}\n--- scrape ---\n{text}"
    );

    let svc = "coherence.v1.CacheVersions";
    for (method, code) in [("Get", "OK"), ("Check", "OK"), ("Get", "INVALID_ARGUMENT")] {
        let series = format!(
            "coherence_grpc_requests_total{{service=\"{svc}\",method=\"{method}\",code=\"{code}\"}}"
        );
        assert!(
            sample(&text, &series).is_some_and(|v| v >= 1.0),
            "{series} missing:\n{text}"
        );
    }
    // The abandoned Watch stream is counted when it ends; health checks are counted too.
    let watch = format!(
        "coherence_grpc_requests_total{{service=\"{svc}\",method=\"Watch\",code=\"CANCELLED\"}}"
    );
    let ok = coherence_testkit::eventually(std::time::Duration::from_secs(5), || async {
        sample(&a.scrape().await, &watch).is_some()
    })
    .await;
    assert!(ok, "{watch} missing:\n{}", a.scrape().await);
    let health = "coherence_grpc_requests_total{service=\"grpc.health.v1.Health\",method=\"Check\",code=\"OK\"}";
    assert!(sample(&text, health).is_some(), "{health} missing:\n{text}");
    // Unary calls are timed, streams are not.
    assert!(text.contains(&format!(
        "coherence_grpc_request_duration_seconds_count{{service=\"{svc}\",method=\"Check\"}}"
    )));
    assert!(!text.contains("coherence_grpc_request_duration_seconds_count{service=\"coherence.v1.CacheVersions\",method=\"Watch\"}"));
    // The remaining families of the list.
    for series in [
        "coherence_build_info{version=\"0.1.0\"}",
        "coherence_ready",
        "coherence_mirror_keys",
        "coherence_fence_age_seconds",
        "coherence_invalidations_received_total",
        "coherence_redis_connected{connection=\"command\"}",
        "coherence_redis_connected{connection=\"subscription\"}",
        "coherence_propagation_delay_seconds_count",
    ] {
        assert!(sample(&text, series).is_some(), "{series} missing:\n{text}");
    }
    assert!(
        sample(&text, "coherence_invalidations_received_total").unwrap() >= 1.0,
        "{text}"
    );
    for family in [
        "coherence_checks_total",
        "coherence_redis_command_duration_seconds_bucket",
    ] {
        assert!(
            exported_names(&text).contains(family),
            "{family} missing:\n{text}"
        );
    }

    // Prometheus itself negotiates OpenMetrics.
    let om = http_get(
        a.admin_addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .await
    .expect("the admin listener answers");
    assert!(
        om.headers.contains("application/openmetrics-text"),
        "{}",
        om.headers
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn fence_age_is_finite_while_redis_is_unreachable() {
    // No Redis at all: no shard is ever fenced, yet the gauge must stay a finite, growing
    // number that a `> threshold` alert can fire on (it used to be encoded as `inf`, which the
    // OpenMetrics format Prometheus negotiates does not allow: only `+Inf`).
    let port = coherence_testkit::free_port();
    let sidecar = TestSidecar::builder(&format!("redis://127.0.0.1:{port}"))
        .settings(|s| {
            s.heartbeat_interval_ms = 20;
            s.max_staleness_ms = 100;
        })
        .wait(Await::Started)
        .start()
        .await;
    let ok = coherence_testkit::eventually(std::time::Duration::from_secs(10), || async {
        sample(&sidecar.scrape().await, "coherence_fence_age_seconds")
            .is_some_and(|v| v.is_finite() && v > 0.05)
    })
    .await;
    let text = sidecar.scrape().await;
    assert!(ok, "fence age did not grow:\n{text}");
    let (lint_ok, lint) = promtool_check_metrics(&text);
    assert!(lint_ok && lint.trim().is_empty(), "{lint}\n{text}");
    sidecar.shutdown().await;
}
