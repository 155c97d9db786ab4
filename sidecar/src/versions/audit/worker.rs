//! The auditor's task: takes queued samples one at a time, reads Redis about each
//! ([`evidence`]), decides it ([`verdict::decide`]), re-checks a suspected violation, and counts
//! the verdict.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::versions::audit::evidence::{self, Question};
use crate::versions::audit::sampler::Sample;
use crate::versions::audit::verdict::{self, decide, Answer, Undecided, Verdict};
use crate::versions::state::VersionsState;
use crate::versions::version::Version;

/// How long a suspected violation waits before it is read again.
const RECHECK_DELAY: Duration = Duration::from_millis(100);

/// Most samples judged per second (one every 5 ms): bounds the auditor's background cost, in
/// this process and on Redis, whatever the answer rate. Samples arriving faster wait in the
/// bounded queue and, when it is full, are dropped and counted (an unbiased thinning).
pub const MAX_AUDITS_PER_SECOND: u32 = 200;

/// Audits queued samples one at a time until `shutdown` (the task the sidecar spawns).
pub async fn run(state: Arc<VersionsState>, mut shutdown: watch::Receiver<bool>) {
    let Some(mut pending) = state.audit.take_pending() else {
        return;
    };
    let spacing = Duration::from_secs(1) / MAX_AUDITS_PER_SECOND;
    loop {
        let started = tokio::time::Instant::now();
        let sample = tokio::select! {
            sample = pending.recv() => match sample {
                Some(sample) => sample,
                None => return,
            },
            _ = shutdown.wait_for(|down| *down) => return,
        };
        let verdict = judge(&state, &sample).await;
        if let Verdict::Violation { seq } = verdict {
            tracing::error!(
                key = %sample.key,
                token = %sample.token,
                superseded_at_seq = seq,
                source = sample.source.label(),
                "consistency violation: an answer called a token current although a bump had superseded it more than the bound before"
            );
        }
        state.audit.count(sample.source, verdict);
        tokio::time::sleep_until(started + spacing).await;
    }
}

/// Decides one sample; a suspected violation is read again after [`RECHECK_DELAY`] and counts
/// only if the second reading finds the same superseding bump.
async fn judge(state: &VersionsState, sample: &Sample) -> Verdict {
    let Some((_, Some(token_seq))) = Version::position(&sample.token) else {
        return Verdict::Undecided(Undecided::Unparsable);
    };
    let question = Question {
        key: &sample.key,
        token_seq,
        answer_at: sample.at,
    };
    let answer = Answer {
        token: &sample.token,
        at: sample.at,
        bound: sample.bound,
    };
    let first = match read(state, &question).await {
        Some(reading) => decide(&answer, &reading),
        None => return Verdict::Undecided(Undecided::RedisUnavailable),
    };
    if !matches!(first, Verdict::Violation { .. }) {
        return first;
    }
    state.metrics.audit.suspected.inc();
    tokio::time::sleep(RECHECK_DELAY).await;
    match read(state, &question).await {
        Some(reading) if decide(&answer, &reading) == first => first,
        Some(_) => Verdict::Undecided(Undecided::RecheckDisagreed),
        None => Verdict::Undecided(Undecided::RedisUnavailable),
    }
}

async fn read(state: &VersionsState, question: &Question<'_>) -> Option<verdict::Reading> {
    let keyspace = &state.keyspace;
    let scripts = state.link.scripts();
    state
        .link
        .run(
            "audit",
            state.settings.request_timeout,
            |mut conn| async move { evidence::read(scripts, &mut conn, keyspace, question).await },
        )
        .await
        .ok()
}
