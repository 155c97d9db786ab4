//! The `coherence.v1.Observer` gRPC service: client mirrors submit their sampled answers to be
//! judged by this sidecar's auditor, and operators read its SLO counts (`coherencectl slo`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use coherence_proto::v1 as pb;
use coherence_proto::v1::observer_server::Observer;
use tonic::{Request, Response, Status};

use crate::grpc::validation::Limits;
use crate::versions::audit::clock::wall_us;
use crate::versions::audit::sampler::{AnswerSource, Sample};
use crate::versions::state::VersionsState;

/// Oldest answer accepted: an answer older than this is refused (its log entries are likely
/// trimmed, and a client that old is confused about time).
const MAX_ANSWER_AGE: Duration = Duration::from_secs(600);
/// How far in the future an answer's wall-clock time may lie (clock reads on one host).
const FUTURE_SLACK: Duration = Duration::from_millis(50);
/// Longest token accepted (the sidecar's own are under 60 bytes).
const MAX_TOKEN_BYTES: usize = 256;

pub struct ObserverService {
    state: Arc<VersionsState>,
    limits: Limits,
}

impl ObserverService {
    pub fn new(state: Arc<VersionsState>, limits: Limits) -> Self {
        ObserverService { state, limits }
    }

    /// The sample an answer stands for, or why it is refused.
    fn sample(
        &self,
        i: usize,
        answer: pb::AnsweredCheck,
        now: Instant,
        now_us: u64,
    ) -> Result<Sample, Status> {
        self.limits
            .check_key(format_args!("answers[{i}].key"), &answer.key, false)?;
        if answer.token.is_empty() || answer.token.len() > MAX_TOKEN_BYTES {
            return Err(Status::invalid_argument(format!(
                "answers[{i}].token: must be 1 to {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let slack = FUTURE_SLACK.as_micros() as u64;
        if answer.answered_at_unix_us > now_us + slack {
            return Err(Status::invalid_argument(format!(
                "answers[{i}].answered_at_unix_us: in the future"
            )));
        }
        let age = Duration::from_micros(now_us.saturating_sub(answer.answered_at_unix_us));
        let at = now
            .checked_sub(age)
            .filter(|_| age <= MAX_ANSWER_AGE)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "answers[{i}].answered_at_unix_us: more than {} s ago",
                    MAX_ANSWER_AGE.as_secs()
                ))
            })?;
        let own = self.state.settings.max_staleness;
        let bound = match answer.max_staleness_ms {
            0 => own,
            ms => own.min(Duration::from_millis(ms)),
        };
        Ok(Sample {
            key: answer.key,
            token: answer.token,
            at,
            bound,
            source: AnswerSource::ClientMirror,
        })
    }
}

#[tonic::async_trait]
impl Observer for ObserverService {
    async fn submit_answers(
        &self,
        request: Request<pb::SubmitAnswersRequest>,
    ) -> Result<Response<pb::SubmitAnswersResponse>, Status> {
        let answers = request.into_inner().answers;
        self.limits.check_count("answers", answers.len())?;
        let (now, now_us) = (Instant::now(), wall_us().max(0) as u64);
        let samples = answers
            .into_iter()
            .enumerate()
            .map(|(i, answer)| self.sample(i, answer, now, now_us))
            .collect::<Result<Vec<_>, Status>>()?;
        let total = samples.len() as u64;
        let dropped = self.state.audit.submit_all(samples);
        Ok(Response::new(pb::SubmitAnswersResponse {
            accepted: (total - dropped) as u32,
            dropped: dropped as u32,
        }))
    }

    async fn get_slo(
        &self,
        _request: Request<pb::GetSloRequest>,
    ) -> Result<Response<pb::SloReport>, Status> {
        let state = &self.state;
        let audit = &state.metrics.audit;
        let totals = audit.totals();
        let propagation = audit.canary_propagation.snapshot();
        Ok(Response::new(pb::SloReport {
            server_id: state.settings.server_id.clone(),
            audit_sample_rate: state.settings.audit_sample_rate,
            correct: totals.correct,
            stale_within_bound: totals.stale_within_bound,
            violations: totals.violations,
            undecided: totals.undecided,
            suspected: audit.suspected.get(),
            dropped: audit.dropped.get(),
            propagation_bucket_upper_bounds: propagation.upper_bounds,
            propagation_bucket_cumulative_counts: propagation.cumulative_counts,
            propagation_count: propagation.count,
            propagation_sum_seconds: propagation.sum_seconds,
            max_staleness_ms: state.settings.max_staleness.as_millis() as u64,
        }))
    }
}
