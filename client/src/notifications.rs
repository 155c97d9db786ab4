//! The notifications backplane, typed (service `coherence.v1.Notifications`): small messages
//! fanned out to every server of the namespace, the role Umbraco gives SignalR's backplane.
//!
//! Delivery is **at most once**: a message is lost when a sidecar's subscription is down or a
//! subscriber falls behind, and the subscriber is then told so ([`NotificationEvent::Missed`]).
//! Use it for "something changed, look again", never as the only copy of data.

use std::pin::Pin;
use std::task::{Context, Poll};

use coherence_proto::v1 as pb;
use coherence_proto::v1::notifications_client::NotificationsClient;
use futures::Stream;

use crate::call::{poll_events, Target};
use crate::error::Error;
use crate::transport::Transport;

/// The backplane of one sidecar's namespace. From
/// [`Client::notifications`](crate::Client::notifications); cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifications {
    grpc: NotificationsClient<Transport>,
    target: Target,
}

/// One event of a [`Notifications::subscribe`] stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationEvent {
    /// The subscription is live: messages published from now on are delivered.
    Subscribed {
        /// The topics subscribed to.
        topics: Vec<String>,
    },
    /// A message.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Vec<u8>,
        /// The server id of the sidecar it was published through.
        publisher: String,
        /// The publisher's clock, for display.
        published_at_unix_ms: u64,
    },
    /// Messages may have been lost: re-read whatever state they were about.
    Missed {
        /// Why.
        reason: String,
    },
}

impl Notifications {
    pub(crate) fn new(channel: Transport, target: Target) -> Notifications {
        Notifications {
            grpc: NotificationsClient::new(channel),
            target,
        }
    }

    /// Sends `payload` to every subscriber of `topic` on every server; returns how many
    /// sidecars were listening.
    ///
    /// ```no_run
    /// # async fn demo(client: coherence_client::Client) -> Result<(), coherence_client::Error> {
    /// client.notifications().publish("content-published", b"page:42").await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish(&self, topic: &str, payload: &[u8]) -> Result<u64, Error> {
        let mut grpc = self.grpc.clone();
        let answer = self
            .target
            .call(grpc.publish(self.target.request(pb::PublishRequest {
                topic: topic.to_string(),
                payload: payload.to_vec(),
            })))
            .await?;
        Ok(answer.receiving_sidecars)
    }

    /// Messages on `topics` from every server, after a first [`NotificationEvent::Subscribed`].
    ///
    /// ```no_run
    /// # async fn demo(client: coherence_client::Client) -> Result<(), coherence_client::Error> {
    /// use coherence_client::NotificationEvent;
    /// use futures::StreamExt;
    ///
    /// let mut events = client.notifications().subscribe(&["content-published"]).await?;
    /// while let Some(event) = events.next().await {
    ///     match event? {
    ///         NotificationEvent::Message { payload, .. } => println!("{payload:?}"),
    ///         NotificationEvent::Missed { .. } => { /* re-read the state */ }
    ///         NotificationEvent::Subscribed { .. } => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, topics: &[&str]) -> Result<NotificationStream, Error> {
        let mut grpc = self.grpc.clone();
        // No gRPC deadline: the local one covers opening the stream, not its lifetime.
        let opening = tonic::Request::new(pb::SubscribeRequest {
            topics: topics.iter().map(|t| t.to_string()).collect(),
        });
        let inner = self.target.call(grpc.subscribe(opening)).await?;
        Ok(NotificationStream {
            inner,
            target: self.target.clone(),
        })
    }
}

/// The events of one `Subscribe` stream.
#[derive(Debug)]
pub struct NotificationStream {
    inner: tonic::Streaming<pb::NotificationEvent>,
    target: Target,
}

impl Stream for NotificationStream {
    type Item = Result<NotificationEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use pb::notification_event::Event;
        let this = &mut *self;
        poll_events(&mut this.inner, cx, &this.target, |next| {
            Some(match next.event? {
                Event::Subscribed(s) => NotificationEvent::Subscribed { topics: s.topics },
                Event::Notification(n) => NotificationEvent::Message {
                    topic: n.topic,
                    payload: n.payload,
                    publisher: n.publisher,
                    published_at_unix_ms: n.published_at_unix_ms,
                },
                Event::Missed(m) => NotificationEvent::Missed { reason: m.reason },
            })
        })
    }
}
