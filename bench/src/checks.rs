//! Section 1, check cost: the same key set asked of every alternative at the same concurrency.
//!
//! (a) an in-process mirror hit, (b) the sidecar's gRPC `Check` (one key, and batches of 100),
//! (c) a direct Redis `GET` of the version key, (d) a prepared PostgreSQL primary-key read of a
//! version row, (e) the floor: a bare tonic server answering `Check` from a `HashMap`.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use coherence_client::{CheckSource, Client, Consistency, MirroredClient, Version};
use coherence_sidecar::versions::CheckSource as SidecarSource;
use coherence_sidecar::versions::Versions;
use redis::aio::MultiplexedConnection;

use futures::FutureExt;

use crate::driver::{closed_loop, in_process_loop};
use crate::pg::ScratchDb;
use crate::plan::Plan;
use crate::report::{Report, Row};
use crate::stats::Samples;

/// Keys per batched check.
pub const BATCH: usize = 100;

/// Everything section 1 (and the sections reusing its targets) calls.
#[derive(Clone)]
pub struct Targets {
    /// Sidecar A's operations, in process.
    pub versions: Arc<Versions>,
    pub sidecar: Client,
    /// A client with its in-process mirror, on sidecar A, filled with the key set.
    pub mirrored: MirroredClient,
    pub floor: Client,
    pub redis: MultiplexedConnection,
    pub pg: Option<Arc<ScratchDb>>,
    pub keys: Arc<Vec<String>>,
    /// Current version of each key, as the sidecar issued it.
    pub tokens: Arc<Vec<Version>>,
    /// The Redis key holding each key's version.
    pub version_keys: Arc<Vec<String>>,
}

impl Targets {
    /// Each key with its current token, as one-entry batches for `Versions::check`.
    pub fn single_entries(&self) -> Arc<Vec<[(String, String); 1]>> {
        Arc::new(
            self.keys
                .iter()
                .zip(self.tokens.iter())
                .map(|(k, v)| [(k.clone(), v.token().to_string())])
                .collect(),
        )
    }
}

/// Runs a warm-up and then the measurement.
/// One call of a measured operation, boxed so that operations can be built by functions.
pub(crate) type OpFuture = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<u64>> + Send>>;

pub async fn measure<F, Fut>(plan: &Plan, concurrency: usize, op: F) -> Samples
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    closed_loop(concurrency, plan.warmup_budget(), op.clone()).await;
    closed_loop(concurrency, plan.budget(), op).await
}

pub async fn run(plan: &Plan, t: &Targets, report: &mut Report) {
    report.fact(format!(
        "timer: one Instant::now() pair costs ~{} ns here (included in every per-call latency)",
        timer_cost_ns()
    ));
    for &c in plan.levels() {
        mirror(plan, t, c, report).await;
        let s = measure(plan, c, grpc_check(t.sidecar.clone(), t, 1)).await;
        report.push(Row::from_samples(
            "1 check",
            "b_check1",
            "(b) sidecar gRPC Check, 1 key",
            c,
            &s,
        ));
        let s = measure(plan, c, grpc_check(t.sidecar.clone(), t, BATCH)).await;
        report.push(Row::from_samples(
            "1 check",
            "b_check100",
            "(b) sidecar gRPC Check, batch of 100",
            c,
            &s,
        ));
        let s = measure(plan, c, redis_get(t)).await;
        report.push(Row::from_samples(
            "1 check",
            "c_redis_get",
            "(c) Redis GET (redis-rs, no sidecar)",
            c,
            &s,
        ));
        if let Some(pg) = &t.pg {
            let s = measure(plan, c, pg_select(Arc::clone(pg), Arc::clone(&t.keys))).await;
            report.push(
                Row::from_samples(
                    "1 check",
                    "d_postgres",
                    "(d) PostgreSQL SELECT version (prepared)",
                    c,
                    &s,
                )
                .note(format!("pool of {}", pg.pool_size().min(c))),
            );
        }
        let s = measure(plan, c, grpc_check(t.floor.clone(), t, 1)).await;
        report.push(Row::from_samples(
            "1 check",
            "e_floor1",
            "(e) floor: bare tonic Check, 1 key",
            c,
            &s,
        ));
        let s = measure(plan, c, grpc_check(t.floor.clone(), t, BATCH)).await;
        report.push(Row::from_samples(
            "1 check",
            "e_floor100",
            "(e) floor: bare tonic Check, batch of 100",
            c,
            &s,
        ));
    }
    ratios(plan, report);
}

/// (a): an in-process mirror hit — the client's `MirroredClient::is_current` (answered from its
/// local map), and for comparison the sidecar's own mirror lookup (`Versions::check`) called in
/// process. Each is measured twice: timed per call (the timer's cost is in every sample), and
/// in untimed runs of 1,000 calls (throughput; the latency column is the mean per call).
async fn mirror(plan: &Plan, t: &Targets, c: usize, report: &mut Report) {
    let mirrored = t.mirrored.clone();
    let keys = Arc::clone(&t.keys);
    let tokens = Arc::clone(&t.tokens);
    let client_hit = Arc::new(move |i: u64| {
        let j = i as usize % keys.len();
        mirrored.is_current_local(&keys[j], &tokens[j]) == Some(true)
    });
    in_process_rows(
        plan,
        c,
        report,
        "a_client_mirror",
        "(a) client mirror is_current hit",
        client_hit,
    )
    .await;

    let versions = Arc::clone(&t.versions);
    let entries = t.single_entries();
    let sidecar_hit = Arc::new(move |i: u64| {
        let entry = &entries[i as usize % entries.len()];
        // A mirror hit completes without awaiting anything; anything else is not a hit.
        versions
            .check(entry, false)
            .now_or_never()
            .is_some_and(|r| r[0].current && r[0].source == SidecarSource::Mirror)
    });
    in_process_rows(
        plan,
        c,
        report,
        "a_sidecar_mirror",
        "(a') sidecar mirror Versions::check in process",
        sidecar_hit,
    )
    .await;
}

async fn in_process_rows<C>(
    plan: &Plan,
    c: usize,
    report: &mut Report,
    id: &str,
    label: &str,
    check: Arc<C>,
) where
    C: Fn(u64) -> bool + Send + Sync + 'static,
{
    in_process_loop(c, plan.warmup_budget(), false, Arc::clone(&check)).await;
    let s = in_process_loop(c, plan.budget(), true, Arc::clone(&check)).await;
    report.push(Row::from_samples("1 check", id, label, c, &s).note(misses(&s, "timed per call")));
    let s = in_process_loop(c, plan.budget(), false, check).await;
    let mut row = Row::from_samples(
        "1 check",
        &format!("{id}_loop"),
        &format!("{label}, untimed"),
        c,
        &s,
    );
    row.p99 = None;
    row.p999 = None;
    report.push(row.note(misses(&s, "p50 = mean per call over runs of 1,000 calls")));
}

fn misses(s: &Samples, note: &str) -> String {
    match s.errors {
        0 => note.to_string(),
        n => format!("{note}; {n} calls not answered current from the mirror"),
    }
}

/// A gRPC check of `batch` consecutive keys of the set per call.
pub(crate) fn grpc_check(
    client: Client,
    t: &Targets,
    batch: usize,
) -> impl Fn(usize, u64) -> OpFuture + Send + Sync + Clone + 'static {
    let keys = Arc::clone(&t.keys);
    let tokens = Arc::clone(&t.tokens);
    move |_, i| {
        let client = client.clone();
        let keys = Arc::clone(&keys);
        let tokens = Arc::clone(&tokens);
        Box::pin(async move {
            let n = keys.len();
            let first = (i as usize * batch) % n;
            let entries: Vec<(&str, &Version)> = (first..first + batch)
                .map(|j| (keys[j % n].as_str(), &tokens[j % n]))
                .collect();
            let results = client.check(&entries, Consistency::Bounded).await?;
            anyhow::ensure!(
                results
                    .iter()
                    .all(|r| r.current && r.source != CheckSource::FailClosed),
                "a check was not answered current"
            );
            Ok(batch as u64)
        })
    }
}

fn redis_get(t: &Targets) -> impl Fn(usize, u64) -> OpFuture + Send + Sync + Clone + 'static {
    let conn = t.redis.clone();
    let version_keys = Arc::clone(&t.version_keys);
    move |_, i| {
        let mut conn = conn.clone();
        let version_keys = Arc::clone(&version_keys);
        Box::pin(async move {
            let key = &version_keys[i as usize % version_keys.len()];
            let v: Option<String> = redis::cmd("GET").arg(key).query_async(&mut conn).await?;
            v.context("version key missing")?;
            Ok(1)
        })
    }
}

fn pg_select(
    pg: Arc<ScratchDb>,
    keys: Arc<Vec<String>>,
) -> impl Fn(usize, u64) -> OpFuture + Send + Sync + Clone + 'static {
    move |worker, i| {
        let pg = Arc::clone(&pg);
        let keys = Arc::clone(&keys);
        Box::pin(async move {
            let (client, statement) = pg.connection(worker);
            let row = client
                .query_one(statement, &[&keys[i as usize % keys.len()]])
                .await?;
            let _version: i64 = row.try_get(0)?;
            Ok(1)
        })
    }
}

fn timer_cost_ns() -> u64 {
    let n = 100_000u32;
    let t0 = Instant::now();
    for _ in 0..n {
        std::hint::black_box(Instant::now().elapsed());
    }
    (t0.elapsed() / n).as_nanos() as u64
}

fn ratios(plan: &Plan, report: &mut Report) {
    let p50 = |r: &crate::report::Row| r.p50.map(|d| d.as_secs_f64());
    let p99 = |r: &crate::report::Row| r.p99.map(|d| d.as_secs_f64());
    if let (Some(pg), Some(mirror)) = (
        report.find("d_postgres", 1),
        report.find("a_client_mirror_loop", 1),
    ) {
        let v = p50(pg).zip(p50(mirror)).map(|(a, b)| a / b);
        report.ratio(
            "(a) client mirror is_current (untimed mean) vs (d) PostgreSQL p50, c=1 (times cheaper)",
            v,
            1000.0,
            true,
            "×",
        );
    }
    for &c in plan.levels() {
        let pair = |report: &Report, a: &str, b: &str| {
            report.find(a, c).cloned().zip(report.find(b, c).cloned())
        };
        if let Some((check, floor)) = pair(report, "b_check1", "e_floor1") {
            report.ratio(
                format!("(b) Check throughput / (e) floor, c={c}"),
                Some(check.ops_per_sec / floor.ops_per_sec),
                0.8,
                true,
                "×",
            );
            report.ratio(
                format!("(b) Check p99 / (e) floor p99, c={c}"),
                p99(&check).zip(p99(&floor)).map(|(a, b)| a / b),
                1.5,
                false,
                "×",
            );
        }
        if let Some((batch, single)) = pair(report, "b_check100", "b_check1") {
            report.ratio(
                format!("(b) batch of 100 keys/s / single-key keys/s, c={c}"),
                Some(batch.units_per_sec / single.units_per_sec),
                20.0,
                true,
                "×",
            );
        }
        if let Some((check, redis)) = pair(report, "b_check1", "c_redis_get") {
            report.info(
                format!("(b) Check throughput / (c) Redis GET, c={c}"),
                Some(check.ops_per_sec / redis.ops_per_sec),
            );
        }
        if let Some((check, pg)) = pair(report, "b_check1", "d_postgres") {
            report.info(
                format!("(b) Check throughput / (d) PostgreSQL, c={c}"),
                Some(check.ops_per_sec / pg.ops_per_sec),
            );
        }
        if let Some((batch, pg)) = pair(report, "b_check100", "d_postgres") {
            report.info(
                format!("(b) batch-of-100 keys/s / (d) PostgreSQL checks/s, c={c}"),
                Some(batch.units_per_sec / pg.units_per_sec),
            );
        }
        if let Some((mirror, pg)) = pair(report, "a_client_mirror_loop", "d_postgres") {
            report.info(
                format!("(a) client mirror checks/s (untimed) / (d) PostgreSQL checks/s, c={c}"),
                Some(mirror.units_per_sec / pg.units_per_sec),
            );
        }
    }
}
