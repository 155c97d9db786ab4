//! Section 2, bump throughput: `Bump` through the sidecar (concurrent bumps share one Lua
//! script call per shard, with sequences, replay-log entries and publishes), next to the floor's in-memory `Bump` and to
//! `redis-benchmark -t incr` at the same client count — what Redis alone does with the
//! simplest write.

use std::process::Stdio;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use coherence_client::Client;
use coherence_sidecar::versions::Versions;

use crate::checks::{measure, OpFuture};
use crate::plan::Plan;
use crate::report::{Report, Row};

/// Distinct keys the bump runs spread over.
const BUMP_KEYS: u64 = 1000;

/// `sidecar` is watched (a client mirror) and has a peer sidecar, so each bump also costs its
/// fan-out on these shared cores; `lone` is a sidecar of a namespace of its own, with no peer
/// and no watcher, which shows what the bump itself costs.
pub async fn run(
    plan: &Plan,
    sidecar: &Client,
    lone: &Client,
    lone_versions: &Arc<Versions>,
    floor: &Client,
    redis_port: u16,
    report: &mut Report,
) {
    for &c in plan.levels() {
        let s = measure(plan, c, bump_op(sidecar.clone())).await;
        let sidecar_rate = s.ops_per_sec();
        report.push(Row::from_samples(
            "2 bump",
            "bump_sidecar",
            "sidecar gRPC Bump, 1 key",
            c,
            &s,
        ));
        let s = measure(plan, c, bump_op(lone.clone())).await;
        report.push(Row::from_samples(
            "2 bump",
            "bump_sidecar_lone",
            "sidecar gRPC Bump, 1 key, no peer and no watcher",
            c,
            &s,
        ));
        let s = measure(plan, c, bump_in_process(Arc::clone(lone_versions))).await;
        report.push(Row::from_samples(
            "2 bump",
            "bump_lone_inproc",
            "sidecar Versions::bump in process, no peer and no watcher",
            c,
            &s,
        ));
        let s = measure(plan, c, bump_op(floor.clone())).await;
        report.push(Row::from_samples(
            "2 bump",
            "bump_floor",
            "floor: bare tonic Bump, 1 key",
            c,
            &s,
        ));
        // Size redis-benchmark's run like ours: as many requests as Redis answers in the window
        // at a generous guess, bounded.
        let requests = ((plan.run.as_secs_f64() * 40_000.0) as u64).clamp(10_000, 2_000_000);
        match redis_benchmark_incr(redis_port, c, requests).await {
            Ok(row) => {
                let ratio = sidecar_rate / row.ops_per_sec;
                report.push(row.note(format!(
                    "{requests} requests; sidecar Bump = {ratio:.2}× of it"
                )));
            }
            Err(err) => report.fact(format!("redis-benchmark at c={c} skipped: {err:#}")),
        }
    }
    match script_cost(redis_port).await {
        Ok(fact) => report.fact(fact),
        Err(err) => report.fact(format!("Redis command stats unavailable: {err:#}")),
    }
    for &c in plan.levels() {
        let pair = report
            .find("bump_sidecar", c)
            .cloned()
            .zip(report.find("bump_floor", c).cloned());
        if let Some((sidecar, floor)) = pair {
            report.ratio(
                format!("Bump throughput / floor Bump, c={c}"),
                Some(sidecar.ops_per_sec / floor.ops_per_sec),
                0.8,
                true,
                "×",
            );
        }
        let pair = report
            .find("bump_sidecar_lone", c)
            .cloned()
            .zip(report.find("bump_floor", c).cloned());
        if let Some((lone, floor)) = pair {
            report.info(
                format!(
                    "Bump throughput without fan-out (no peer, no watcher) / floor Bump, c={c}"
                ),
                Some(lone.ops_per_sec / floor.ops_per_sec),
            );
        }
        let pair = report
            .find("bump_sidecar", c)
            .cloned()
            .zip(report.find("redis_benchmark_incr", c).cloned());
        if let Some((sidecar, incr)) = pair {
            report.info(
                format!("Bump throughput / redis-benchmark INCR, c={c}"),
                Some(sidecar.ops_per_sec / incr.ops_per_sec),
            );
        }
    }
}

/// Where a bump's time goes inside Redis: the server-side cost of one script call (every
/// sidecar operation on Redis is one) against one INCR, from `INFO commandstats`.
async fn script_cost(port: u16) -> anyhow::Result<String> {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    let usec = |command: &str| -> Option<(u64, f64)> {
        let line = info
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{command}:")))?;
        let field = |name: &str| {
            line.split([':', ','])
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse::<f64>().ok())
        };
        Some((field("calls")? as u64, field("usec_per_call")?))
    };
    let show = |command: &str| {
        usec(command).map_or(format!("{command}: none"), |(calls, us)| {
            format!("{command} {us:.1} µs/call ({calls} calls)")
        })
    };
    Ok(format!(
        "Redis server time per command over the whole run (INFO commandstats): {}, {}, {}",
        show("evalsha"),
        show("incr"),
        show("get")
    ))
}

pub(crate) fn bump_op(
    client: Client,
) -> impl Fn(usize, u64) -> OpFuture + Send + Sync + Clone + 'static {
    move |_, i| {
        let client = client.clone();
        Box::pin(async move {
            let key = format!("bump:{}", i % BUMP_KEYS);
            client.bump(&[key.as_str()]).await?;
            Ok(1)
        })
    }
}

/// Runs `redis-benchmark -t incr -c <clients> -n <requests> --csv` against the benchmark's
/// Redis and reads its throughput and latency percentiles.
async fn redis_benchmark_incr(port: u16, clients: usize, requests: u64) -> anyhow::Result<Row> {
    let run = tokio::process::Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "incr",
            "--csv",
        ])
        .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .context("redis-benchmark took over 120 s")?
        .context("run redis-benchmark (is it installed?)")?;
    anyhow::ensure!(
        output.status.success(),
        "redis-benchmark failed: {}",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed = parse_csv(&stdout).context("unexpected redis-benchmark output")?;
    Ok(Row {
        section: "2 bump",
        id: "redis_benchmark_incr".into(),
        label: "redis-benchmark -t incr (Redis alone)".into(),
        concurrency: clients,
        ops_per_sec: parsed.rps,
        units_per_sec: parsed.rps,
        p50: Some(parsed.p50),
        p99: Some(parsed.p99),
        p999: None,
        ops: requests,
        errors: 0,
        note: String::new(),
    })
}

#[derive(Debug, PartialEq)]
struct BenchmarkLine {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// Reads redis-benchmark's `--csv` output (a header line naming the columns, then one line per
/// test; values quoted, latencies in milliseconds).
fn parse_csv(text: &str) -> Option<BenchmarkLine> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines.next()?.split(',').map(unquote).collect();
    let values: Vec<String> = lines.next()?.split(',').map(unquote).collect();
    let field = |name: &str| -> Option<f64> {
        let i = header.iter().position(|h| h == name)?;
        values.get(i)?.parse().ok()
    };
    let ms = |v: f64| Duration::from_secs_f64(v / 1000.0);
    Some(BenchmarkLine {
        rps: field("rps")?,
        p50: ms(field("p50_latency_ms")?),
        p99: ms(field("p99_latency_ms")?),
    })
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').to_string()
}

/// A bump through `Versions` directly: the sidecar's own work without gRPC.
fn bump_in_process(
    versions: Arc<Versions>,
) -> impl Fn(usize, u64) -> OpFuture + Send + Sync + Clone + 'static {
    move |_, i| {
        let versions = Arc::clone(&versions);
        Box::pin(async move {
            versions.bump(&[format!("bump:{}", i % BUMP_KEYS)]).await?;
            Ok(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_redis_benchmark_csv() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"INCR\",\"98039.22\",\"0.287\",\"0.080\",\"0.279\",\"0.415\",\"0.535\",\"1.055\"\n";
        let line = parse_csv(text).unwrap();
        assert_eq!(line.rps, 98039.22);
        assert_eq!(line.p50, Duration::from_micros(279));
        assert_eq!(line.p99, Duration::from_micros(535));
        assert_eq!(parse_csv("garbage"), None);
    }
}
