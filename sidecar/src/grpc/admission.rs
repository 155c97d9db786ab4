//! Admission of long-lived streams: at most a configured number open at once, so that the
//! memory they may hold (HTTP/2 send buffers, their prefix sets) adds up to a budget
//! (docs/operations.md). One more is refused at once with `RESOURCE_EXHAUSTED` naming the
//! setting, and counted in `coherence_limits_reached_total{limit}`.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::metrics::Metrics;

/// Slots for streams of one kind.
#[derive(Clone)]
pub struct StreamSlots {
    slots: Arc<Semaphore>,
    max: usize,
    setting: &'static str,
    metrics: Metrics,
}

impl StreamSlots {
    /// `max` slots, named after `setting` in refusals.
    pub fn new(max: usize, setting: &'static str, metrics: Metrics) -> StreamSlots {
        StreamSlots {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
            setting,
            metrics,
        }
    }

    /// A slot, held until the permit is dropped with the stream; or `RESOURCE_EXHAUSTED`.
    pub fn take(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            self.metrics.limit_reached(self.setting);
            Status::resource_exhausted(format!(
                "{} streams are open, the most {} allows",
                self.max, self.setting
            ))
        })
    }
}
