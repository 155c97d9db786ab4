//! `coherence-bench`: coherence against the alternatives, side by side in one run.
//!
//! Starts what it measures itself — a `redis-server` on a free loopback port, in-process
//! sidecars, a bare tonic "floor" server, a scratch database on the machine's PostgreSQL — then
//! runs each section of issue #7 and prints a table, writing `results.csv`, `results.md` and
//! `chart.svg` under `--out`. Not a test: it asserts nothing and reports ratios against the
//! issue's goals instead. See BENCHMARKS.md for a run and its reading.

mod bumps;
mod chart;
mod checks;
mod driver;
mod fleet;
mod floor;
mod leases;
mod memory;
mod observer;
mod overload;
mod pg;
mod plan;
mod propagation;
mod report;
mod scale;
mod soak;
mod stats;
mod strong;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use coherence_client::{Client, Consistency, MirrorOptions, Version};
use coherence_testkit::RedisServer;

use crate::checks::Targets;
use crate::fleet::Fleet;
use crate::floor::Floor;
use crate::pg::ScratchDb;
use crate::plan::{Args, Plan};
use crate::report::Report;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client_workers = args.client_workers.or(args.workers);
    let server_workers = args.server_workers.or(args.workers);
    let client_rt = runtime("bench-client", client_workers)?;
    let server_rt = runtime("bench-server", server_workers)?;
    let plan = Plan::new(args);
    let started = Instant::now();
    let report = client_rt.block_on(run(&plan, server_rt.handle().clone()))?;
    let out = &plan.args.out;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    std::fs::write(out.join("results.csv"), report.csv())?;
    std::fs::write(out.join("results.md"), report.markdown())?;
    std::fs::write(out.join("chart.svg"), chart::svg(&report))?;
    println!("\n{}", report.console_table());
    for fact in &report.facts {
        println!("* {fact}");
    }
    println!(
        "\nwrote {}/results.csv, results.md, chart.svg in {:.0} s (client workers {}, server workers {})",
        out.display(),
        started.elapsed().as_secs_f64(),
        client_workers.map_or("default".into(), |n| n.to_string()),
        server_workers.map_or("default".into(), |n| n.to_string()),
    );
    server_rt.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}

fn runtime(name: &str, workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name(name);
    if let Some(n) = workers {
        builder.worker_threads(n.max(1));
    }
    Ok(builder.build()?)
}

async fn run(plan: &Plan, server: tokio::runtime::Handle) -> anyhow::Result<Report> {
    let mut report = Report::default();
    report.fact(machine_line());
    if plan.runs("soak") {
        soak::run(plan, &mut report).await?;
    }
    if plan.runs("overload") {
        overload::run(plan, &mut report).await?;
    }
    // Both start what they measure themselves; alone, they need nothing below.
    if plan
        .args
        .sections
        .iter()
        .all(|s| s == "soak" || s == "overload")
    {
        return Ok(report);
    }
    if plan.runs("memory") {
        // First, while the heap is still small and nothing freed can be reused.
        memory::mirror_per_key(&mut report);
    }
    let redis = RedisServer::start();
    let mut fleet = Fleet::new(server.clone(), &redis.url(), "bench");
    fleet.grow_to(2).await?;
    let keys: Vec<String> = (0..plan.args.keys.max(1))
        .map(|i| format!("bench:key:{i:06}"))
        .collect();
    let sidecar = Client::connect(fleet.url(0)).await?;
    // Issue (or read) each key's version once through the sidecar, which also mirrors it.
    let mut tokens = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(1000) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        tokens.extend(sidecar.get(&refs).await?);
    }
    let mirrored = sidecar.clone().with_mirror(MirrorOptions::default());
    anyhow::ensure!(
        mirrored
            .wait_trusted(std::time::Duration::from_secs(20))
            .await,
        "the client mirror did not become trusted"
    );
    for chunk in keys.chunks(1000) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        mirrored.get_with(&refs, Consistency::Bounded).await?;
    }
    report.fact(format!(
        "client mirror holds {} of {} keys",
        mirrored.mirrored_keys(),
        keys.len()
    ));
    let versions = Arc::clone(&fleet.sidecars[0].versions);
    let keyspace = versions.state().keyspace.clone();
    let version_keys = keys
        .iter()
        .map(|k| keyspace.version_key(keyspace.shard_of(k), k))
        .collect();
    let floor_table: HashMap<String, String> = keys
        .iter()
        .cloned()
        .zip(tokens.iter().map(|v: &Version| v.token().to_string()))
        .collect();
    let floor = server.spawn(Floor::start(floor_table)).await??;
    let pg = if plan.args.postgres.is_empty() {
        None
    } else {
        match ScratchDb::create(&plan.args.postgres, &keys, plan.args.pg_pool).await {
            Ok(db) => Some(Arc::new(db)),
            Err(err) => {
                report.fact(format!("PostgreSQL skipped: {err:#}"));
                None
            }
        }
    };
    let redis_conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let targets = Targets {
        versions,
        sidecar,
        mirrored,
        floor: Client::connect(floor.url()).await?,
        redis: redis_conn,
        pg,
        keys: Arc::new(keys),
        tokens: Arc::new(tokens),
        version_keys: Arc::new(version_keys),
    };

    if plan.runs("check") {
        checks::run(plan, &targets, &mut report).await;
    }
    if plan.runs("observer") {
        observer::run(plan, server.clone(), &redis.url(), &targets, &mut report).await;
    }
    if plan.runs("strong") {
        strong::run(plan, &targets, &mut report).await;
    }
    if plan.runs("bump") {
        let mut lone = Fleet::new(server.clone(), &redis.url(), "bench-lone");
        lone.grow_to(1).await?;
        bumps::run(
            plan,
            &targets.sidecar,
            &Client::connect(lone.url(0)).await?,
            &lone.sidecars[0].versions,
            &targets.floor,
            redis.port(),
            &mut report,
        )
        .await;
        lone.shutdown().await;
    }
    if plan.runs("leases") {
        leases::run(
            plan,
            server.clone(),
            &redis.url(),
            redis.port(),
            &mut report,
        )
        .await;
    }
    if plan.runs("memory") {
        memory::run(
            plan,
            &fleet.url(1),
            &redis.url(),
            &targets.keys,
            &mut report,
        )
        .await;
    }
    if plan.runs("propagation") {
        propagation::run(plan, server.clone(), &redis.url(), &mut report).await;
    }

    if plan.runs("scale") {
        scale::run(plan, server.clone(), &mut report).await;
    }

    let Targets { pg, .. } = targets;
    if let Some(pg) = pg {
        match Arc::try_unwrap(pg) {
            Ok(db) => {
                if let Err(err) = db.drop_database().await {
                    eprintln!("{err:#}");
                }
            }
            Err(_) => eprintln!("scratch database still in use; not dropped"),
        }
    }
    floor.stop().await;
    fleet.shutdown().await;
    drop(redis);
    Ok(report)
}

/// CPU count and model, memory: the machine the figures belong to.
fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    format!(
        "machine: {cpus} CPUs ({model}), {:.1} GiB memory",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}
