//! Get, Check and Bump: the cache-version operations, independent of gRPC.
//!
//! Checks are answered from the mirror when its shard is proven fresh (bounded staleness) —
//! strong ones only under a read lease (`versions/leases`) — and otherwise from a coalesced Redis read that writes nothing (a key without a version is simply
//! not current); when neither can vouch for a version within the
//! deadline the answer is "not current" (fail closed, guarantee 4). A bump's new versions go
//! into the mirror before the call returns, so this sidecar sees its own writes at once
//! (guarantee 7).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::{Labels1, Labels2};
use crate::redis::link::LinkError;
use crate::versions::audit::sampler::{AnswerSource, Sample};
use crate::versions::batcher::{BatchError, Batcher, ReadVersion};
use crate::versions::mirror::TokenCheck;
use crate::versions::shard_script::VersionsMode;
use crate::versions::state::VersionsState;
use crate::versions::version::{Version, VersionAt, VersionStr};

/// Where a check was answered from (the metric label `source`, and `CheckResult.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckSource {
    Mirror = 0,
    Redis = 1,
    FailClosed = 2,
}

impl CheckSource {
    const ALL: [CheckSource; 3] = [
        CheckSource::Mirror,
        CheckSource::Redis,
        CheckSource::FailClosed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CheckSource::Mirror => "mirror",
            CheckSource::Redis => "redis",
            CheckSource::FailClosed => "fail_closed",
        }
    }
}

/// The series of `coherence_checks_total`, one per (result, source), resolved once: every
/// check counts one, and a label lookup per check costs more than the check itself when the
/// mirror answers. Resolving them also makes every series exist (at 0) from the start, as
/// `rate()` wants.
struct CheckCounters([Counter; 6]);

impl CheckCounters {
    fn new(checks: &Family<Labels2, Counter>) -> CheckCounters {
        CheckCounters(std::array::from_fn(|i| {
            let (current, source) = (i < 3, CheckSource::ALL[i % 3]);
            let result = if current { "current" } else { "stale" };
            checks
                .get_or_create(&[("result", result), ("source", source.label())])
                .clone()
        }))
    }

    fn count(&self, current: bool, source: CheckSource) {
        let index = if current { 0 } else { 3 } + source as usize;
        self.0[index].inc();
    }
}

/// The series of `coherence_strong_answers_total`, resolved once (see [`CheckCounters`]).
struct StrongCounters {
    mirror: Counter,
    redis: Counter,
}

impl StrongCounters {
    fn new(strong: &Family<Labels1, Counter>) -> StrongCounters {
        StrongCounters {
            mirror: strong.get_or_create(&[("source", "mirror")]).clone(),
            redis: strong.get_or_create(&[("source", "redis")]).clone(),
        }
    }

    /// Counts one strong answer: from the mirror under a read lease, or not.
    fn count(&self, local: bool) {
        if local {
            self.mirror.inc();
        } else {
            self.redis.inc();
        }
    }
}

/// The answer to one checked entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub current: bool,
    /// The current version, when known, and as of when.
    pub version: Option<VersionAt>,
    pub source: CheckSource,
    /// Redis holds no current version for the key (never issued, expired, or its shard's
    /// epoch is about to rotate): no token is current, and a `Get` would issue one.
    pub no_version: bool,
}

/// The cache-version operations of one sidecar.
pub struct Versions {
    state: Arc<VersionsState>,
    getter: Arc<Batcher>,
    reader: Arc<Batcher>,
    bumper: Arc<Batcher>,
    check_counters: CheckCounters,
    strong_counters: StrongCounters,
}

impl Versions {
    pub fn new(state: Arc<VersionsState>) -> Versions {
        Versions {
            getter: Batcher::new(Arc::clone(&state), VersionsMode::Get),
            reader: Batcher::new(Arc::clone(&state), VersionsMode::Read),
            bumper: Batcher::new(Arc::clone(&state), VersionsMode::Bump),
            check_counters: CheckCounters::new(&state.metrics.checks),
            strong_counters: StrongCounters::new(&state.metrics.strong_answers),
            state,
        }
    }

    pub fn state(&self) -> &Arc<VersionsState> {
        &self.state
    }

    /// The batcher of Get's Redis reads (which issue a first version where there is none).
    pub fn getter(&self) -> &Arc<Batcher> {
        &self.getter
    }

    /// The batcher of Check's (and reconciliation's) Redis reads, which write nothing.
    pub fn reader(&self) -> &Arc<Batcher> {
        &self.reader
    }

    pub fn bumper(&self) -> &Arc<Batcher> {
        &self.bumper
    }

    /// Runs `keys` through `batcher` within `request_timeout` (the wait in the batcher's queue
    /// included): past it the call is withdrawn — its keys are not sent if its batch has not
    /// been — and answers `UNAVAILABLE`.
    async fn within_request_timeout(
        &self,
        batcher: &Arc<Batcher>,
        keys: Vec<String>,
    ) -> Result<Vec<ReadVersion>, BatchError> {
        let timeout = self.state.settings.request_timeout;
        tokio::time::timeout(timeout, batcher.run(keys))
            .await
            .unwrap_or(Err(BatchError::Link(LinkError::Timeout(timeout))))
    }

    /// Current versions of `keys`, in order.
    pub async fn get(&self, keys: &[String], strong: bool) -> Result<Vec<VersionAt>, BatchError> {
        let now = Instant::now();
        let mut out: Vec<Option<VersionAt>> = vec![None; keys.len()];
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let shard = self.state.keyspace.shard_of(key);
            let hit = match (strong, &self.state.leases.holder) {
                (false, _) => self.state.mirror.lookup(shard, key, now),
                (true, None) => None,
                (true, Some(holder)) => self
                    .state
                    .mirror
                    .lookup_if(shard, key, now, |e, s| holder.allows(shard, now, e, s)),
            };
            if strong {
                self.strong_counters.count(hit.is_some());
            }
            match hit {
                Some(known) => {
                    self.maybe_sample(key, &known.version, now, false, CheckSource::Mirror);
                    out[i] = Some(known)
                }
                None => missing.push(i),
            }
        }
        if !missing.is_empty() {
            let read_keys = missing.iter().map(|&i| keys[i].clone()).collect();
            let reads = self.within_request_timeout(&self.getter, read_keys).await?;
            for (i, read) in missing.into_iter().zip(reads) {
                out[i] = Some(
                    read.known()
                        .ok_or_else(|| LinkError::Unavailable("Get answered no version".into()))?,
                );
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Whether each `(key, version)` is current, in order. Never fails: what cannot be vouched
    /// for within the check deadline is answered `current = false`.
    pub async fn check(&self, entries: &[(String, String)], strong: bool) -> Vec<CheckOutcome> {
        let now = Instant::now();
        let mut out: Vec<Option<CheckOutcome>> = vec![None; entries.len()];
        let mut missing = Vec::new();
        for (i, (key, token)) in entries.iter().enumerate() {
            let shard = self.state.keyspace.shard_of(key);
            let hit = match (strong, &self.state.leases.holder) {
                (false, _) => self.state.mirror.check_token(shard, key, token, now),
                (true, None) => None,
                (true, Some(holder)) => {
                    self.state
                        .mirror
                        .check_token_if(shard, key, token, now, |e, s| {
                            holder.allows(shard, now, e, s)
                        })
                }
            };
            match hit {
                Some(TokenCheck::Current { epoch, as_of }) => {
                    out[i] = Some(CheckOutcome {
                        current: true,
                        version: Some(VersionAt {
                            version: VersionStr::from(token.as_str()),
                            epoch,
                            as_of,
                        }),
                        source: CheckSource::Mirror,
                        no_version: false,
                    })
                }
                Some(TokenCheck::Differs(known)) if !may_be_newer(token, &known) => {
                    out[i] = Some(CheckOutcome {
                        current: false,
                        version: Some(known),
                        source: CheckSource::Mirror,
                        no_version: false,
                    })
                }
                _ => missing.push(i),
            }
            if strong {
                self.strong_counters
                    .count(missing.last().is_none_or(|&m| m != i));
            }
        }
        if !missing.is_empty() {
            let read_keys = missing.iter().map(|&i| entries[i].0.clone()).collect();
            let deadline = self.state.settings.check_deadline;
            let read = tokio::time::timeout(deadline, self.reader.run(read_keys)).await;
            match read {
                Ok(Ok(reads)) => {
                    for (i, read) in missing.into_iter().zip(reads) {
                        let known = read.known();
                        out[i] = Some(CheckOutcome {
                            current: known.as_ref().is_some_and(|k| *k.version == *entries[i].1),
                            no_version: known.is_none(),
                            version: known,
                            source: CheckSource::Redis,
                        });
                    }
                }
                Ok(Err(_)) | Err(_) => {
                    for i in missing {
                        out[i] = Some(CheckOutcome {
                            current: false,
                            version: None,
                            source: CheckSource::FailClosed,
                            no_version: false,
                        });
                    }
                }
            }
        }
        let outcomes: Vec<CheckOutcome> = out.into_iter().flatten().collect();
        for (o, (key, token)) in outcomes.iter().zip(entries) {
            self.check_counters.count(o.current, o.source);
            if o.current {
                self.maybe_sample(key, token, now, strong, o.source);
            }
        }
        outcomes
    }

    /// Hands the auditor the answer "`token` of `key` is current", given by a check (or Get)
    /// that began at `at`, if it samples it.
    #[inline]
    fn maybe_sample(&self, key: &str, token: &str, at: Instant, strong: bool, source: CheckSource) {
        let audit = &self.state.audit;
        if !audit.wants_sample() {
            return;
        }
        let source = match source {
            CheckSource::Mirror => AnswerSource::Mirror,
            CheckSource::Redis => AnswerSource::Redis,
            CheckSource::FailClosed => return,
        };
        audit.submit(Sample {
            key: key.to_string(),
            token: token.to_string(),
            at,
            bound: if strong {
                Duration::ZERO
            } else {
                self.state.settings.max_staleness
            },
            source,
        });
    }

    /// Moves every key to a version never issued before; returns them in order. A key named
    /// twice gets one new version. Concurrent bumps share script calls (see [`Batcher`]).
    pub async fn bump(&self, keys: &[String]) -> Result<Vec<VersionAt>, BatchError> {
        let bumped = self
            .within_request_timeout(&self.bumper, keys.to_vec())
            .await?;
        let distinct: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
        self.state.metrics.bumps.inc_by(distinct.len() as u64);
        bumped
            .into_iter()
            .map(|read| {
                read.known()
                    .ok_or_else(|| LinkError::Unavailable("Bump answered no version".into()).into())
            })
            .collect()
    }
}

/// Whether `token` could be newer than the mirrored version `known`: of another epoch, or of a
/// later sequence than the mirror is current as of. Then only Redis can tell.
fn may_be_newer(token: &str, known: &VersionAt) -> bool {
    let Some((epoch, seq)) = Version::position(token) else {
        return false;
    };
    epoch != &*known.epoch || seq.is_some_and(|s| s > known.as_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_later_or_foreign_tokens_go_to_redis() {
        let known = VersionAt {
            version: Arc::from("e1.7.b"),
            epoch: Arc::from("e1"),
            as_of: 9,
        };
        assert!(!may_be_newer("e1.5.a", &known));
        assert!(
            !may_be_newer("e1.9.a", &known),
            "the mirror is current as of 9"
        );
        assert!(may_be_newer("e1.10.a", &known));
        assert!(may_be_newer("e2.1.a", &known));
        assert!(!may_be_newer("garbage", &known));
    }
}
