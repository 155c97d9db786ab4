//! The soak's load: clients mixing Check, Get and Bump (each call recorded in the fault
//! suite's [`History`]), Watch streams of which some stall, and notifications (Subscribe
//! streams, some stalled, and a publisher). Every worker stops by itself at `until`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coherence_client::{CheckSource, Client, Consistency, NotificationEvent, Version, WatchEvent};
use coherence_testkit::fault_history::history::{History, Via};
use coherence_testkit::fault_history::record::{record_bumps, record_checks, record_gets};
use futures::StreamExt;

/// Each client makes one call per period (200 clients: 2,000 calls/s when the machine keeps
/// up; it falls behind rather than queueing).
pub const CLIENT_PERIOD: Duration = Duration::from_millis(100);
/// The publisher sends one 1 KiB notification per period.
pub const PUBLISH_PERIOD: Duration = Duration::from_millis(100);
pub const TOPIC: &str = "soak";

/// What the calls of some workers came to.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latency of each successful call, ns, by call.
    pub latencies: BTreeMap<&'static str, Vec<u64>>,
    /// Failed calls by call and gRPC code.
    pub errors: BTreeMap<(&'static str, String), u64>,
    /// Checks answered fail-closed (current = false, nothing could vouch).
    pub fail_closed: u64,
    /// When each failed call failed, to tell failures during a fault from the rest.
    pub error_times: Vec<Instant>,
}

impl Tally {
    fn ok(&mut self, call: &'static str, start: Instant) {
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.latencies.entry(call).or_default().push(ns);
    }

    fn error(&mut self, call: &'static str, err: &coherence_client::Error) {
        self.error_times.push(Instant::now());
        *self
            .errors
            .entry((call, format!("{:?}", err.code())))
            .or_default() += 1;
    }

    pub fn merge(&mut self, other: Tally) {
        for (call, mut ns) in other.latencies {
            self.latencies.entry(call).or_default().append(&mut ns);
        }
        for (key, n) in other.errors {
            *self.errors.entry(key).or_default() += n;
        }
        self.fail_closed += other.fail_closed;
        self.error_times.extend(other.error_times);
    }
}

/// A small xorshift: the mix needs no quality, only no shared state between workers.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One client: 60 % Check (one in ten strong) of the version it was last given of a random
/// key it knows, 25 % Get and 15 % Bump of a random key (a Check before it knows any key is a
/// Get).
pub async fn client(
    id: usize,
    client: Client,
    via: Via,
    keys: Arc<Vec<String>>,
    history: Arc<History>,
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let mut known: HashMap<usize, Version> = HashMap::new();
    let mut known_keys: Vec<usize> = Vec::new();
    let mut tick = tokio::time::interval(CLIENT_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Spread the clients over the period.
    tokio::time::sleep(CLIENT_PERIOD.mul_f64(rng.below(1000) as f64 / 1000.0)).await;
    while Instant::now() < until {
        tick.tick().await;
        let roll = rng.below(100);
        let k = if roll < 60 && !known_keys.is_empty() {
            known_keys[rng.below(known_keys.len())]
        } else {
            rng.below(keys.len())
        };
        let key = keys[k].as_str();
        let start = Instant::now();
        let was_known = known.contains_key(&k);
        match known.get(&k) {
            Some(version) if roll < 60 => {
                let strong = roll < 6;
                let consistency = if strong {
                    Consistency::Strong
                } else {
                    Consistency::Bounded
                };
                let entries = [(key, version)];
                let result = client.check(&entries, consistency).await;
                record_checks(&history, via, strong, &entries, start, &result);
                match result {
                    Ok(results) => {
                        tally.ok(if strong { "check_strong" } else { "check" }, start);
                        if let Some(r) = results.into_iter().next() {
                            tally.fail_closed += u64::from(r.source == CheckSource::FailClosed);
                            if let Some(v) =
                                r.version.filter(|_| r.source != CheckSource::FailClosed)
                            {
                                known.insert(k, v);
                            }
                        }
                    }
                    Err(err) => tally.error("check", &err),
                }
            }
            _ if roll < 85 => {
                let result = client.get(&[key]).await;
                record_gets(&history, via, false, &[key], start, &result);
                match result {
                    Ok(mut versions) => {
                        tally.ok("get", start);
                        if let Some(v) = versions.pop() {
                            known.insert(k, v);
                        }
                    }
                    Err(err) => tally.error("get", &err),
                }
            }
            _ => {
                let result = client.bump(&[key]).await;
                record_bumps(&history, &[key], start, &[via], &result);
                match result {
                    Ok(mut versions) => {
                        tally.ok("bump", start);
                        if let Some(v) = versions.pop() {
                            known.insert(k, v);
                        }
                    }
                    Err(err) => tally.error("bump", &err),
                }
            }
        }
        if !was_known && known.contains_key(&k) {
            known_keys.push(k);
        }
    }
    tally
}

/// What the streams (Watch or Subscribe) of a run received.
#[derive(Debug, Default, Clone)]
pub struct Streams {
    pub opened: u64,
    pub stalled: u64,
    pub invalidations: u64,
    pub resyncs: u64,
    pub heartbeats: u64,
    pub messages: u64,
    pub missed: u64,
    /// Streams that ended or failed (and were opened again), by gRPC code.
    pub ended: BTreeMap<String, u64>,
}

impl Streams {
    pub fn merge(&mut self, o: Streams) {
        self.opened += o.opened;
        self.stalled += o.stalled;
        self.invalidations += o.invalidations;
        self.resyncs += o.resyncs;
        self.heartbeats += o.heartbeats;
        self.messages += o.messages;
        self.missed += o.missed;
        for (code, n) in o.ended {
            *self.ended.entry(code).or_default() += n;
        }
    }

    fn ended(&mut self, code: String) {
        *self.ended.entry(code).or_default() += 1;
    }
}

/// One Watch stream of `prefix`: read until `until` (opened again when it ends), or, when
/// `stall`, opened and never read.
pub async fn watcher(client: Client, prefix: String, stall: bool, until: Instant) -> Streams {
    let prefixes = [prefix.as_str()];
    let open = || client.watch(&prefixes);
    read_streams(open, stall, until, |s, event| match event {
        WatchEvent::Invalidated { .. } => s.invalidations += 1,
        WatchEvent::Resync { .. } => s.resyncs += 1,
        WatchEvent::Heartbeat { .. } => s.heartbeats += 1,
    })
    .await
}

/// One Subscribe stream of the soak's topic, read or stalled like [`watcher`].
pub async fn subscriber(client: Client, stall: bool, until: Instant) -> Streams {
    let notifications = client.notifications();
    let open = || notifications.subscribe(&[TOPIC]);
    read_streams(open, stall, until, |s, event| match event {
        NotificationEvent::Message { .. } => s.messages += 1,
        NotificationEvent::Missed { .. } => s.missed += 1,
        _ => {}
    })
    .await
}

/// Opens a stream with `open` and reads it until `until`, counting each event with `count`,
/// opening it again whenever it ends; or, when `stall`, opens it once and never reads it.
async fn read_streams<S, E, F>(
    mut open: impl FnMut() -> F,
    stall: bool,
    until: Instant,
    mut count: impl FnMut(&mut Streams, E),
) -> Streams
where
    F: std::future::Future<Output = Result<S, coherence_client::Error>>,
    S: futures::Stream<Item = Result<E, coherence_client::Error>> + Unpin,
{
    let mut s = Streams::default();
    let deadline = tokio::time::Instant::from_std(until);
    while Instant::now() < until {
        let mut stream = match open().await {
            Ok(stream) => stream,
            Err(err) => {
                s.ended(format!("{:?} (open)", err.code()));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        s.opened += 1;
        if stall {
            s.stalled += 1;
            tokio::time::sleep_until(deadline).await;
            return s;
        }
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = tokio::time::sleep_until(deadline) => return s,
            };
            match event {
                Some(Ok(event)) => count(&mut s, event),
                Some(Err(err)) => {
                    s.ended(format!("{:?}", err.code()));
                    break;
                }
                None => {
                    s.ended("end of stream".into());
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s
}

/// Publishes a 1 KiB notification every [`PUBLISH_PERIOD`] until `until`.
pub async fn publisher(client: Client, until: Instant) -> Tally {
    let mut tally = Tally::default();
    let notifications = client.notifications();
    let payload = vec![b'n'; 1024];
    let mut tick = tokio::time::interval(PUBLISH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        let start = Instant::now();
        match notifications.publish(TOPIC, &payload).await {
            Ok(_) => tally.ok("publish", start),
            Err(err) => tally.error("publish", &err),
        }
    }
    tally
}
