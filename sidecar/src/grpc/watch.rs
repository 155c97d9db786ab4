//! One Watch stream: the Watch ring read at the pace the client reads, filtered by its
//! prefixes.
//!
//! The stream holds no queue of its own: it takes the next event from the shared
//! [`ByteRing`] only when tonic asks for one, which it does only while HTTP/2 flow control
//! lets it send. A client that stops reading therefore pins nothing but tonic's and hyper's
//! send buffers (bounded per stream, see docs/operations.md); when it reads again and the ring
//! has dropped what it had not read, it gets a `Resync` first (watch contract, rule 2) and
//! goes on with the oldest event kept.

use std::pin::Pin;

use coherence_proto::v1 as pb;
use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tonic::Status;

use crate::buffers::ring::{Received, RingReader};
use crate::grpc::prefix_set::PrefixSet;
use crate::versions::audit::canary::is_canary;
use crate::versions::leases::mirrors::StreamTracker;
use crate::versions::state::WatchItem;

/// The sidecar's settings every heartbeat repeats, so that clients need not be told them.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatBounds {
    pub max_staleness_ms: u64,
    pub heartbeat_interval_ms: u64,
}

/// The response stream of Watch.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

/// What one stream holds while open.
pub struct WatchFeed {
    pub events: RingReader<WatchItem>,
    pub prefixes: PrefixSet,
    pub bounds: HeartbeatBounds,
    pub shutdown: watch::Receiver<bool>,
    /// The stream's slot (`max_watch_streams`), released when the stream is dropped.
    pub slot: OwnedSemaphorePermit,
    /// `coherence_watch_streams`, counted down when the stream is dropped.
    pub open: Gauge,
    /// Set when the stream was opened with a `lease_id` and may hold mirror leases: what it
    /// passes and delivers is recorded for the acknowledgements that wait for its mirror.
    pub leases: Option<StreamTracker>,
}

impl Drop for WatchFeed {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl WatchFeed {
    /// The stream: events until the client goes away (tonic drops it), or `UNAVAILABLE` when
    /// the sidecar shuts down.
    pub fn into_stream(self) -> WatchStream {
        self.open.inc();
        Box::pin(futures::stream::unfold(Some(self), |feed| async move {
            let mut feed = feed?;
            match feed.next().await {
                Some(event) => Some((Ok(event), Some(feed))),
                None => Some((Err(Status::unavailable("sidecar is shutting down")), None)),
            }
        }))
    }

    /// The next event for this stream; `None` once the sidecar shuts down.
    async fn next(&mut self) -> Option<pb::WatchEvent> {
        use pb::watch_event::Event;
        loop {
            // Where this stream stood: a `Lagged` covers the items from here on.
            let before = self.events.position();
            let received = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|down| *down) => return None,
                received = self.events.recv() => received,
            };
            // One past the item just taken: positions grow along the stream.
            let position = self.events.position();
            // What the mirror must apply before it counts as past the items this event covers:
            // the event itself, or for `Lagged` the first item it missed (its Resync covers
            // every index from `before` on, however far past them the reader now stands).
            let covers_from = match received {
                Received::Lagged(_) => before + 1,
                _ => position,
            };
            let changes_map = matches!(
                received,
                Received::Item(WatchItem::Invalidated(_) | WatchItem::Resync(_))
                    | Received::Lagged(_)
            );
            let event = match received {
                Received::Item(WatchItem::Invalidated(inv)) => {
                    if !self.prefixes.matches(&inv.key) || is_canary(&inv.key) {
                        if let Some(leases) = &self.leases {
                            leases.passed(position, None);
                        }
                        continue;
                    }
                    Event::Invalidated(pb::Invalidation {
                        key: inv.key.clone(),
                        version: Some(pb::Version {
                            token: inv.version.to_string(),
                            epoch: inv.epoch.to_string(),
                            as_of_sequence: inv.seq,
                        }),
                        sequence: inv.seq,
                        shard: inv.shard,
                        bumped_at_unix_ms: inv.bumped_at_unix_ms,
                    })
                }
                Received::Item(WatchItem::Resync(reason)) => Event::Resync(pb::Resync {
                    reason: reason.to_string(),
                }),
                Received::Item(WatchItem::Heartbeat {
                    fence_age_ms,
                    sent_at_unix_us,
                }) => Event::Heartbeat(pb::Heartbeat {
                    fence_age_ms,
                    sent_at_unix_us,
                    max_staleness_ms: self.bounds.max_staleness_ms,
                    heartbeat_interval_ms: self.bounds.heartbeat_interval_ms,
                }),
                Received::Lagged(n) => Event::Resync(pb::Resync {
                    reason: format!(
                        "watcher fell behind and missed {n} events (watch_buffer_bytes)"
                    ),
                }),
            };
            let position = match &self.leases {
                Some(leases) => {
                    leases.passed(position, changes_map.then_some(covers_from));
                    position
                }
                None => 0,
            };
            return Some(pb::WatchEvent {
                event: Some(event),
                position,
            });
        }
    }
}
