//! The soak (`--sections soak`, not in the default run): three release sidecars as child
//! processes on one Redis, 200 clients mixing Check, Get and Bump, 20 Watch streams of which 5
//! stall, 6 Subscribe streams of which 3 stall and a publisher, for `--soak-minutes`; then the
//! same with a Redis fault every 30 s. Reports errors by gRPC code, p50/p99/p999 per call, each
//! sidecar's RSS over time (and its slope), Redis's `used_memory`, and the verdict of the fault
//! suite's history checker ([`coherence_testkit::fault_history`]) on every call made. Written to
//! `<out>/soak.md` and printed.

mod faults;
mod load;
mod procs;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coherence_client::Client;
use coherence_testkit::fault_history::history::{History, Limits, Via};
use coherence_testkit::fault_history::report::Report as Verdict;

use crate::plan::Plan;
use crate::report::Report;
use crate::stats::nearest_rank;
use faults::FaultRecord;
use load::{Streams, Tally};
use procs::{MemorySample, SidecarProcess};

const SIDECARS: usize = 3;
const CLIENTS: usize = 200;
const WATCHERS: usize = 20;
/// Every fourth Watch stream stalls: 5 of 20.
const WATCH_STALL_EVERY: usize = 4;
const SUBSCRIBERS: usize = 6;
const KEYS: usize = 1000;
const FAULT_EVERY: Duration = Duration::from_secs(30);
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// A call failing this long after a fault ended still counts as failing during the fault
/// (the sidecars reconnect with a backoff of up to 2 s, then re-sync).
const RECOVERY: Duration = Duration::from_secs(5);

/// What the history checker allows: the sidecar's default `max_staleness` and
/// `check_deadline`, with 1 s of slack for a 2-core machine shared with other work.
const LIMITS: Limits = Limits {
    max_staleness: Duration::from_millis(500),
    check_deadline: Duration::from_millis(250),
    check_slack: Duration::from_secs(1),
    strong_by_completed_bumps: false,
};

/// What one phase measured.
struct Phase {
    name: &'static str,
    started: Instant,
    length: Duration,
    tally: Tally,
    watch: Streams,
    notes: Streams,
    memory: Vec<MemorySample>,
    faults: Vec<FaultRecord>,
    verdict: Verdict,
}

pub async fn run(plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let length = Duration::from_secs_f64(plan.args.soak_minutes.max(0.1) * 60.0);
    let redis = coherence_testkit::RedisServer::start();
    let redis_url = redis.url();
    let redis = Arc::new(Mutex::new(redis));
    std::fs::create_dir_all(&plan.args.out)?;
    let mut sidecars = Vec::new();
    for i in 0..SIDECARS {
        sidecars.push(SidecarProcess::start(&redis_url, "soak", i, &plan.args.out).await?);
    }
    let mut phases = Vec::new();
    for (name, faulty) in [("steady", false), ("faults", true)]
        .into_iter()
        .filter(|(name, _)| plan.args.soak_phases.iter().any(|p| p == name))
    {
        eprintln!("soak: phase {name} for {length:?}");
        phases.push(phase(name, faulty, length, &sidecars, &redis, &redis_url).await?);
    }
    for sidecar in sidecars {
        sidecar.stop().await;
    }
    let text = render(&phases);
    std::fs::write(plan.args.out.join("soak.md"), &text)?;
    println!("{text}");
    for p in &phases {
        report.fact(format!(
            "soak {}: {} history violations, {} calls failed",
            p.name,
            p.verdict.violations.len(),
            p.tally.errors.values().sum::<u64>()
        ));
    }
    Ok(())
}

async fn phase(
    name: &'static str,
    faulty: bool,
    length: Duration,
    sidecars: &[SidecarProcess],
    redis: &Arc<Mutex<coherence_testkit::RedisServer>>,
    redis_url: &str,
) -> anyhow::Result<Phase> {
    let keys: Arc<Vec<String>> =
        Arc::new((0..KEYS).map(|i| format!("soak:{name}:{i:04}")).collect());
    let history = Arc::new(History::default());
    let mut clients = Vec::new();
    for sidecar in sidecars {
        // A connection per client, as separate app processes would have.
        let mut of_sidecar = Vec::new();
        for _ in 0..CLIENTS.div_ceil(SIDECARS) {
            of_sidecar.push(
                Client::connect(&sidecar.url)
                    .await?
                    .with_timeout(Duration::from_secs(5)),
            );
        }
        clients.push(of_sidecar);
    }
    let started = Instant::now();
    let until = started + length;
    let mut calls = Vec::new();
    for id in 0..CLIENTS {
        let s = id % SIDECARS;
        let client = clients[s][id / SIDECARS].clone();
        calls.push(tokio::spawn(load::client(
            id,
            client,
            Via::Sidecar(s),
            Arc::clone(&keys),
            Arc::clone(&history),
            until,
        )));
    }
    let publisher = tokio::spawn(load::publisher(clients[0][0].clone(), until));
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|w| {
            let client = clients[w % SIDECARS][w / SIDECARS].clone();
            let stall = w % WATCH_STALL_EVERY == 0;
            tokio::spawn(load::watcher(client, format!("soak:{name}:"), stall, until))
        })
        .collect();
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|n| {
            let client = clients[n % SIDECARS][n / SIDECARS].clone();
            tokio::spawn(load::subscriber(client, n % 2 == 1, until))
        })
        .collect();
    let injector = faulty.then(|| {
        tokio::spawn(faults::inject(
            Arc::clone(redis),
            FAULT_EVERY,
            started,
            until,
        ))
    });
    let mut memory = Vec::new();
    while Instant::now() < until + SAMPLE_EVERY / 2 {
        let mut sample = MemorySample {
            at: started.elapsed(),
            sidecars: sidecars.iter().map(SidecarProcess::rss_bytes).collect(),
            redis_used: procs::redis_used_memory(redis_url).await,
        };
        sample.at = sample.at.min(length);
        memory.push(sample);
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(SAMPLE_EVERY.min(until.saturating_duration_since(Instant::now()))).await;
    }
    let mut tally = Tally::default();
    for call in calls {
        tally.merge(call.await?);
    }
    tally.merge(publisher.await?);
    let mut watch = Streams::default();
    for w in watchers {
        watch.merge(w.await?);
    }
    let mut notes = Streams::default();
    for s in subscribers {
        notes.merge(s.await?);
    }
    let faults = match injector {
        Some(task) => task.await?,
        None => Vec::new(),
    };
    let verdict = history.analyse(&LIMITS);
    Ok(Phase {
        name,
        started,
        length,
        tally,
        watch,
        notes,
        memory,
        faults,
        verdict,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(ns: Option<u64>) -> String {
    ns.map_or("-".into(), |ns| format!("{:.2}", ns as f64 / 1e6))
}

/// The phases as Markdown.
fn render(phases: &[Phase]) -> String {
    let mut out = String::new();
    for p in phases {
        let secs = p.length.as_secs_f64();
        let _ = writeln!(
            out,
            "### Soak, phase `{}` ({:.1} min{})\n",
            p.name,
            secs / 60.0,
            if p.faults.is_empty() {
                ", no faults"
            } else {
                ", a Redis fault every 30 s"
            }
        );
        let _ = writeln!(out, "| call | ok | calls/s | p50 ms | p99 ms | p999 ms | max ms |\n|---|---|---|---|---|---|---|");
        for (call, ns) in &p.tally.latencies {
            let mut ns = ns.clone();
            ns.sort_unstable();
            let _ = writeln!(
                out,
                "| {call} | {} | {:.0} | {} | {} | {} | {} |",
                ns.len(),
                ns.len() as f64 / secs,
                ms(nearest_rank(&ns, 0.5)),
                ms(nearest_rank(&ns, 0.99)),
                ms(nearest_rank(&ns, 0.999)),
                ms(ns.last().copied()),
            );
        }
        let errors: Vec<String> = p
            .tally
            .errors
            .iter()
            .map(|((call, code), n)| format!("{call} {code}: {n}"))
            .collect();
        let outside = p
            .tally
            .error_times
            .iter()
            .filter(|at| {
                let at = at.saturating_duration_since(p.started);
                !p.faults
                    .iter()
                    .any(|f| f.at <= at && at <= f.at + f.took + RECOVERY)
            })
            .count();
        let _ = writeln!(
            out,
            "\nErrors by call and gRPC code: {}; {outside} of them outside a fault (its duration + {RECOVERY:?}). Checks answered fail-closed: {}.\n",
            if errors.is_empty() {
                "none".into()
            } else {
                errors.join(", ")
            },
            p.tally.fail_closed
        );
        let _ = writeln!(
            out,
            "Watch: {} streams opened ({} stalled, never read): {} invalidations, {} resyncs, {} heartbeats read; ended: {:?}.\n",
            p.watch.opened, p.watch.stalled, p.watch.invalidations, p.watch.resyncs, p.watch.heartbeats, p.watch.ended
        );
        let _ = writeln!(
            out,
            "Notifications: {} Subscribe streams opened ({} stalled): {} messages and {} MissedMessages read; ended: {:?}.\n",
            p.notes.opened, p.notes.stalled, p.notes.messages, p.notes.missed, p.notes.ended
        );
        let _ = writeln!(out, "| process | first MiB | last MiB | max MiB | slope MiB/min (after 1st min) | slope MiB/min per 10-minute window |\n|---|---|---|---|---|---|");
        let first_minute = Duration::from_secs(60).min(p.length / 2);
        for s in 0..SIDECARS {
            let points: Vec<(f64, f64)> = p
                .memory
                .iter()
                .filter_map(|m| Some((m.at, m.sidecars.get(s).copied().flatten()?)))
                .map(|(at, b)| (at.as_secs_f64() / 60.0, mib(b)))
                .collect();
            memory_row(&mut out, &format!("sidecar {s} RSS"), &points, first_minute);
        }
        let redis: Vec<(f64, f64)> = p
            .memory
            .iter()
            .filter_map(|m| Some((m.at.as_secs_f64() / 60.0, mib(m.redis_used?))))
            .collect();
        memory_row(&mut out, "Redis used_memory", &redis, first_minute);
        let rss_series: Vec<String> = p
            .memory
            .iter()
            .map(|m| {
                let each: Vec<String> = m
                    .sidecars
                    .iter()
                    .map(|b| b.map_or("-".into(), |b| format!("{:.1}", mib(b))))
                    .collect();
                format!("{:.0}s: {}", m.at.as_secs_f64(), each.join("/"))
            })
            .collect();
        let _ = writeln!(
            out,
            "\nRSS over time (MiB, sidecar 0/1/2): {}.\n",
            rss_series.join("; ")
        );
        if !p.faults.is_empty() {
            let faults: Vec<String> = p
                .faults
                .iter()
                .map(|f| {
                    format!(
                        "{:.0}s {} ({:.1} s{})",
                        f.at.as_secs_f64(),
                        f.fault,
                        f.took.as_secs_f64(),
                        if f.note.is_empty() {
                            String::new()
                        } else {
                            format!(", {}", f.note)
                        }
                    )
                })
                .collect();
            let _ = writeln!(out, "Faults: {}.\n", faults.join("; "));
        }
        let v = &p.verdict;
        let _ = writeln!(out, "History checker (`coherence_testkit::fault_history`, max_staleness {:?}, check deadline {:?} + slack {:?}): {} violations. {v}\n", LIMITS.max_staleness, LIMITS.check_deadline, LIMITS.check_slack, v.violations.len());
        let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
        for violation in &v.violations {
            *kinds.entry(violation_kind(violation)).or_default() += 1;
        }
        if !kinds.is_empty() {
            let _ = writeln!(out, "Violations by kind: {kinds:?}; the first ten:\n");
        }
        for violation in v.violations.iter().take(10) {
            let _ = writeln!(out, "- {violation}");
        }
        if !v.violations.is_empty() {
            out.push('\n');
        }
    }
    out
}

/// The rule a history checker violation broke, from its wording
/// (`coherence_testkit::fault_history::history`).
fn violation_kind(violation: &str) -> &'static str {
    if violation.contains("beyond deadline") {
        "check slower than deadline + slack"
    } else if violation.contains("failed instead of answering") {
        "check failed instead of answering"
    } else if violation.contains("own writes") {
        "own write not visible"
    } else if violation.contains("superseded") {
        "superseded version called current"
    } else {
        "other"
    }
}

fn memory_row(out: &mut String, what: &str, points: &[(f64, f64)], skip: Duration) {
    let skip_min = skip.as_secs_f64() / 60.0;
    let settled: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(at, _)| *at >= skip_min)
        .collect();
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    let slope = |points: &[(f64, f64)]| {
        procs::slope_per_minute(points).map_or("-".into(), |s| format!("{s:+.2}"))
    };
    // Whether a creep levels off: the slope of each 10 minutes on its own.
    let last_minute = points.last().map_or(0.0, |p| p.0);
    let windows: Vec<String> = (0..)
        .map(|w| f64::from(w) * 10.0)
        .take_while(|start| *start < last_minute)
        .map(|start| {
            let window: Vec<(f64, f64)> = points
                .iter()
                .copied()
                .filter(|(at, _)| *at >= start && *at < start + 10.0)
                .collect();
            format!("{:.0}–{:.0}: {}", start, start + 10.0, slope(&window))
        })
        .collect();
    let _ = writeln!(
        out,
        "| {what} | {} | {} | {} | {} | {} |",
        f(points.first().map(|p| p.1)),
        f(points.last().map(|p| p.1)),
        f(points.iter().map(|p| p.1).reduce(f64::max)),
        slope(&settled),
        windows.join(", "),
    );
}
