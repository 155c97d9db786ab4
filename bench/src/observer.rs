//! Section "observer": what the consistency auditor costs a check. Three sidecars of the same
//! namespace, alike but for `audit_sample_rate` (0, the default 0.01, and 1 — every current
//! answer), and three client mirrors (audit off, the default 0.001, and 0.01), each asked the same key set in the
//! same run, interleaved round by round so that drift of the shared machine hits all alike.
//! Reported: throughput of in-process mirror hits and of one-key gRPC Checks, and the overhead
//! of each rate against audit off.

use std::sync::Arc;

use coherence_client::{Client, MirrorOptions};
use coherence_sidecar::versions::CheckSource as SidecarSource;
use futures::FutureExt;
use tokio::runtime::Handle;

use crate::checks::{grpc_check, measure, Targets};
use crate::driver::in_process_loop;
use crate::fleet::Fleet;
use crate::plan::Plan;
use crate::report::{Report, Row};

const RATES: [(f64, &str); 3] = [(0.0, "off"), (0.01, "0.01"), (1.0, "1")];
/// Client mirrors: off, the default 0.001, and 0.01.
const CLIENT_RATES: [(f64, &str); 3] = [(0.0, "off"), (0.001, "0.001"), (0.01, "0.01")];
/// Rounds of (off, 0.01, 1) measurements. Each rate's throughput is the median of its rounds,
/// and its overhead the median of its per-round ratios to audit off (measured moments apart):
/// on a shared machine, round-to-round drift dwarfs a 1 % effect.
const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Per-round throughputs of each variant; variant 0 is audit off.
struct Rounds(Vec<Vec<f64>>);

impl Rounds {
    fn new(variants: usize) -> Rounds {
        Rounds(vec![Vec::new(); variants])
    }
    fn ops(&self, i: usize) -> f64 {
        median(self.0[i].clone())
    }
    /// Median over rounds of `1 − variant / off`, in percent.
    fn overhead(&self, i: usize) -> f64 {
        median(
            self.0[i]
                .iter()
                .zip(&self.0[0])
                .map(|(on, off)| 100.0 * (1.0 - on / off))
                .collect(),
        )
    }
}

pub async fn run(plan: &Plan, server: Handle, redis_url: &str, t: &Targets, report: &mut Report) {
    if let Err(err) = measure_all(plan, server, redis_url, t, report).await {
        report.fact(format!("observer section failed: {err:#}"));
    }
}

async fn measure_all(
    plan: &Plan,
    server: Handle,
    redis_url: &str,
    t: &Targets,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Same namespace as the key set, so the tokens in `t` are current on these sidecars too.
    let mut fleet = Fleet::new(server, redis_url, "bench");
    fleet
        .grow_to_with(RATES.len(), |i, s| {
            s.server_id = format!("bench-audit-{}", RATES[i].1);
            s.audit_sample_rate = RATES[i].0;
        })
        .await?;
    let mut clients = Vec::new();
    for (i, sidecar) in fleet.sidecars.iter().enumerate() {
        // Fill each sidecar's mirror with the key set.
        for chunk in t.keys.chunks(1000) {
            sidecar.versions.get(chunk, false).await?;
        }
        clients.push(Client::connect(fleet.url(i)).await?);
    }
    let mirrors = CLIENT_RATES.map(|(rate, _)| {
        clients[0]
            .clone()
            .with_mirror(MirrorOptions::default().audit_sample_rate(rate))
    });
    for mirror in &mirrors {
        anyhow::ensure!(
            mirror
                .wait_trusted(std::time::Duration::from_secs(20))
                .await,
            "a client mirror did not become trusted"
        );
        for chunk in t.keys.chunks(1000) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            mirror
                .get_with(&refs, coherence_client::Consistency::Bounded)
                .await?;
        }
    }
    let entries = t.single_entries();
    let c = plan.levels().iter().copied().max().unwrap_or(1);
    let mut sidecar_ops = Rounds::new(3);
    let mut grpc_ops = Rounds::new(3);
    let mut client_ops = Rounds::new(CLIENT_RATES.len());
    for _ in 0..ROUNDS {
        for (i, sidecar) in fleet.sidecars.iter().enumerate() {
            let versions = Arc::clone(&sidecar.versions);
            let entries = Arc::clone(&entries);
            let hit = Arc::new(move |n: u64| {
                let entry = &entries[n as usize % entries.len()];
                versions
                    .check(entry, false)
                    .now_or_never()
                    .is_some_and(|r| r[0].current && r[0].source == SidecarSource::Mirror)
            });
            let s = in_process_loop(c, plan.budget(), false, hit).await;
            sidecar_ops.0[i].push(s.ops_per_sec());
            let s = measure(plan, c, grpc_check(clients[i].clone(), t, 1)).await;
            grpc_ops.0[i].push(s.ops_per_sec());
        }
        for (i, mirror) in mirrors.iter().enumerate() {
            let mirror = mirror.clone();
            let (keys, tokens) = (Arc::clone(&t.keys), Arc::clone(&t.tokens));
            let hit = Arc::new(move |n: u64| {
                let j = n as usize % keys.len();
                mirror.is_current_local(&keys[j], &tokens[j]) == Some(true)
            });
            let s = in_process_loop(c, plan.budget(), false, hit).await;
            client_ops.0[i].push(s.ops_per_sec());
        }
    }
    let mut row = |id: String, label: String, rounds: &Rounds, i: usize| {
        let (ops, overhead) = (rounds.ops(i), rounds.overhead(i));
        report.push(Row {
            section: "observer",
            id,
            label,
            concurrency: c,
            ops_per_sec: ops,
            units_per_sec: ops,
            p50: None,
            p99: None,
            p999: None,
            ops: 0,
            errors: 0,
            note: format!(
                "overhead vs audit off: {overhead:+.1} % (medians of {ROUNDS} interleaved rounds)"
            ),
        });
    };
    for (i, (_, name)) in RATES.iter().enumerate() {
        row(
            format!("obs_sidecar_mirror_{name}"),
            format!("sidecar mirror Versions::check, audit_sample_rate {name}"),
            &sidecar_ops,
            i,
        );
        row(
            format!("obs_grpc_check_{name}"),
            format!("sidecar gRPC Check 1 key, audit_sample_rate {name}"),
            &grpc_ops,
            i,
        );
    }
    for (i, (_, name)) in CLIENT_RATES.iter().enumerate() {
        row(
            format!("obs_client_mirror_{name}"),
            format!("client mirror is_current hit, audit_sample_rate {name}"),
            &client_ops,
            i,
        );
    }
    // Every answer sampled at rate 1: the difference in time per call is what one sampled
    // answer costs the answering path (random draw, two string copies, queue push).
    let per_call_ns = |ops: f64| 1e9 / ops.max(1.0);
    report.fact(format!(
        "observer: one sampled answer costs the sidecar's answering path ~{:.0} ns (in-process mirror check {:.0} ns audited every time vs {:.0} ns unaudited, medians, {c} tasks); a gRPC Check at rate 0.01 costs {:+.1} % throughput",
        per_call_ns(sidecar_ops.ops(2)) - per_call_ns(sidecar_ops.ops(0)),
        per_call_ns(sidecar_ops.ops(2)),
        per_call_ns(sidecar_ops.ops(0)),
        grpc_ops.overhead(1),
    ));
    // (The audit-off sidecar judges answers too: the client mirrors on it submit theirs.)
    for sidecar in &fleet.sidecars {
        let audit = &sidecar.state.metrics.audit;
        let totals = audit.totals();
        report.fact(format!(
            "observer: {} judged {} answers (correct {}, stale within bound {}, violations {}, undecided {}), dropped {} samples",
            sidecar.state.settings.server_id,
            totals.correct + totals.stale_within_bound + totals.violations + totals.undecided,
            totals.correct,
            totals.stale_within_bound,
            totals.violations,
            totals.undecided,
            audit.dropped.get()
        ));
    }
    drop(mirrors);
    fleet.shutdown().await;
    Ok(())
}
