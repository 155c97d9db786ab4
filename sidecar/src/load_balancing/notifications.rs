//! Notifications backplane: small messages fanned out to every server of the namespace.
//!
//! Every sidecar keeps one dedicated RESP3 connection subscribed to the namespace's notification
//! channel `coh:{<namespace>:notify}` (separate from the cache-invalidation subscription, which
//! has its own rules) and hands each message to its local `Subscribe` streams, which filter by
//! topic. `Publish` sends one `PUBLISH` over the verified command connection.
//!
//! Delivery is **at most once**. Redis pub/sub keeps nothing: a message published while a
//! sidecar's connection is down, or one a slow stream falls too far behind on, is lost. That is
//! never silent: after the connection is re-established every stream gets a `MissedMessages`
//! event, and so does a stream that fell behind.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::watch;

use crate::buffers::push::{PushQueue, Pushed};
use crate::buffers::ring::{ByteRing, RingReader};
use crate::load_balancing::ServiceHandle;
use crate::redis::link::LinkError;

/// A notification as carried on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub topic: String,
    pub publisher: String,
    pub published_at_unix_ms: u64,
    pub payload: Vec<u8>,
}

/// What the hub hands to Subscribe streams.
#[derive(Debug, Clone)]
pub enum NoteEvent {
    Message(Arc<Note>),
    /// Messages may have been lost (the subscription connection was re-established).
    Missed(Arc<str>),
}

impl NoteEvent {
    /// What the event weighs in the hub's ring: its bytes and a fixed overhead.
    pub fn weight(&self) -> usize {
        const OVERHEAD: usize = 128;
        OVERHEAD
            + match self {
                NoteEvent::Message(note) => {
                    note.topic.len() + note.publisher.len() + note.payload.len()
                }
                NoteEvent::Missed(reason) => reason.len(),
            }
    }
}

const FRAME_VERSION: u8 = 1;

/// Why a notification cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(
        "{field}: {bytes} bytes, more than a notification frame carries ({} bytes)",
        u16::MAX
    )]
    TooLong { field: &'static str, bytes: usize },
}

/// Why a notification was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Link(#[from] LinkError),
}

impl Note {
    /// `[version][u16 topic len][topic][u16 publisher len][publisher][u64 ms][payload]`, big endian.
    ///
    /// A topic or publisher longer than a `u16` can count is refused: cutting it (as this did
    /// before fuzzing found it) delivered the message under another topic, or split a UTF-8
    /// character so that every receiver dropped it.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut out =
            Vec::with_capacity(13 + self.topic.len() + self.publisher.len() + self.payload.len());
        out.push(FRAME_VERSION);
        for (field, text) in [("topic", &self.topic), ("publisher", &self.publisher)] {
            let len = u16::try_from(text.len()).map_err(|_| FrameError::TooLong {
                field,
                bytes: text.len(),
            })?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&self.published_at_unix_ms.to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// Decodes a frame; `None` for anything that is not one of ours.
    pub fn decode(frame: &[u8]) -> Option<Note> {
        let (&version, mut rest) = frame.split_first()?;
        if version != FRAME_VERSION {
            return None;
        }
        let mut text = || -> Option<String> {
            let len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
            let value = std::str::from_utf8(rest.get(2..2 + len)?).ok()?.to_string();
            rest = &rest[2 + len..];
            Some(value)
        };
        let topic = text()?;
        let publisher = text()?;
        let published_at_unix_ms = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        Some(Note {
            topic,
            publisher,
            published_at_unix_ms,
            payload: rest[8..].to_vec(),
        })
    }
}

/// The notification hub of one sidecar.
pub struct Notifications {
    handle: ServiceHandle,
    channel: String,
    /// What Subscribe streams read, bounded by `notification_buffer_bytes`.
    events: Arc<ByteRing<NoteEvent>>,
    live_tx: watch::Sender<bool>,
    /// The subscription's push queue budget (`push_buffer_bytes`).
    push_buffer_bytes: usize,
}

impl Notifications {
    /// A hub whose ring keeps `buffer_bytes` of notifications and whose subscription queues
    /// at most `push_buffer_bytes`.
    pub fn new(
        handle: ServiceHandle,
        buffer_bytes: usize,
        push_buffer_bytes: usize,
    ) -> Notifications {
        let channel = format!("coh:{{{}:notify}}", handle.namespace);
        let events = ByteRing::new(buffer_bytes, handle.metrics.buffer("notifications"));
        let (live_tx, _) = watch::channel(false);
        Notifications {
            handle,
            channel,
            events,
            live_tx,
            push_buffer_bytes,
        }
    }

    fn send(&self, event: NoteEvent) {
        let weight = event.weight();
        self.events.push(event, weight);
    }

    /// Where the hub and its streams count.
    pub fn metrics(&self) -> &crate::metrics::LoadBalancingMetrics {
        &self.handle.metrics.load_balancing
    }

    /// Events for one Subscribe stream (subscribe before waiting for [`Self::live`]).
    pub fn events(&self) -> RingReader<NoteEvent> {
        self.events.reader()
    }

    /// Whether the subscription connection is up, and its changes.
    pub fn live(&self) -> watch::Receiver<bool> {
        self.live_tx.subscribe()
    }

    /// Publishes a message; returns how many sidecars were subscribed to receive it.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<u64, PublishError> {
        let note = Note {
            topic: topic.to_string(),
            publisher: self.handle.server_id.to_string(),
            published_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            payload,
        };
        let frame = note.encode()?;
        let channel = &self.channel;
        let receivers: u64 = self
            .handle
            .link
            .run(
                "notify_publish",
                self.handle.request_timeout,
                |mut conn| async move {
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(frame)
                        .query_async(&mut conn)
                        .await
                },
            )
            .await?;
        self.handle
            .metrics
            .load_balancing
            .notifications_published
            .inc();
        Ok(receivers)
    }

    /// Keeps the subscription up until `shutdown`; tells streams after every reconnect.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(50);
        let mut sessions = 0u64;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if !self.handle.link.is_connected() {
                tokio::select! {
                    _ = self.handle.link.wait_connected(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            let ended = self.session(&mut shutdown, &mut sessions).await;
            self.live_tx.send_replace(false);
            match ended {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?backoff, "notification subscription lost; messages may be missed until it is back");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn session(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        sessions: &mut u64,
    ) -> Result<(), SessionError> {
        let channels = vec![self.channel.clone()];
        let plan = self
            .handle
            .link
            .run("notify_plan", self.handle.request_timeout, |mut conn| {
                let channels = &channels;
                async move {
                    self.handle
                        .link
                        .target()
                        .subscription_plan(&mut conn, channels)
                        .await
                }
            })
            .await?;
        let Some((url, _)) = plan.into_iter().next() else {
            return Err(SessionError::Disconnected);
        };
        let pushes = PushQueue::new(
            self.push_buffer_bytes,
            self.handle.metrics.buffer("push_notifications"),
            self.handle.metrics.limit_counter("push_buffer_bytes"),
        );
        let config = AsyncConnectionConfig::new()
            .set_push_sender(pushes.sender())
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let mut conn = self
            .handle
            .link
            .target()
            .client(&url)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("SUBSCRIBE")
            .arg(&self.channel)
            .query_async::<Value>(&mut conn)
            .await?;
        *sessions += 1;
        self.live_tx.send_replace(true);
        if *sessions > 1 {
            self.handle
                .metrics
                .redis_reconnects
                .get_or_create(&[("connection", "notifications")])
                .inc();
            self.send(NoteEvent::Missed(Arc::from(
                "the sidecar's notification subscription was re-established; messages published meanwhile were lost",
            )));
        }
        loop {
            tokio::select! {
                push = pushes.recv() => match push {
                    Pushed::Message(push) => self.on_push(push)?,
                    Pushed::Overflowed => return Err(SessionError::Overflowed),
                },
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn on_push(&self, push: PushInfo) -> Result<(), SessionError> {
        match push.kind {
            PushKind::Message => {}
            PushKind::Disconnection => return Err(SessionError::Disconnected),
            PushKind::Unsubscribe => return Err(SessionError::Disconnected),
            _ => return Ok(()),
        }
        let Some(frame) = push
            .data
            .into_iter()
            .nth(1)
            .and_then(|v| redis::from_redis_value::<Vec<u8>>(v).ok())
        else {
            return Ok(());
        };
        match Note::decode(&frame) {
            Some(note) => {
                self.send(NoteEvent::Message(Arc::new(note)));
            }
            None => tracing::debug!("ignoring a notification frame that is not ours"),
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot subscribe: {0}")]
    Connect(#[from] redis::RedisError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("notification subscription connection dropped")]
    Disconnected,
    #[error("notification subscription fell behind by more than push_buffer_bytes")]
    Overflowed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_junk_is_ignored() {
        let note = Note {
            topic: "orders".into(),
            publisher: "a".into(),
            published_at_unix_ms: 1_700_000_000_123,
            payload: vec![0, 1, 2, 255],
        };
        assert_eq!(Note::decode(&note.encode().unwrap()), Some(note));
        assert_eq!(Note::decode(b""), None);
        assert_eq!(Note::decode(&[1, 0, 9, b'x']), None);
        assert_eq!(Note::decode(&[2, 0, 0]), None);
    }

    /// Found by fuzzing the frame format: a topic past 65,535 bytes (possible with a large
    /// `max_key_bytes`) was cut, so the message went out under another topic.
    #[test]
    fn a_topic_too_long_for_the_frame_is_refused_not_cut() {
        let note = Note {
            topic: "é".repeat(40_000),
            publisher: "a".into(),
            published_at_unix_ms: 0,
            payload: vec![],
        };
        assert_eq!(
            note.encode(),
            Err(FrameError::TooLong {
                field: "topic",
                bytes: 80_000
            })
        );
        let note = Note {
            topic: "t".repeat(usize::from(u16::MAX)),
            ..note
        };
        assert_eq!(Note::decode(&note.encode().unwrap()), Some(note));
    }

    use coherence_testkit::fuzz;
    use proptest::prelude::*;

    fn notes() -> impl Strategy<Value = Note> {
        (
            "\\PC{0,24}",
            "\\PC{0,24}",
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..128),
        )
            .prop_map(|(topic, publisher, published_at_unix_ms, payload)| Note {
                topic,
                publisher,
                published_at_unix_ms,
                payload,
            })
    }

    /// Any frame from the shared channel: no panic, nothing larger than the frame, and what
    /// decodes encodes back to the very same bytes.
    fn check_any_frame(frame: &[u8]) -> Result<(), TestCaseError> {
        let Some(note) = Note::decode(frame) else {
            return Ok(());
        };
        prop_assert!(note.topic.len() + note.publisher.len() + note.payload.len() <= frame.len());
        prop_assert_eq!(note.encode(), Ok(frame.to_vec()));
        Ok(())
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        #[test]
        fn fuzz_note_frame_bytes(frame in proptest::collection::vec(any::<u8>(), 0..256)) {
            check_any_frame(&frame)?;
        }

        /// Valid frames with bytes flipped, cut or appended: the length fields lie.
        #[test]
        fn fuzz_note_frame_mutated(
            note in notes(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut frame = note.encode().unwrap();
            for (at, byte) in flips {
                let i = at.index(frame.len());
                frame[i] = byte;
            }
            frame.truncate(cut.index(frame.len() + 1));
            frame.extend(tail);
            check_any_frame(&frame)?;
        }

        #[test]
        fn fuzz_note_round_trip(note in notes()) {
            prop_assert_eq!(Note::decode(&note.encode().unwrap()), Some(note));
        }
    }
}
