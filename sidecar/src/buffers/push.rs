//! The queue between a Redis subscription connection and the task that applies its messages,
//! bounded in bytes (`push_buffer_bytes`).
//!
//! redis-rs hands every pub/sub message to a sender that must not block; with an unbounded
//! channel a burst from a shared Redis (or a task that cannot keep up) grows memory without
//! bound. Here a message that does not fit is dropped and the queue remembers it overflowed:
//! the reader learns it ([`Pushed::Overflowed`]) and re-subscribes, which is the path every
//! lost message already takes (a gap repaired from the replay log or a `Resync`; for the
//! notification backplane, `MissedMessages`). Disconnection and unsubscribe notices are always
//! queued: they are small and the reader must see them.
//!
//! Bound: at most `max_bytes` of messages (weighed by [`weight`]) plus those notices; one
//! message is always queued when none waits (a message larger than the budget would
//! otherwise stop the subscription for good).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;

/// Bookkeeping bytes counted per value besides its content.
const VALUE_OVERHEAD: usize = 32;

/// What a push weighs: its bytes and a fixed overhead per value.
pub fn weight(push: &PushInfo) -> usize {
    fn value(v: &Value) -> usize {
        VALUE_OVERHEAD
            + match v {
                Value::BulkString(b) | Value::BigNumber(b) => b.len(),
                Value::SimpleString(s) => s.len(),
                Value::VerbatimString { text, .. } => text.len(),
                Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
                    items.iter().map(value).sum()
                }
                Value::Map(pairs) => pairs.iter().map(|(k, v)| value(k) + value(v)).sum(),
                Value::Attribute { data, attributes } => {
                    value(data)
                        + attributes
                            .iter()
                            .map(|(k, v)| value(k) + value(v))
                            .sum::<usize>()
                }
                Value::ServerError(_) => 128,
                _ => 0,
            }
    }
    VALUE_OVERHEAD + push.data.iter().map(value).sum::<usize>()
}

/// One subscription's push queue: give [`PushQueue::sender`] to redis-rs, read with
/// [`PushQueue::recv`].
pub struct PushQueue {
    inner: Mutex<Inner>,
    ready: Notify,
    max_bytes: usize,
    gauge: Gauge,
    /// Counts overflows (each run of dropped messages once).
    overflows: Counter,
}

#[derive(Default)]
struct Inner {
    items: VecDeque<(PushInfo, usize)>,
    bytes: usize,
    overflowed: bool,
}

/// What the reader gets.
#[derive(Debug)]
pub enum Pushed {
    Message(PushInfo),
    /// Messages were dropped because the queue was full.
    Overflowed,
}

impl PushQueue {
    /// An empty queue of at most `max_bytes`; `gauge` (shared by every queue of one kind)
    /// follows the bytes held, `overflows` counts each run of dropped messages.
    pub fn new(max_bytes: usize, gauge: Gauge, overflows: Counter) -> Arc<PushQueue> {
        Arc::new(PushQueue {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            max_bytes,
            gauge,
            overflows,
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Queues `push` unless it does not fit; never blocks.
    pub fn push(&self, push: PushInfo) {
        let notice = matches!(
            push.kind,
            PushKind::Disconnection | PushKind::Unsubscribe | PushKind::SUnsubscribe
        );
        let bytes = weight(&push);
        {
            let mut inner = self.inner();
            let fits = inner.items.is_empty() || inner.bytes + bytes <= self.max_bytes;
            if !notice && !fits {
                if !std::mem::replace(&mut inner.overflowed, true) {
                    self.overflows.inc();
                }
            } else {
                inner.items.push_back((push, bytes));
                inner.bytes += bytes;
                self.gauge.inc_by(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
        self.ready.notify_one();
    }

    /// A sender for `AsyncConnectionConfig::set_push_sender`.
    pub fn sender(self: &Arc<Self>) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> {
        let queue = Arc::clone(self);
        move |push| {
            queue.push(push);
            Ok(())
        }
    }

    /// The next message (an overflow first, as soon as it happened); waits for one.
    pub async fn recv(&self) -> Pushed {
        loop {
            {
                let mut inner = self.inner();
                if std::mem::take(&mut inner.overflowed) {
                    return Pushed::Overflowed;
                }
                if let Some((push, bytes)) = inner.items.pop_front() {
                    inner.bytes -= bytes;
                    self.gauge.dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
                    return Pushed::Message(push);
                }
            }
            self.ready.notified().await;
        }
    }
}

impl Drop for PushQueue {
    fn drop(&mut self) {
        let bytes = self.inner().bytes;
        self.gauge.dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(b"chan".to_vec()),
                Value::BulkString(payload.to_vec()),
            ],
        }
    }

    #[tokio::test]
    async fn drops_what_does_not_fit_and_says_so_first() {
        let gauge = Gauge::default();
        let overflows = Counter::default();
        let one = weight(&message(&[0; 100]));
        let queue = PushQueue::new(2 * one, gauge.clone(), overflows.clone());
        let send = queue.sender();
        for _ in 0..5 {
            send(message(&[0; 100])).unwrap();
        }
        send(PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        })
        .unwrap();
        assert!(gauge.get() as usize <= 2 * one + weight(&message(&[])));
        assert_eq!(overflows.get(), 1, "one run of dropped messages");
        assert!(matches!(queue.recv().await, Pushed::Overflowed));
        assert!(matches!(queue.recv().await, Pushed::Message(p) if p.kind == PushKind::Message));
        assert!(matches!(queue.recv().await, Pushed::Message(p) if p.kind == PushKind::Message));
        assert!(
            matches!(queue.recv().await, Pushed::Message(p) if p.kind == PushKind::Disconnection)
        );
        drop(send);
        drop(queue);
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test]
    async fn a_message_larger_than_the_budget_passes_alone() {
        let queue = PushQueue::new(10, Gauge::default(), Counter::default());
        queue.push(message(&[0; 100]));
        queue.push(message(&[0; 100]));
        assert!(matches!(queue.recv().await, Pushed::Overflowed));
        assert!(matches!(queue.recv().await, Pushed::Message(_)));
    }
}
