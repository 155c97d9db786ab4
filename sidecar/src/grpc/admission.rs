//! Admission of long-lived streams: at most a configured number open at once, so that the
//! memory they may hold (HTTP/2 send buffers, their prefix sets) adds up to a budget
//! (docs/operations.md). One more is refused at once with `RESOURCE_EXHAUSTED` naming the
//! setting, and counted in `coherence_limits_reached_total{limit}`.
//!
//! Watch and Subscribe keep their slot inside their own feed; streams that are only a
//! service's own stream with a slot attached (WatchRole, health Watch) use [`Slotted`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
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

    /// `stream` holding a slot until it is dropped (the client went away, or it ended); or
    /// `RESOURCE_EXHAUSTED`, as [`StreamSlots::take`].
    pub fn hold<S>(&self, stream: S) -> Result<Slotted<S>, Status> {
        Ok(Slotted::new(stream, self.take()?))
    }
}

/// A response stream and its slot, released when tonic drops the stream.
pub struct Slotted<S> {
    stream: S,
    _slot: OwnedSemaphorePermit,
}

impl<S> Slotted<S> {
    /// `stream` holding `slot` (from [`StreamSlots::take`]).
    pub fn new(stream: S, slot: OwnedSemaphorePermit) -> Slotted<S> {
        Slotted {
            stream,
            _slot: slot,
        }
    }
}

impl<S: Stream + Unpin> Stream for Slotted<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}
