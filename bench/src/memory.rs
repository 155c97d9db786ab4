//! Section 4, scale and memory: what the mirror costs per key at 100k and 1M keys, the sidecar
//! process's resident memory idle and under load, and check latency while 10k bumps/s flow.
//!
//! Mirror memory is the growth of this process's resident set while a sidecar `Mirror` (the
//! same type a sidecar runs) is filled with realistic keys and version tokens, so it includes
//! the allocator's overhead (glibc malloc here) but nothing else. The sidecar's RSS is that of
//! a real `coherence-sidecar` process started from the release build next to this binary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use coherence_client::{Client, Consistency, Version};
use coherence_sidecar::redis::keyspace::Keyspace;
use coherence_sidecar::versions::mirror::Mirror;
use coherence_testkit::SidecarProcess;

use crate::driver::{closed_loop, paced};
use crate::fleet::{own_rss_bytes, rss_bytes_of};
use crate::plan::Plan;
use crate::report::{Report, Row};

const SHARDS: u32 = 16;

pub async fn run(
    plan: &Plan,
    fleet_url: &str,
    redis_url: &str,
    keys: &Arc<Vec<String>>,
    report: &mut Report,
) {
    if let Err(err) = sidecar_process(plan, fleet_url, redis_url, keys, report).await {
        report.fact(format!(
            "sidecar process RSS and check-under-load skipped: {err:#}"
        ));
    }
}

/// Fills a fresh mirror with 100k keys, then another with 1M, measuring the growth of the heap
/// in use (glibc `mallinfo2`) and of the RSS for each (the first stays alive so the second
/// cannot reuse its memory). Run first, before the benchmark has allocated and freed anything.
pub fn mirror_per_key(report: &mut Report) {
    let keyspace = Keyspace::new("bench", SHARDS);
    let epoch = format!("{:016x}", 0x5eed_u64.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut alive = Vec::new();
    for n in [100_000usize, 1_000_000] {
        let before = own_rss_bytes();
        let heap_before = heap_in_use();
        let mirror = Mirror::new(SHARDS, Duration::from_millis(500));
        for shard in 0..SHARDS {
            mirror.reset(shard, &epoch, 0);
        }
        let mut payload = 0usize;
        for i in 0..n {
            let key = format!("app:entity:{i:08}");
            let version = format!(
                "{epoch}.{}.{:016x}",
                i + 1,
                (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)
            );
            payload += key.len() + version.len();
            mirror.learn(
                keyspace.shard_of(&key),
                &epoch,
                i as u64 + 1,
                &key,
                &version,
            );
        }
        let heap = heap_in_use().saturating_sub(heap_before) as f64 / n as f64;
        let rss = own_rss_bytes()
            .zip(before)
            .map(|(after, before)| after.saturating_sub(before) as f64 / n as f64);
        report.fact(format!(
            "sidecar mirror at {n} keys: {heap:.0} bytes/key of heap in use (malloc), {} bytes/key RSS growth; key + version text is {:.0} bytes/key of it",
            rss.map_or("n/a".into(), |r| format!("{r:.0}")),
            payload as f64 / n as f64
        ));
        if n == 1_000_000 {
            report.ratio(
                "sidecar mirror heap bytes per key at 1M keys",
                Some(heap),
                150.0,
                false,
                " B",
            );
        }
        alive.push(mirror);
    }
}

/// A real sidecar process: RSS idle, then under 10k bumps/s (made through the in-process fleet,
/// arriving as invalidations) while checks run against it.
async fn sidecar_process(
    plan: &Plan,
    fleet_url: &str,
    redis_url: &str,
    keys: &Arc<Vec<String>>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let binary = std::env::current_exe()?
        .parent()
        .context("no directory")?
        .join("coherence-sidecar");
    anyhow::ensure!(
        binary.exists(),
        "{} not built (cargo build --release -p coherence-sidecar)",
        binary.display()
    );
    // Its log lines are kept in this process (bounded); warnings only, as a deployment runs.
    let mut sidecar = SidecarProcess::builder(&binary, redis_url)
        .args(&["--namespace", "bench", "--server-id", "rss"])
        .env("RUST_LOG", "warn")
        .spawn();
    let pid = sidecar.pid();
    let client = Client::connect_lazy(sidecar.grpc_addr().to_string())?;
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let tokens: Vec<Version> = loop {
        match client.get(&refs).await {
            Ok(tokens) => break tokens,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => return Err(err).context("sidecar process did not answer"),
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_bytes_of(pid).context("read the sidecar's RSS")?;
    report.fact(format!(
        "coherence-sidecar process RSS idle: {:.1} MiB ({} keys mirrored)",
        idle as f64 / 1048576.0,
        keys.len()
    ));

    let bumper = Client::connect(fleet_url).await?;
    let mut peak = idle;
    for c in [1usize, 16] {
        let checks = {
            let client = client.clone();
            let keys = Arc::clone(keys);
            let tokens = Arc::new(tokens.clone());
            closed_loop(c, plan.budget(), move |_, i| {
                let client = client.clone();
                let keys = Arc::clone(&keys);
                let tokens = Arc::clone(&tokens);
                async move {
                    let j = i as usize % keys.len();
                    client
                        .check(&[(keys[j].as_str(), &tokens[j])], Consistency::Bounded)
                        .await?;
                    Ok(1)
                }
            })
        };
        let bumps = {
            let bumper = bumper.clone();
            let budget = crate::driver::Budget {
                duration: plan.run,
                max_ops: (plan.run.as_secs_f64() * 10_000.0) as u64 + 1,
            };
            paced(10_000, 512, budget, move |i| {
                let bumper = bumper.clone();
                async move {
                    bumper
                        .bump(&[format!("load:{}", i % 16_384).as_str()])
                        .await?;
                    Ok(1)
                }
            })
        };
        let sampler = async {
            let mut peak = 0;
            let until = Instant::now() + plan.run;
            while Instant::now() < until {
                peak = peak.max(rss_bytes_of(pid).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        };
        let (checks, bumps, sampled) = tokio::join!(checks, bumps, sampler);
        peak = peak.max(sampled);
        report.push(
            Row::from_samples(
                "4 scale",
                "check_under_bumps",
                "sidecar process Check, 1 key, while bumps flow",
                c,
                &checks,
            )
            .note(format!(
                "bumps achieved {:.0}/s (paced at 10k/s)",
                bumps.ops_per_sec()
            )),
        );
    }
    report.fact(format!(
        "coherence-sidecar process RSS under load (checks + 10k bumps/s): peak {:.1} MiB",
        peak as f64 / 1048576.0
    ));
    sidecar.kill();
    Ok(())
}

/// Bytes of heap in use (small-block arena plus mmapped blocks), from glibc's `mallinfo2`.
fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 has no preconditions; it only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks + info.hblkhd
}
