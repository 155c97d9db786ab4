//! The soak's faults, one every period in turn: Redis paused (SIGSTOP for 5 s, then SIGCONT),
//! Redis killed and restarted (empty: it keeps no data on disk, so every shard's epoch
//! changes), and `CLIENT KILL TYPE pubsub` (every subscription connection dropped).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coherence_testkit::RedisServer;

/// How long a pause lasts.
const PAUSE: Duration = Duration::from_secs(5);

/// One injected fault.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// Since the phase began.
    pub at: Duration,
    pub fault: &'static str,
    /// How long Redis was unavailable (paused, or down until it answered again).
    pub took: Duration,
    pub note: String,
}

/// Injects a fault every `every` until `until` (none in its last 10 s).
pub async fn inject(
    redis: Arc<Mutex<RedisServer>>,
    every: Duration,
    started: Instant,
    until: Instant,
) -> Vec<FaultRecord> {
    let mut records = Vec::new();
    let mut next = started + every;
    for turn in 0.. {
        if next + Duration::from_secs(10) > until {
            break;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        next += every;
        let begun = Instant::now();
        let (fault, note) = match turn % 3 {
            0 => {
                blocking(&redis, |r| r.pause()).await;
                tokio::time::sleep(PAUSE).await;
                blocking(&redis, |r| r.resume()).await;
                ("SIGSTOP 5 s, SIGCONT", String::new())
            }
            1 => {
                blocking(&redis, |r| r.kill()).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let restarted = blocking(&redis, |r| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.restart_empty()))
                        .is_ok()
                })
                .await;
                (
                    "SIGKILL, restart (empty)",
                    if restarted {
                        String::new()
                    } else {
                        "restart FAILED".into()
                    },
                )
            }
            _ => {
                let killed = blocking(&redis, |r| {
                    r.cmd::<i64>(&["CLIENT", "KILL", "TYPE", "pubsub"])
                })
                .await;
                (
                    "CLIENT KILL TYPE pubsub",
                    match killed {
                        Ok(n) => format!("{n} connections"),
                        Err(err) => format!("failed: {err}"),
                    },
                )
            }
        };
        records.push(FaultRecord {
            at: begun - started,
            fault,
            took: begun.elapsed(),
            note,
        });
    }
    records
}

/// Runs `f` on the Redis server off the async workers (its methods block).
async fn blocking<T: Send + 'static>(
    redis: &Arc<Mutex<RedisServer>>,
    f: impl FnOnce(&mut RedisServer) -> T + Send + 'static,
) -> T {
    let redis = Arc::clone(redis);
    tokio::task::spawn_blocking(move || {
        let mut r = redis.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut r)
    })
    .await
    .expect("a fault task panicked")
}
