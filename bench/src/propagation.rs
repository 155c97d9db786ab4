//! Section 3, propagation latency: a bump on sidecar A until the invalidation arrives on a
//! Watch stream of every other sidecar, with 3 and with 20 sidecars, at paced bump rates.
//!
//! Each bump moves key `prop:<slot>` and first records, in that slot, when the call started;
//! a watcher receiving `prop:<slot>` takes the difference on the same monotonic clock. So the
//! figure includes the Bump call itself (gRPC, Lua script, publish), the pub/sub fan-out, the
//! receiving sidecar's apply and its Watch stream — what an app's client mirror sees, less the
//! nanoseconds the mirror takes to apply the event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coherence_client::{Client, WatchEvent};
use futures::StreamExt;
use tokio::sync::watch;

use crate::driver::paced;
use crate::fleet::Fleet;
use crate::plan::Plan;
use crate::report::{Report, Row};
use crate::stats::Samples;

/// Keys the bumps cycle through; a slot is reused only after SLOTS bumps (1.6 s at 10k/s).
const SLOTS: u64 = 16_384;

pub async fn run(
    plan: &Plan,
    server: tokio::runtime::Handle,
    redis_url: &str,
    report: &mut Report,
) {
    let mut fleet = Fleet::new(server, redis_url, "prop");
    for sidecars in [3usize, 20] {
        if let Err(err) = fleet.grow_to(sidecars).await {
            report.fact(format!(
                "propagation with {sidecars} sidecars skipped: {err:#}"
            ));
            break;
        }
        for rate in [1_000u64, 10_000] {
            match measure(plan, &fleet, sidecars, rate).await {
                Ok(row) => report.push(row),
                Err(err) => report.fact(format!(
                    "propagation {sidecars} sidecars {rate}/s failed: {err:#}"
                )),
            }
        }
    }
    fleet.shutdown().await;
    if let Some(row) = report.find("propagation", 3).cloned() {
        report.ratio(
            "propagation p99 at 1k bumps/s, 3 sidecars (ms)",
            row.p99.map(|d| d.as_secs_f64() * 1e3),
            1.0,
            false,
            " ms",
        );
    }
}

pub(crate) async fn measure(
    plan: &Plan,
    fleet: &Fleet,
    sidecars: usize,
    rate: u64,
) -> anyhow::Result<Row> {
    let epoch = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..SLOTS).map(|_| AtomicU64::new(0)).collect());
    let (stop_tx, stop_rx) = watch::channel(false);
    let received = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::new();
    for i in 1..sidecars {
        let client = Client::connect(fleet.url(i)).await?;
        let mut events = client.watch(&["prop:"]).await?;
        let sent = Arc::clone(&sent);
        let received = Arc::clone(&received);
        let mut stop = stop_rx.clone();
        watchers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let event = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    event = events.next() => event,
                };
                let Some(Ok(WatchEvent::Invalidated { key, .. })) = event else {
                    if event.is_none() {
                        break;
                    }
                    continue;
                };
                let now = epoch.elapsed().as_nanos() as u64;
                let Some(slot) = key
                    .strip_prefix("prop:")
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                let started = sent[(slot % SLOTS) as usize].load(Ordering::Relaxed);
                if started > 0 && latencies.len() < 2_000_000 {
                    latencies.push(now.saturating_sub(started));
                }
                received.fetch_add(1, Ordering::Relaxed);
            }
            latencies
        }));
    }
    let bumper = Client::connect(fleet.url(0)).await?;
    let bumps = {
        let sent = Arc::clone(&sent);
        paced(rate, 512, plan.paced_budget(rate), move |i| {
            let bumper = bumper.clone();
            let sent = Arc::clone(&sent);
            async move {
                let slot = i % SLOTS;
                let key = format!("prop:{slot}");
                sent[slot as usize].store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                bumper.bump(&[key.as_str()]).await?;
                Ok(1)
            }
        })
        .await
    };
    // Let the last invalidations arrive (bounded).
    let expected = bumps.ops * (sidecars as u64 - 1);
    let deadline = Instant::now() + Duration::from_secs(2);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let mut parts = Vec::new();
    for w in watchers {
        if let Ok(latencies_ns) = w.await {
            parts.push(Samples {
                ops: latencies_ns.len() as u64,
                units: latencies_ns.len() as u64,
                latencies_ns,
                ..Samples::default()
            });
        }
    }
    let events = Samples::merge(parts, bumps.elapsed);
    let mut row = Row::from_samples(
        "3 propagation",
        "propagation",
        &format!("bump on A -> Watch event on the others, {sidecars} sidecars, {rate}/s paced"),
        sidecars,
        &events,
    );
    row.ops_per_sec = bumps.ops_per_sec();
    row.errors = bumps.errors;
    Ok(row.note(format!(
        "calls/s = bumps achieved; {} of {expected} events received; bump call p50 {}, p99 {}",
        received.load(Ordering::Relaxed),
        crate::report::fmt_dur(bumps.quantile(0.5)),
        crate::report::fmt_dur(bumps.quantile(0.99))
    )))
}
