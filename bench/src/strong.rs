//! Section 5, strong checks: concurrent `CONSISTENCY_STRONG` checks share Redis reads (the
//! sidecar's coalescing reader), against one Redis `GET` per check (section 1's (c)).
//!
//! The sidecar's own metrics count its Redis reads, so the report can say how many checks one
//! read served.

use std::sync::Arc;

use coherence_client::{Consistency, Version};
use coherence_sidecar::versions::Versions;

use crate::checks::{measure, Targets};
use crate::driver::closed_loop;
use crate::plan::Plan;
use crate::report::{Report, Row};

pub async fn run(plan: &Plan, t: &Targets, report: &mut Report) {
    for &c in plan.levels() {
        let op = {
            let client = t.sidecar.clone();
            let keys = Arc::clone(&t.keys);
            let tokens = Arc::clone(&t.tokens);
            move |_, i: u64| {
                let client = client.clone();
                let keys = Arc::clone(&keys);
                let tokens: Arc<Vec<Version>> = Arc::clone(&tokens);
                async move {
                    let j = i as usize % keys.len();
                    let r = client
                        .check(&[(keys[j].as_str(), &tokens[j])], Consistency::Strong)
                        .await?;
                    anyhow::ensure!(r[0].current, "strong check not current");
                    Ok(1)
                }
            }
        };
        closed_loop(c, plan.warmup_budget(), op.clone()).await;
        let reads_before = redis_reads(&t.versions);
        let s = closed_loop(c, plan.budget(), op).await;
        let reads = redis_reads(&t.versions)
            .zip(reads_before)
            .map(|(a, b)| a.saturating_sub(b));
        let note = match reads {
            Some(r) if r > 0 => format!(
                "{:.2} checks per shard-script read (reads include the periodic reconcile)",
                s.ops as f64 / r as f64
            ),
            _ => String::new(),
        };
        report.push(
            Row::from_samples(
                "5 strong",
                "strong_grpc",
                "sidecar gRPC Check STRONG, 1 key",
                c,
                &s,
            )
            .note(note),
        );

        let op = {
            let versions = Arc::clone(&t.versions);
            let entries = t.single_entries();
            move |_, i: u64| {
                let versions = Arc::clone(&versions);
                let entries = Arc::clone(&entries);
                async move {
                    let r = versions
                        .check(&entries[i as usize % entries.len()], true)
                        .await;
                    anyhow::ensure!(r[0].current, "strong check not current");
                    Ok(1)
                }
            }
        };
        let s = measure(plan, c, op).await;
        report.push(Row::from_samples(
            "5 strong",
            "strong_inproc",
            "sidecar Versions::check STRONG in process",
            c,
            &s,
        ));
    }
    for &c in plan.levels() {
        for (id, what) in [("strong_grpc", "gRPC"), ("strong_inproc", "in process")] {
            let pair = report
                .find(id, c)
                .cloned()
                .zip(report.find("c_redis_get", c).cloned());
            if let Some((strong, get)) = pair {
                report.info(
                    format!("strong checks ({what}) / one Redis GET per check, throughput, c={c}"),
                    Some(strong.ops_per_sec / get.ops_per_sec),
                );
            }
        }
    }
}

/// Redis reads the sidecar has made (its `read` operation count), from its metrics text.
fn redis_reads(versions: &Versions) -> Option<u64> {
    let text = versions.state().metrics.encode();
    text.lines()
        .find(|l| {
            l.starts_with("coherence_redis_command_duration_seconds_count")
                && l.contains("op=\"read\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}
