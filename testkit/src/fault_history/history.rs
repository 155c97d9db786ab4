//! The history checker: every operation of a fault run, with its start and end instants and
//! who answered it, and the judgement of everything the run was told against the design's
//! guarantees.
//!
//! Every answer that calls a version current is a *claim*: a check answering `current`, the
//! current version a check reports, the version a get returns. A claim made by a read that
//! began at `s` is false when the version was superseded (see [`super::order`]) before
//! `s - allowance`, where the allowance is `max_staleness` for bounded reads and zero for
//! strong ones (guarantees 1–3), and zero for any read through a source that itself made the
//! superseding bump before `s` (guarantee 7: own writes visible at once). The difference
//! between `s` and the supersession is the answer's *staleness*; bounded answers within the
//! allowance are counted and their maximum reported, so a run shows that the bounded path was
//! exercised. Values served by a [`coherent cache`](DataRead) are judged the same way against
//! the writes of a simulated source of truth.
//!
//! Besides: a check that fails instead of answering is a violation unless its sidecar was down
//! (an outage the test declared), a check that takes longer than the deadline is one (it must
//! never hang), and so is a worker that panicked. Each phase of a run is counted separately so
//! that a run too thin to have caught anything fails too (see [`Floors`]).
//!
//! All instants are `std::time::Instant` of this process, the same monotonic clock the
//! in-process sidecars use, so no clock agreement is assumed here either.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coherence_client::CheckSource;

use super::order::Index;
pub use super::report::{Floors, Limits, PhaseStats, Report};

/// Who an operation went through: a sidecar (through the thin gRPC client), a client mirror
/// ([`coherence_client::MirroredClient`]), or a [`coherence_client::CoherentCache`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Via {
    Sidecar(usize),
    Mirror(usize),
    Cache(usize),
}

impl std::fmt::Debug for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Sidecar(i) => write!(f, "s{i}"),
            Via::Mirror(i) => write!(f, "m{i}"),
            Via::Cache(i) => write!(f, "c{i}"),
        }
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// One bump of one key (a multi-key bump is one record per key).
#[derive(Debug, Clone)]
pub struct BumpRecord {
    pub key: String,
    pub start: Instant,
    pub end: Instant,
    /// Who made it: each of them must see it at once once it returned (guarantee 7).
    pub via: Vec<Via>,
    /// `Ok(version)` when it completed (`None`: the API does not say which version), else the
    /// error — a failed bump may or may not have happened.
    pub outcome: Result<Option<String>, String>,
}

/// One read of one key (a multi-key call is one record per key).
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub key: String,
    pub via: Via,
    pub strong: bool,
    pub start: Instant,
    pub end: Instant,
    pub read: Read,
}

#[derive(Debug, Clone)]
pub enum Read {
    /// A check of `token`.
    Check {
        token: String,
        answer: Result<CheckAnswer, String>,
    },
    /// A get, and the version it returned.
    Get { answer: Result<String, String> },
}

#[derive(Debug, Clone)]
pub struct CheckAnswer {
    pub current: bool,
    /// The current version the answer reported, if any.
    pub version: Option<String>,
    /// Where the sidecar says it came from; `None` for a client mirror, which does not say.
    pub source: Option<CheckSource>,
}

/// A write of `value` to the workload's simulated source of truth (values of a key only grow),
/// followed by a bump of `key` through `via`.
#[derive(Debug, Clone)]
pub struct DataWrite {
    pub key: String,
    pub value: u64,
    pub via: Via,
    /// When the bump after the write completed; `None` if it failed (no server is then bound
    /// to notice the write).
    pub bumped: Option<Instant>,
}

/// A value a coherent cache served for `key`.
#[derive(Debug, Clone)]
pub struct DataRead {
    pub key: String,
    pub value: u64,
    pub via: Via,
    pub strong: bool,
    pub start: Instant,
    pub end: Instant,
}

/// Everything recorded during one run.
pub struct History {
    inner: Mutex<Recorded>,
}

struct Recorded {
    bumps: Vec<BumpRecord>,
    reads: Vec<ReadRecord>,
    writes: Vec<DataWrite>,
    data_reads: Vec<DataRead>,
    /// Token → its key and the earliest end of an operation that returned it.
    seen: HashMap<String, (String, Instant)>,
    /// Phase boundaries, in order: an operation belongs to the phase its start falls in.
    phases: Vec<(Instant, &'static str)>,
    /// Windows in which a source was known to be down: its checks may fail.
    outages: Vec<(Via, Instant, Option<Instant>)>,
    /// Failures of the run itself (a panicked worker).
    failures: Vec<String>,
}

impl Default for History {
    fn default() -> History {
        History {
            inner: Mutex::new(Recorded {
                bumps: Vec::new(),
                reads: Vec::new(),
                writes: Vec::new(),
                data_reads: Vec::new(),
                seen: HashMap::new(),
                phases: vec![(Instant::now(), "run")],
                outages: Vec::new(),
                failures: Vec::new(),
            }),
        }
    }
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that an operation ending at `end` returned `token` of `key`.
    pub fn saw(&self, key: &str, token: &str, end: Instant) {
        saw(&mut self.lock(), key, token, end);
    }

    /// Operations that start from now on belong to `phase`.
    pub fn begin_phase(&self, phase: &'static str) {
        self.lock().phases.push((Instant::now(), phase));
    }

    /// `via` is down from now on (its checks may fail) until [`History::outage_ends`].
    pub fn outage_begins(&self, via: Via) {
        self.lock().outages.push((via, Instant::now(), None));
    }

    pub fn outage_ends(&self, via: Via) {
        let now = Instant::now();
        for outage in self.lock().outages.iter_mut() {
            if outage.0 == via && outage.2.is_none() {
                outage.2 = Some(now);
            }
        }
    }

    /// A failure of the run itself, e.g. a worker that panicked.
    pub fn record_failure(&self, failure: String) {
        self.lock().failures.push(failure);
    }

    pub fn record_bump(&self, bump: BumpRecord) {
        let mut r = self.lock();
        if let Ok(Some(v)) = &bump.outcome {
            saw(&mut r, &bump.key, v, bump.end);
        }
        r.bumps.push(bump);
    }

    pub fn record_read(&self, read: ReadRecord) {
        let mut r = self.lock();
        match &read.read {
            Read::Check {
                answer: Ok(answer), ..
            } => {
                if let Some(v) = &answer.version {
                    saw(&mut r, &read.key, v, read.end);
                }
            }
            Read::Get { answer: Ok(v) } => saw(&mut r, &read.key, v, read.end),
            _ => {}
        }
        r.reads.push(read);
    }

    pub fn record_write(&self, write: DataWrite) {
        self.lock().writes.push(write);
    }

    pub fn record_data_read(&self, read: DataRead) {
        self.lock().data_reads.push(read);
    }

    fn global_index(r: &Recorded) -> Index {
        Index::new(
            completed(&r.bumps).map(|b| (b.key.as_str(), b.start, b.end)),
            r.seen
                .iter()
                .map(|(token, (key, at))| (key.as_str(), token.as_str(), *at)),
        )
    }

    /// The index of completed bumps alone: a token is superseded when a completed bump began
    /// after it was seen, or when a completed bump returned a newer version of the key.
    fn completed_index(r: &Recorded) -> Index {
        Index::new(
            completed(&r.bumps).map(|b| (b.key.as_str(), b.start, b.end)),
            completed(&r.bumps).filter_map(|b| {
                let version = b.outcome.as_ref().ok()?.as_deref()?;
                Some((b.key.as_str(), version, b.end))
            }),
        )
    }

    /// Every token seen so far that is known to be superseded, with its key.
    pub fn superseded_tokens(&self) -> Vec<(String, String)> {
        let r = self.lock();
        let index = History::global_index(&r);
        r.seen
            .iter()
            .filter(|(token, (key, at))| index.superseded_at(key, token, Some(*at)).is_some())
            .map(|(token, (key, _))| (key.clone(), token.clone()))
            .collect()
    }

    /// Judges everything recorded so far.
    pub fn analyse(&self, limits: &Limits) -> Report {
        let r = self.lock();
        let mut judge = Judge {
            global: History::global_index(&r),
            completed: History::completed_index(&r),
            own: own_indexes(&r.bumps),
            seen: &r.seen,
            limits,
            report: Report {
                bumps_failed: r.bumps.iter().filter(|b| b.outcome.is_err()).count() as u64,
                data_writes: r.writes.len() as u64,
                violations: r.failures.clone(),
                ..Report::default()
            },
        };
        let phase_of = |at: Instant| -> &'static str {
            let i = r.phases.partition_point(|(start, _)| *start <= at);
            r.phases[i.saturating_sub(1)].1
        };
        for b in completed(&r.bumps) {
            judge.report.bumps_ok += 1;
            judge.phase(phase_of(b.start)).bumps_ok += 1;
        }
        for read in &r.reads {
            let in_outage = r.outages.iter().any(|(via, from, to)| {
                *via == read.via && *from <= read.end && to.is_none_or(|to| read.start <= to)
            });
            judge.read(read, phase_of(read.start), in_outage);
        }
        judge.data(&r.writes, &r.data_reads, &phase_of);
        judge.report
    }
}

fn saw(r: &mut Recorded, key: &str, token: &str, end: Instant) {
    let seen = r
        .seen
        .entry(token.to_string())
        .or_insert_with(|| (key.to_string(), end));
    seen.1 = seen.1.min(end);
}

fn completed(bumps: &[BumpRecord]) -> impl Iterator<Item = &BumpRecord> {
    bumps.iter().filter(|b| b.outcome.is_ok())
}

/// Per source: the bumps it made, as an index of when each token stopped being current for it.
fn own_indexes(bumps: &[BumpRecord]) -> HashMap<Via, Index> {
    let mut by_via: HashMap<Via, Vec<&BumpRecord>> = HashMap::new();
    for b in completed(bumps) {
        for via in &b.via {
            by_via.entry(*via).or_default().push(b);
        }
    }
    by_via
        .into_iter()
        .map(|(via, bumps)| {
            let index = Index::new(
                bumps.iter().map(|b| (b.key.as_str(), b.start, b.end)),
                bumps.iter().filter_map(|b| match &b.outcome {
                    Ok(Some(v)) => Some((b.key.as_str(), v.as_str(), b.end)),
                    _ => None,
                }),
            );
            (via, index)
        })
        .collect()
}

fn source_label(source: Option<CheckSource>) -> &'static str {
    match source {
        Some(CheckSource::Mirror) => "mirror",
        Some(CheckSource::Redis) => "redis",
        Some(CheckSource::FailClosed) => "fail_closed",
        Some(CheckSource::Unknown) => "unknown",
        None => "client",
    }
}

struct Judge<'a> {
    global: Index,
    /// Supersession by completed bumps alone (see [`Limits::strong_by_completed_bumps`]).
    completed: Index,
    own: HashMap<Via, Index>,
    seen: &'a HashMap<String, (String, Instant)>,
    limits: &'a Limits,
    report: Report,
}

impl Judge<'_> {
    fn phase(&mut self, phase: &'static str) -> &mut PhaseStats {
        self.report.phases.entry(phase).or_default()
    }

    fn seen(&self, token: &str) -> Option<Instant> {
        self.seen.get(token).map(|(_, at)| *at)
    }

    /// Counts an answer that called a version current `stale_by` after it was superseded;
    /// returns the allowance it exceeds, if it does.
    fn stale(&mut self, via: Via, strong: bool, stale_by: Duration) -> Option<Duration> {
        let r = &mut self.report;
        let allowance = if strong {
            r.max_strong_staleness = r.max_strong_staleness.max(stale_by);
            Duration::ZERO
        } else {
            r.max_default_staleness = r.max_default_staleness.max(stale_by);
            let max = r.max_staleness_by_source.entry(via).or_default();
            *max = (*max).max(stale_by);
            r.stale_within_bound += u64::from(stale_by <= self.limits.max_staleness);
            self.limits.max_staleness
        };
        (stale_by > allowance).then_some(allowance)
    }

    fn read(&mut self, read: &ReadRecord, phase: &'static str, in_outage: bool) {
        let kind = if read.strong { "strong" } else { "bounded" };
        let (current, reported) = match &read.read {
            Read::Get { answer } => {
                self.report.gets += 1;
                match answer {
                    Ok(version) => (None, Some(version.as_str())),
                    Err(_) => {
                        self.report.gets_failed += 1;
                        return;
                    }
                }
            }
            Read::Check { token, answer } => {
                let took = read.end.saturating_duration_since(read.start);
                // A call to a sidecar that is down may wait for the client's own timeout.
                if matches!(read.via, Via::Sidecar(_)) && !in_outage {
                    self.report.max_check_latency = self.report.max_check_latency.max(took);
                    if took > self.limits.check_deadline + self.limits.check_slack {
                        self.report.violations.push(format!(
                            "{kind} check of {} through {} took {took:?}, beyond deadline {:?} + slack {:?}",
                            read.key, read.via, self.limits.check_deadline, self.limits.check_slack
                        ));
                    }
                }
                let answer = match answer {
                    Ok(answer) => answer,
                    Err(_) if in_outage => {
                        self.report.checks_failed_in_outage += 1;
                        return;
                    }
                    Err(err) => {
                        self.report.violations.push(format!(
                            "{kind} check of {} through {} failed instead of answering: {err}",
                            read.key, read.via
                        ));
                        return;
                    }
                };
                if read.strong {
                    self.report.strong_checks += 1;
                } else {
                    self.report.default_checks += 1;
                }
                *self
                    .report
                    .checks_by_source
                    .entry(source_label(answer.source))
                    .or_default() += 1;
                let superseded = self
                    .global
                    .superseded_at(&read.key, token, self.seen(token))
                    .is_some_and(|at| at < read.start);
                if superseded {
                    self.phase(phase).superseded_answers += 1;
                }
                let vouched = answer.source != Some(CheckSource::FailClosed);
                let reported = answer.version.as_deref().filter(|v| vouched && *v != token);
                (answer.current.then_some(token.as_str()), reported)
            }
        };
        let stats = self.phase(phase);
        stats.answers += 1;
        *stats.answers_by_source.entry(read.via).or_default() += 1;
        // Gets always name a version: only checks show whether anything answers "current".
        if current.is_some() {
            stats.current_answers += 1;
            self.report.current_answers += 1;
        }
        if let Some(token) = current {
            self.claim(read, token, "answered current for");
        }
        if let Some(version) = reported {
            let what = match read.read {
                Read::Get { .. } => "returned",
                Read::Check { .. } => "reported as current",
            };
            self.claim(read, version, what);
        }
    }

    /// Judges the claim that `token` was current when `read` began.
    fn claim(&mut self, read: &ReadRecord, token: &str, what: &str) {
        let kind = if read.strong { "strong" } else { "bounded" };
        let seen = self.seen(token);
        let index = if read.strong && self.limits.strong_by_completed_bumps {
            &self.completed
        } else {
            &self.global
        };
        let superseded = index.superseded_at(&read.key, token, seen);
        if let Some(stale_by) = superseded.and_then(|at| read.start.checked_duration_since(at)) {
            if let Some(allowance) = self.stale(read.via, read.strong, stale_by) {
                self.report.violations.push(format!(
                    "{kind} read of {} through {} {what} {token}, superseded {stale_by:?} before the read began (allowed {allowance:?})",
                    read.key, read.via
                ));
            }
        }
        let own = self
            .own
            .get(&read.via)
            .and_then(|index| index.superseded_at(&read.key, token, seen));
        if let Some(own) = own.filter(|own| *own < read.start) {
            self.report.violations.push(format!(
                "{kind} read of {} through {} {what} {token}, {:?} after a bump through {} itself superseded it (own writes are visible at once)",
                read.key,
                read.via,
                read.start - own,
                read.via
            ));
        }
    }

    /// Values served by coherent caches against the writes to the source of truth.
    fn data(
        &mut self,
        writes: &[DataWrite],
        reads: &[DataRead],
        phase_of: &dyn Fn(Instant) -> &'static str,
    ) {
        let mut by_key: HashMap<&str, Vec<&DataWrite>> = HashMap::new();
        for w in writes.iter().filter(|w| w.bumped.is_some()) {
            by_key.entry(&w.key).or_default().push(w);
        }
        for read in reads {
            self.report.data_reads += 1;
            let stats = self.phase(phase_of(read.start));
            stats.answers += 1;
            *stats.answers_by_source.entry(read.via).or_default() += 1;
            let newer = by_key
                .get(read.key.as_str())
                .into_iter()
                .flatten()
                .filter(|w| w.value > read.value);
            // The earliest a newer value was announced, overall and by this source itself.
            let mut first: Option<Instant> = None;
            let mut own: Option<Instant> = None;
            for w in newer {
                let bumped = w.bumped.unwrap_or(read.start);
                first = Some(first.map_or(bumped, |f| f.min(bumped)));
                if w.via == read.via {
                    own = Some(own.map_or(bumped, |o| o.min(bumped)));
                }
            }
            let kind = if read.strong { "strong" } else { "bounded" };
            if let Some(stale_by) = first.and_then(|f| read.start.checked_duration_since(f)) {
                if let Some(allowance) = self.stale(read.via, read.strong, stale_by) {
                    self.report.violations.push(format!(
                        "{kind} cache read of {} through {} served value {}, older than a write whose bump completed {stale_by:?} before the read began (allowed {allowance:?})",
                        read.key, read.via, read.value
                    ));
                }
            }
            if let Some(own) = own.filter(|own| *own < read.start) {
                self.report.violations.push(format!(
                    "{kind} cache read of {} through {} served value {}, {:?} after its own write of a newer value was bumped",
                    read.key,
                    read.via,
                    read.value,
                    read.start - own
                ));
            }
        }
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
