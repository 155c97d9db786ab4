//! A broadcast ring bounded in bytes: one writer side, any number of readers, each at its own
//! position; the oldest items are dropped when the next one would not fit.
//!
//! It replaces a `tokio::sync::broadcast` channel (bounded in items, whatever their size) plus
//! a per-reader queue (which a reader that stops reading fills): readers here hold nothing but
//! a position, so a reader that falls behind costs no memory at all — it learns on its next
//! read how many items it missed ([`Received::Lagged`]) and goes on from the oldest one kept.
//!
//! Bound: at most `max_bytes` of items (as weighed by the caller), or one item when that item
//! alone weighs more.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

/// The ring. Share it in an [`Arc`]; readers keep it alive.
pub struct ByteRing<T> {
    inner: Mutex<Inner<T>>,
    /// The sequence number the next pushed item will get, for waking readers.
    next: watch::Sender<u64>,
    max_bytes: usize,
    /// The bytes held, for the metric `coherence_buffer_bytes`.
    gauge: Gauge,
}

struct Inner<T> {
    /// Items with their weight; `items[0]` has sequence number `first`.
    items: VecDeque<(T, usize)>,
    first: u64,
    bytes: usize,
}

/// What one read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<T> {
    Item(T),
    /// The reader fell behind: this many items were dropped before it read them. The next read
    /// returns the oldest item still kept.
    Lagged(u64),
}

impl<T: Clone> ByteRing<T> {
    /// A ring holding at most `max_bytes` (see the module documentation); `gauge` follows the
    /// bytes held.
    pub fn new(max_bytes: usize, gauge: Gauge) -> Arc<ByteRing<T>> {
        let (next, _) = watch::channel(0);
        Arc::new(ByteRing {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                first: 0,
                bytes: 0,
            }),
            next,
            max_bytes,
            gauge,
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner<T>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Appends `item`, which weighs `bytes`, dropping the oldest items it does not fit beside.
    /// Never blocks on readers.
    pub fn push(&self, item: T, bytes: usize) {
        let next = {
            let mut inner = self.inner();
            while !inner.items.is_empty() && inner.bytes + bytes > self.max_bytes {
                if let Some((_, weight)) = inner.items.pop_front() {
                    inner.bytes -= weight;
                    inner.first += 1;
                }
            }
            inner.items.push_back((item, bytes));
            inner.bytes += bytes;
            self.gauge
                .set(i64::try_from(inner.bytes).unwrap_or(i64::MAX));
            inner.first + inner.items.len() as u64
        };
        self.next.send_replace(next);
    }

    /// The index the next pushed item will get: every item pushed so far has a smaller one.
    pub fn next_index(&self) -> u64 {
        let inner = self.inner();
        inner.first + inner.items.len() as u64
    }

    /// The bytes held now.
    pub fn bytes(&self) -> usize {
        self.inner().bytes
    }

    /// A reader that receives every item pushed from now on (that it reads in time).
    pub fn reader(self: &Arc<Self>) -> RingReader<T> {
        let wake = self.next.subscribe();
        let next = *wake.borrow();
        RingReader {
            ring: Arc::clone(self),
            next,
            wake,
        }
    }
}

/// One reader's position in a [`ByteRing`].
pub struct RingReader<T> {
    ring: Arc<ByteRing<T>>,
    next: u64,
    wake: watch::Receiver<u64>,
}

impl<T: Clone> RingReader<T> {
    /// The index of the next item this reader will read: it has passed every item below it
    /// (read, or missed as [`Received::Lagged`]).
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next item, or how many were dropped before this reader got to them; waits for one.
    pub async fn recv(&mut self) -> Received<T> {
        loop {
            // Marked seen before looking, so that a push after the look wakes the wait below.
            self.wake.borrow_and_update();
            if let Some(received) = self.try_recv() {
                return received;
            }
            if self.wake.changed().await.is_err() {
                // The sender lives in the ring, which this reader holds: cannot happen.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The next item if there is one now.
    pub fn try_recv(&mut self) -> Option<Received<T>> {
        let inner = self.ring.inner();
        if self.next < inner.first {
            let missed = inner.first - self.next;
            self.next = inner.first;
            return Some(Received::Lagged(missed));
        }
        let index = usize::try_from(self.next - inner.first).ok()?;
        let (item, _) = inner.items.get(index)?;
        self.next += 1;
        Some(Received::Item(item.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_its_budget_and_tells_a_slow_reader_what_it_missed() {
        let gauge = Gauge::default();
        let ring = ByteRing::new(100, gauge.clone());
        let mut slow = ring.reader();
        for i in 0..10u32 {
            ring.push(i, 30);
            assert!(ring.bytes() <= 100);
        }
        assert_eq!(gauge.get(), 90);
        let mut fast = ring.reader();
        assert_eq!(
            fast.try_recv(),
            None,
            "a new reader starts at the next item"
        );
        assert_eq!(slow.try_recv(), Some(Received::Lagged(7)));
        assert_eq!(slow.try_recv(), Some(Received::Item(7)));
        ring.push(10, 30);
        ring.push(11, 30);
        assert_eq!(slow.try_recv(), Some(Received::Lagged(1)), "8 was dropped");
        assert_eq!(slow.try_recv(), Some(Received::Item(9)));
        assert_eq!(slow.try_recv(), Some(Received::Item(10)));
        assert_eq!(fast.try_recv(), Some(Received::Item(10)));
        assert_eq!(fast.try_recv(), Some(Received::Item(11)));
        assert_eq!(fast.try_recv(), None);
    }

    #[test]
    fn an_item_larger_than_the_budget_is_kept_alone() {
        let ring = ByteRing::new(10, Gauge::default());
        let mut reader = ring.reader();
        ring.push("a", 5);
        ring.push("huge", 50);
        assert_eq!(ring.bytes(), 50);
        assert_eq!(reader.try_recv(), Some(Received::Lagged(1)));
        assert_eq!(reader.try_recv(), Some(Received::Item("huge")));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_push() {
        let ring = ByteRing::new(10, Gauge::default());
        let mut reader = ring.reader();
        let waiter = tokio::spawn(async move { reader.recv().await });
        tokio::task::yield_now().await;
        ring.push(7u8, 1);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
        assert_eq!(got, Received::Item(7));
    }
}
