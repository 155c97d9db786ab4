//! The `coherence.v1.Notifications` gRPC service: Publish with the payload limit, and Subscribe
//! streams fed by the sidecar's notification hub.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use coherence_proto::v1 as pb;
use coherence_proto::v1::notifications_server::Notifications as NotificationsApi;
use futures::Stream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tonic::{Request, Response, Status};

use crate::buffers::ring::{Received, RingReader};
use crate::grpc::admission::StreamSlots;
use crate::grpc::validation::Limits;
use crate::load_balancing::notifications::{FrameError, NoteEvent, Notifications, PublishError};

/// The gRPC face of one sidecar's [`Notifications`].
pub struct NotificationsService {
    hub: Arc<Notifications>,
    limits: Limits,
    max_payload_bytes: usize,
    /// `max_subscribe_streams`.
    subscribe_slots: StreamSlots,
    shutdown: watch::Receiver<bool>,
}

impl NotificationsService {
    pub fn new(
        hub: Arc<Notifications>,
        limits: Limits,
        max_payload_bytes: usize,
        subscribe_slots: StreamSlots,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        NotificationsService {
            hub,
            limits,
            max_payload_bytes,
            subscribe_slots,
            shutdown,
        }
    }

    /// The largest request tonic should decode: a payload over the limit must still reach the
    /// handler, so that it is refused with INVALID_ARGUMENT naming the field.
    pub fn max_message_bytes(limits: &Limits, max_payload_bytes: usize) -> usize {
        max_payload_bytes
            .saturating_add(limits.max_key_bytes)
            .saturating_add(1024)
            .max(4 * 1024 * 1024)
    }
}

#[tonic::async_trait]
impl NotificationsApi for NotificationsService {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let req = request.into_inner();
        self.limits.check_name("topic", &req.topic)?;
        if req.payload.len() > self.max_payload_bytes {
            return Err(Status::invalid_argument(format!(
                "payload: {} bytes, more than max_payload_bytes ({})",
                req.payload.len(),
                self.max_payload_bytes
            )));
        }
        let receiving_sidecars = self
            .hub
            .publish(&req.topic, req.payload)
            .await
            .map_err(|e| match e {
                PublishError::Frame(FrameError::TooLong { field: "topic", .. }) => {
                    Status::invalid_argument(e.to_string())
                }
                PublishError::Frame(_) => Status::failed_precondition(e.to_string()),
                PublishError::Link(_) => Status::unavailable(e.to_string()),
            })?;
        Ok(Response::new(pb::PublishResponse { receiving_sidecars }))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        self.limits.check_topics(&req.topics)?;
        let slot = self.subscribe_slots.take()?;
        // Listen first, then wait for the subscription: nothing after `subscribed` is missed
        // silently.
        let feed = SubscribeFeed {
            events: self.hub.events(),
            live: self.hub.live(),
            hub: Arc::clone(&self.hub),
            wanted: req.topics.iter().cloned().collect(),
            topics: req.topics,
            subscribed: false,
            shutdown: self.shutdown.clone(),
            _slot: slot,
        };
        Ok(Response::new(feed.into_stream()))
    }
}

/// The response stream of Subscribe.
pub type SubscribeStream =
    Pin<Box<dyn Stream<Item = Result<pb::NotificationEvent, Status>> + Send>>;

/// One Subscribe stream: `Subscribed` once the hub is live, then the hub's ring read at the
/// pace the client reads (no queue of its own, like a Watch stream: a client that stops
/// reading pins only HTTP/2 send buffers, and gets `MissedMessages` for what the ring dropped
/// meanwhile).
struct SubscribeFeed {
    events: RingReader<NoteEvent>,
    live: watch::Receiver<bool>,
    hub: Arc<Notifications>,
    topics: Vec<String>,
    wanted: HashSet<String>,
    subscribed: bool,
    shutdown: watch::Receiver<bool>,
    /// The stream's slot (`max_subscribe_streams`), released with the stream.
    _slot: OwnedSemaphorePermit,
}

impl SubscribeFeed {
    fn into_stream(self) -> SubscribeStream {
        Box::pin(futures::stream::unfold(Some(self), |feed| async move {
            let mut feed = feed?;
            match feed.next().await {
                Some(event) => Some((Ok(pb::NotificationEvent { event: Some(event) }), Some(feed))),
                None => Some((Err(Status::unavailable("sidecar is shutting down")), None)),
            }
        }))
    }

    /// The next event; `None` once the sidecar shuts down.
    async fn next(&mut self) -> Option<pb::notification_event::Event> {
        use pb::notification_event::Event;
        if !self.subscribed {
            tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|down| *down) => return None,
                up = self.live.wait_for(|up| *up) => if up.is_err() { return None },
            }
            self.subscribed = true;
            return Some(Event::Subscribed(pb::Subscribed {
                topics: self.topics.clone(),
            }));
        }
        let metrics = self.hub.metrics();
        loop {
            let received = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|down| *down) => return None,
                received = self.events.recv() => received,
            };
            return Some(match received {
                Received::Item(NoteEvent::Message(note)) => {
                    if !self.wanted.contains(&note.topic) {
                        continue;
                    }
                    metrics.notifications_delivered.inc();
                    Event::Notification(pb::Notification {
                        topic: note.topic.clone(),
                        payload: note.payload.clone(),
                        publisher: note.publisher.clone(),
                        published_at_unix_ms: note.published_at_unix_ms,
                    })
                }
                Received::Item(NoteEvent::Missed(reason)) => {
                    metrics
                        .notifications_missed
                        .get_or_create(&[("reason", "reconnect")])
                        .inc();
                    Event::Missed(pb::MissedMessages {
                        reason: reason.to_string(),
                    })
                }
                Received::Lagged(n) => {
                    metrics
                        .notifications_missed
                        .get_or_create(&[("reason", "lagged")])
                        .inc();
                    Event::Missed(pb::MissedMessages {
                        reason: format!(
                            "this stream fell behind and {n} messages were dropped (notification_buffer_bytes)"
                        ),
                    })
                }
            });
        }
    }
}
