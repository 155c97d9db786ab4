//! [`MirroredClient`], the application's handle on a mirror: local answers while the map is
//! trusted, the sidecar otherwise (and its answers remembered), and the Watch loop that keeps
//! the map current, reconnecting with backoff.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::lease::{self, MirrorLease};
use super::options::{MirrorEvent, MirrorOptions, MirrorStats};
use super::state::{bump_counter, MirrorState};
use crate::client::{CheckSource, Client, Consistency, Position, Version, WatchEvent};
use crate::error::Error;
use crate::freshness::Freshness;
use crate::observer::AnswerSampler;

/// A [`Client`] with an in-process mirror: `is_current` and `get_one` answered locally while
/// the mirror is provably fresh, by the sidecar otherwise. Cheap to clone; clones share the
/// mirror. The Watch task stops when the last clone is dropped. Create it inside a Tokio
/// runtime.
///
/// ```no_run
/// # async fn demo() -> Result<(), coherence_client::Error> {
/// use coherence_client::{Client, MirrorOptions};
///
/// let client = Client::connect("http://127.0.0.1:50051").await?;
/// let mirrored = client.with_mirror(MirrorOptions::default());
/// let stamp = mirrored.get_one("content").await?; // fills the mirror
/// // ... load and cache the data with `stamp` ...
/// if !mirrored.is_current("content", &stamp).await {
///     // superseded (or nobody could vouch for it): reload
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MirroredClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    state: Arc<MirrorState>,
    lease: Arc<MirrorLease>,
    sampler: Arc<AnswerSampler>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    audit_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock() {
            if let Some(task) = task.take() {
                task.abort();
            }
        }
        if let Some(task) = &self.audit_task {
            task.abort();
        }
    }
}

impl std::fmt::Debug for MirroredClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirroredClient")
            .field("client", &self.inner.client)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Client {
    /// This client with an in-process mirror (spawns its Watch task; call inside a Tokio
    /// runtime).
    pub fn with_mirror(self, options: MirrorOptions) -> MirroredClient {
        MirroredClient::new(self, options)
    }
}

impl MirroredClient {
    /// Starts mirroring through `client` (spawns the Watch task on the current runtime).
    pub fn new(client: Client, options: MirrorOptions) -> MirroredClient {
        let state = Arc::new(MirrorState::new(&options));
        let lease = Arc::new(MirrorLease::default());
        let sampler = Arc::new(AnswerSampler::new(
            options.audit_sample_rate,
            options.max_staleness,
        ));
        let audit_task = sampler
            .is_on()
            .then(|| tokio::spawn(Arc::clone(&sampler).run(client.observer())));
        let task = tokio::spawn(run_watch(
            Arc::clone(&state),
            Arc::clone(&lease),
            client.clone(),
            options,
        ));
        MirroredClient {
            inner: Arc::new(Inner {
                client,
                state,
                lease,
                sampler,
                task: Mutex::new(Some(task)),
                audit_task,
            }),
        }
    }

    /// Connects to a sidecar and starts mirroring with `options`.
    pub async fn connect(
        addr: impl AsRef<str>,
        options: MirrorOptions,
    ) -> Result<MirroredClient, Error> {
        Ok(Client::connect(addr).await?.with_mirror(options))
    }

    /// The thin client underneath (every call on it goes to the sidecar).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Whether `version` is still `key`'s current version, with bounded staleness: answered
    /// locally when possible, else by the sidecar's `Check`. Never errs: when nothing can vouch
    /// for the version it answers `false` (fail closed) — reload from the source of truth.
    ///
    /// ```no_run
    /// # async fn demo(mirrored: coherence_client::MirroredClient, stamp: coherence_client::Version) {
    /// if mirrored.is_current("content", &stamp).await {
    ///     // serve the cached value
    /// }
    /// # }
    /// ```
    pub async fn is_current(&self, key: &str, version: &Version) -> bool {
        if let Some(answer) = self.is_current_local(key, version) {
            return answer;
        }
        self.check_remote(key, version, Consistency::Bounded)
            .await
            .is_current()
    }

    /// [`MirroredClient::is_current`] with an explicit consistency: `Strong` reflects every
    /// bump completed before the call began — answered locally while the mirror holds a read
    /// lease from its sidecar ([`MirrorOptions::strong_leases`]), else by the sidecar.
    pub async fn is_current_with(
        &self,
        key: &str,
        version: &Version,
        consistency: Consistency,
    ) -> bool {
        self.freshness(key, version, consistency).await.is_current()
    }

    /// [`MirroredClient::is_current_with`], telling a superseded version
    /// ([`Freshness::Stale`]) from one nothing could vouch for ([`Freshness::Unverifiable`]).
    pub async fn freshness(
        &self,
        key: &str,
        version: &Version,
        consistency: Consistency,
    ) -> Freshness {
        match consistency {
            Consistency::Bounded => match self.is_current_local(key, version) {
                Some(true) => Freshness::Current,
                Some(false) => Freshness::Stale,
                None => self.check_remote(key, version, Consistency::Bounded).await,
            },
            Consistency::Strong => match self.strong_local(key, version) {
                Some(true) => Freshness::Current,
                Some(false) => Freshness::Stale,
                None => {
                    bump_counter(&self.inner.state.counters.misses);
                    self.check_remote(key, version, Consistency::Strong).await
                }
            },
        }
    }

    /// The local answer only: `Some(current)` when the mirror is trusted and knows `key`,
    /// `None` when only the sidecar can answer. Counts a hit when it answers.
    pub fn is_current_local(&self, key: &str, version: &Version) -> Option<bool> {
        let answer = self.inner.state.local_check(key, version);
        if answer.is_some() {
            bump_counter(&self.inner.state.counters.hits);
        }
        if answer == Some(true) {
            self.inner.sampler.answered_current(key, version.token());
        }
        answer
    }

    /// A strong check answered from the map under the mirror's read lease (rule 19), or `None`.
    fn strong_local(&self, key: &str, version: &Version) -> Option<bool> {
        if !self.inner.lease.allows(Instant::now()) {
            return None;
        }
        let answer = self.is_current_local(key, version)?;
        bump_counter(&self.inner.state.counters.strong_hits);
        Some(answer)
    }

    /// Whether strong checks are answered locally right now (a valid read lease, the map
    /// caught up with it, and trusted).
    pub fn holds_strong_lease(&self) -> bool {
        self.inner.lease.allows(Instant::now()) && self.is_trusted()
    }

    async fn check_remote(
        &self,
        key: &str,
        version: &Version,
        consistency: Consistency,
    ) -> Freshness {
        let state = &self.inner.state;
        if consistency == Consistency::Bounded {
            bump_counter(&state.counters.misses);
        }
        let asked_at = state.generation();
        match self
            .inner
            .client
            .check(&[(key, version)], consistency)
            .await
        {
            Ok(results) => {
                let Some(result) = results.into_iter().next() else {
                    return Freshness::Unverifiable;
                };
                let freshness = Freshness::of(&result);
                if result.source != CheckSource::FailClosed {
                    if let Some(current) = result.version {
                        state.fill(key, current, asked_at, result.as_of.as_ref());
                    }
                }
                freshness
            }
            Err(err) => {
                bump_counter(&state.counters.fallback_failures);
                tracing::debug!(error = %err, key, "check failed; answering not current");
                Freshness::Unverifiable
            }
        }
    }

    /// The current version of `key` (bounded staleness): from the mirror when trusted, else
    /// from the sidecar (and remembered). Use it to stamp before loading.
    pub async fn get_one(&self, key: &str) -> Result<Version, Error> {
        let state = &self.inner.state;
        if let Some(version) = state.local_version(key) {
            bump_counter(&state.counters.hits);
            return Ok(version);
        }
        bump_counter(&state.counters.misses);
        self.get_with(&[key], Consistency::Bounded)
            .await?
            .pop()
            .ok_or(Error::Malformed("Get answered no version"))
    }

    /// Current versions of `keys` from the sidecar (remembered by the mirror).
    pub async fn get_with(
        &self,
        keys: &[&str],
        consistency: Consistency,
    ) -> Result<Vec<Version>, Error> {
        let state = &self.inner.state;
        let asked_at = state.generation();
        let answers = self.inner.client.get_positioned(keys, consistency).await?;
        Ok(fill_all(state, keys, answers, asked_at))
    }

    /// Moves `keys` to new versions (call after your write committed). The mirror learns the
    /// new versions at once, so this process never again reports the old ones current.
    pub async fn bump(&self, keys: &[&str]) -> Result<Vec<Version>, Error> {
        let state = &self.inner.state;
        let asked_at = state.generation();
        let answers = self.inner.client.bump_positioned(keys).await?;
        Ok(fill_all(state, keys, answers, asked_at))
    }

    /// Sampled answers that never reached the sidecar's auditor (the mirror's buffer or the
    /// sidecar's queue was full, or a submission failed).
    pub fn audit_samples_dropped(&self) -> u64 {
        self.inner.sampler.dropped()
    }

    /// Whether local answers are allowed right now (stream open, heartbeat fresh).
    pub fn is_trusted(&self) -> bool {
        self.inner.state.is_trusted()
    }

    /// Waits until the mirror is trusted or `timeout` passes; returns whether it is.
    pub async fn wait_trusted(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.is_trusted() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.is_trusted()
    }

    /// Number of keys the mirror holds.
    pub fn mirrored_keys(&self) -> usize {
        self.inner.state.len()
    }

    /// The mirror's counters.
    pub fn stats(&self) -> MirrorStats {
        self.inner.state.stats()
    }
}

/// Fills the map with the sidecar's answers for `keys`; returns the versions.
fn fill_all(
    state: &MirrorState,
    keys: &[&str],
    answers: Vec<(Version, Option<Position>)>,
    asked_at: u64,
) -> Vec<Version> {
    keys.iter()
        .zip(answers)
        .map(|(key, (version, position))| {
            state.fill(key, version.clone(), asked_at, position.as_ref());
            version
        })
        .collect()
}

/// Keeps one Watch stream open and applies it to the map, reconnecting with backoff.
async fn run_watch(
    state: Arc<MirrorState>,
    lease: Arc<MirrorLease>,
    client: Client,
    options: MirrorOptions,
) {
    let prefixes: Vec<&str> = options.prefixes.iter().map(String::as_str).collect();
    let notify = |event: MirrorEvent| {
        if let Some(hook) = &options.hook {
            hook(&event);
        }
    };
    let mut backoff = options.backoff_min;
    let mut ever_connected = false;
    loop {
        let stream_no = lease.reset();
        let lease_id = if options.strong_leases {
            lease::new_lease_id()
        } else {
            String::new()
        };
        match client.watch_with_lease(&prefixes, &lease_id).await {
            Ok(mut stream) => {
                // Renews and acknowledges while this stream is open; aborted with it.
                let _lease_task = (!lease_id.is_empty()).then(|| {
                    AbortOnDrop(tokio::spawn(lease::run(
                        Arc::clone(&lease),
                        stream_no,
                        client.clone(),
                        lease_id.clone(),
                    )))
                });
                // The sidecar subscribed before answering, but it vouches for what reaches
                // this stream only once it is synced with Redis: its first heartbeat with a
                // fence age says so. Until then nothing is filled (see `vouched` below).
                if ever_connected {
                    bump_counter(&state.counters.reconnects);
                    state.resync("watch stream reopened");
                    notify(MirrorEvent::Resync {
                        reason: "watch stream reopened".into(),
                    });
                } else {
                    state.clear();
                }
                notify(MirrorEvent::Connected {
                    reconnect: ever_connected,
                });
                ever_connected = true;
                let mut vouched = false;
                let reason = loop {
                    let next = match tokio::time::timeout(options.idle_timeout, stream.next()).await
                    {
                        Err(_) => break format!("no event for {:?}", options.idle_timeout),
                        Ok(None) => break "stream ended".to_string(),
                        Ok(Some(Err(err))) => break err.to_string(),
                        Ok(Some(Ok(event))) => event,
                    };
                    let acknowledge = !matches!(next, WatchEvent::Heartbeat { .. });
                    match next {
                        WatchEvent::Invalidated {
                            key,
                            version,
                            sequence,
                            epoch,
                            ..
                        } => {
                            let position =
                                (!epoch.is_empty()).then_some(Position { epoch, sequence });
                            state.invalidate(&key, version, position.as_ref())
                        }
                        WatchEvent::Resync { reason } => {
                            state.resync(&reason);
                            notify(MirrorEvent::Resync { reason });
                        }
                        WatchEvent::Heartbeat {
                            fence_age,
                            max_staleness,
                        } => {
                            if fence_age.is_some() && !vouched {
                                // From here on every bump reaches this stream or is covered
                                // by a Resync. Fills asked before may predate bumps the
                                // sidecar never announced (it was not yet subscribed):
                                // refuse them, then accept new ones.
                                vouched = true;
                                state.vouch();
                            }
                            state.heartbeat(fence_age, max_staleness);
                            if fence_age.is_some() {
                                backoff = options.backoff_min;
                            }
                        }
                    }
                    lease.applied(stream.position(), acknowledge);
                };
                lease.reset();
                state.untrust();
                state.vouching.store(false, Ordering::SeqCst);
                state.resync(&reason);
                notify(MirrorEvent::Disconnected { reason });
            }
            Err(err) => tracing::debug!(error = %err, "cannot open the watch stream; retrying"),
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(options.backoff_max);
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `base` plus up to 25% so that many clients do not reconnect in lockstep.
fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
}
