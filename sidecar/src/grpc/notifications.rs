//! The `coherence.v1.Notifications` gRPC service: Publish with the payload limit, and Subscribe
//! streams fed by the sidecar's notification hub.

use std::collections::HashSet;
use std::sync::Arc;

use coherence_proto::v1 as pb;
use coherence_proto::v1::notifications_server::Notifications as NotificationsApi;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::grpc::validation::Limits;
use crate::load_balancing::notifications::{FrameError, NoteEvent, Notifications, PublishError};

/// The gRPC face of one sidecar's [`Notifications`].
pub struct NotificationsService {
    hub: Arc<Notifications>,
    limits: Limits,
    max_payload_bytes: usize,
    shutdown: watch::Receiver<bool>,
}

impl NotificationsService {
    pub fn new(
        hub: Arc<Notifications>,
        limits: Limits,
        max_payload_bytes: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        NotificationsService {
            hub,
            limits,
            max_payload_bytes,
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

    type SubscribeStream = ReceiverStream<Result<pb::NotificationEvent, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        if req.topics.is_empty() {
            return Err(Status::invalid_argument("topics: name at least one topic"));
        }
        self.limits.check_count("topics", req.topics.len())?;
        for (i, topic) in req.topics.iter().enumerate() {
            self.limits.check_name(&format!("topics[{i}]"), topic)?;
        }
        // Listen first, then wait for the subscription: nothing after `subscribed` is missed
        // silently.
        let events = self.hub.events();
        let live = self.hub.live();
        let (tx, rx) = mpsc::channel(1024);
        let hub = Arc::clone(&self.hub);
        let shutdown = self.shutdown.clone();
        tokio::spawn(forward(hub, events, live, tx, req.topics, shutdown));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type EventSender = mpsc::Sender<Result<pb::NotificationEvent, Status>>;

async fn send(tx: &EventSender, event: pb::notification_event::Event) -> bool {
    tx.send(Ok(pb::NotificationEvent { event: Some(event) }))
        .await
        .is_ok()
}

/// Feeds one Subscribe stream until the client goes away or the sidecar shuts down.
async fn forward(
    hub: Arc<Notifications>,
    mut events: broadcast::Receiver<NoteEvent>,
    mut live: watch::Receiver<bool>,
    tx: EventSender,
    topics: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    use pb::notification_event::Event;
    let metrics = hub.metrics().clone();
    let went_live = async { live.wait_for(|up| *up).await.is_ok() };
    tokio::select! {
        up = went_live => if !up { return },
        _ = async { let _ = shutdown.wait_for(|down| *down).await; } => {
            let _ = tx.send(Err(Status::unavailable("sidecar is shutting down"))).await;
            return;
        }
        _ = tx.closed() => return,
    }
    if !send(
        &tx,
        Event::Subscribed(pb::Subscribed {
            topics: topics.clone(),
        }),
    )
    .await
    {
        return;
    }
    let wanted: HashSet<String> = topics.into_iter().collect();
    loop {
        let event = tokio::select! {
            item = events.recv() => match item {
                Ok(NoteEvent::Message(note)) => {
                    if !wanted.contains(&note.topic) {
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
                Ok(NoteEvent::Missed(reason)) => {
                    metrics.notifications_missed.get_or_create(&[("reason", "reconnect")]).inc();
                    Event::Missed(pb::MissedMessages { reason: reason.to_string() })
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics.notifications_missed.get_or_create(&[("reason", "lagged")]).inc();
                    Event::Missed(pb::MissedMessages {
                        reason: format!("this stream fell behind and {n} messages were dropped"),
                    })
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = async { let _ = shutdown.wait_for(|down| *down).await; } => {
                let _ = tx.send(Err(Status::unavailable("sidecar is shutting down"))).await;
                return;
            }
            _ = tx.closed() => return,
        };
        if !send(&tx, event).await {
            return;
        }
    }
}
