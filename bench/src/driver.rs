//! Load generators: a closed loop (N workers, each calls again as soon as its call returns) and
//! a paced open loop (calls started at a fixed rate, whatever the latency).
//!
//! Both are bounded twice, by time and by call count, so that no run can go on forever or fill
//! memory with samples, whatever the machine's speed.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::stats::Samples;

/// How long a run may take and how many calls it may make, whichever ends first.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub duration: Duration,
    pub max_ops: u64,
}

/// Most latency samples kept per run; calls beyond it are counted but not timed individually.
const MAX_SAMPLES: u64 = 2_000_000;

/// Runs `op` from `concurrency` workers until the budget is spent. `op(worker, i)` returns the
/// work units it did (1 for a single check, 100 for a batch of 100).
pub async fn closed_loop<F, Fut>(concurrency: usize, budget: Budget, op: F) -> Samples
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let op = Arc::new(op);
    let issued = Arc::new(AtomicU64::new(0));
    let per_worker_samples = MAX_SAMPLES / concurrency.max(1) as u64;
    let started = Instant::now();
    let deadline = started + budget.duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|worker| {
            let op = Arc::clone(&op);
            let issued = Arc::clone(&issued);
            tokio::spawn(async move {
                let mut s = Samples::default();
                loop {
                    let i = issued.fetch_add(1, Ordering::Relaxed);
                    if i >= budget.max_ops || Instant::now() >= deadline {
                        break;
                    }
                    let t0 = Instant::now();
                    match op(worker, i).await {
                        Ok(units) => {
                            if s.ops < per_worker_samples {
                                s.latencies_ns.push(t0.elapsed().as_nanos() as u64);
                            }
                            s.ops += 1;
                            s.units += units;
                        }
                        Err(_) => s.errors += 1,
                    }
                }
                s
            })
        })
        .collect();
    join(workers, started).await
}

/// Starts `op` at `rate` calls per second for the budget, with at most `max_in_flight` calls
/// outstanding (a call that would exceed it is skipped and counted as an error, so an overloaded
/// target shows up as a lower achieved rate, not as an unbounded queue).
pub async fn paced<F, Fut>(rate: u64, max_in_flight: usize, budget: Budget, op: F) -> Samples
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let op = Arc::new(op);
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut issued = 0u64;
    let mut skipped = 0u64;
    let mut calls = Vec::new();
    while started.elapsed() < budget.duration && issued < budget.max_ops {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(budget.max_ops);
        while issued < due {
            let i = issued;
            issued += 1;
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                skipped += 1;
                continue;
            };
            let op = Arc::clone(&op);
            calls.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let result = op(i).await;
                drop(permit);
                result.map(|units| (units, t0.elapsed()))
            }));
        }
    }
    let mut s = Samples {
        errors: skipped,
        ..Samples::default()
    };
    for call in calls {
        match call.await {
            Ok(Ok((units, took))) => {
                s.ops += 1;
                s.units += units;
                if s.ops <= MAX_SAMPLES {
                    s.latencies_ns.push(took.as_nanos() as u64);
                }
            }
            _ => s.errors += 1,
        }
    }
    Samples::merge(vec![s], started.elapsed())
}

/// Calls a synchronous in-process `check(i)` from `concurrency` tasks until the budget is spent,
/// in runs of `chunk` calls between clock reads. With `timed`, each call is timed on its own
/// (adding the timer's cost to every sample); without, only throughput is measured and the
/// samples are the mean call time of each run. A `false` answer counts as an error.
pub async fn in_process_loop<C>(
    concurrency: usize,
    budget: Budget,
    timed: bool,
    check: Arc<C>,
) -> Samples
where
    C: Fn(u64) -> bool + Send + Sync + 'static,
{
    const CHUNK: u64 = 1000;
    let issued = Arc::new(AtomicU64::new(0));
    let per_worker_samples = MAX_SAMPLES / concurrency.max(1) as u64;
    let started = Instant::now();
    let deadline = started + budget.duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let check = Arc::clone(&check);
            let issued = Arc::clone(&issued);
            tokio::spawn(async move {
                let mut s = Samples::default();
                loop {
                    let first = issued.fetch_add(CHUNK, Ordering::Relaxed);
                    if first >= budget.max_ops || Instant::now() >= deadline {
                        break;
                    }
                    let run_started = Instant::now();
                    for i in first..first + CHUNK {
                        let t0 = timed.then(Instant::now);
                        let ok = check(i);
                        if let Some(t0) = t0 {
                            if (s.latencies_ns.len() as u64) < per_worker_samples {
                                s.latencies_ns.push(t0.elapsed().as_nanos() as u64);
                            }
                        }
                        if ok {
                            s.ops += 1;
                            s.units += 1;
                        } else {
                            s.errors += 1;
                        }
                    }
                    if !timed && (s.latencies_ns.len() as u64) < per_worker_samples {
                        s.latencies_ns
                            .push(run_started.elapsed().as_nanos() as u64 / CHUNK);
                    }
                    // Let the other tasks on this worker run, as an app's request handlers would.
                    tokio::task::yield_now().await;
                }
                s
            })
        })
        .collect();
    join(workers, started).await
}

/// Waits for every worker and merges their samples into one run that began at `started`.
async fn join(workers: Vec<tokio::task::JoinHandle<Samples>>, started: Instant) -> Samples {
    let mut parts = Vec::with_capacity(workers.len());
    for w in workers {
        if let Ok(s) = w.await {
            parts.push(s);
        }
    }
    Samples::merge(parts, started.elapsed())
}
