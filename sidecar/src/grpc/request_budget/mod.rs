//! A bound on the bytes of request messages the gRPC port holds at once
//! (`request_buffer_bytes`), as a tower layer around the whole server.
//!
//! Every other buffer clients can fill is bounded on its own (the rings, the batchers, the
//! streams, the connections); requests themselves were bounded only per call (the decoder
//! limit, about 12.8 MB with the defaults) and per connection (`max_concurrent_streams` of
//! them), which multiplied by `max_connections` is a bound in name only: an app that sends
//! large batches on many streams at once could grow the sidecar until the kubelet kills it.
//!
//! Here each gRPC message is counted at the size its 5-byte prefix announces as soon as the
//! prefix arrives — before its bytes are read — plus [`FIELD_BYTES`] for each of its top-level
//! fields as they arrive (an entry of a batch decodes to a struct and its allocations whatever
//! its size on the wire: [`framing`]), and stays counted until the handler has answered (the
//! decoded message lives that long). Messages counted at most [`SMALL_REQUEST_BYTES`] draw on
//! a quarter of the budget kept for them, larger ones on the other three quarters, so that a
//! flood of large batches cannot refuse the small Check or Get an app sends on every cache
//! read. A message that does not fit its share while other requests hold it is refused at once
//! with `RESOURCE_EXHAUSTED` naming the setting (counted in
//! `coherence_limits_reached_total{limit="request_buffer_bytes"}`); a large message alone is
//! always admitted, whatever its size within the decoder limit, so that no setting of
//! `max_batch_keys` makes a valid request impossible. The bytes held are exported as
//! `coherence_buffer_bytes{buffer="requests"}`.

pub mod framing;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tonic::codegen::Bytes;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use self::framing::{Found, Framing};
use crate::grpc::auth::HEALTH_PREFIX;
use crate::metrics::Metrics;

/// The setting, as refusals are labelled.
pub const SETTING: &str = "request_buffer_bytes";
/// The buffer, as `coherence_buffer_bytes` labels it.
pub const BUFFER: &str = "requests";
/// Messages counted at most this many bytes (prefix and fields included) are small: they draw
/// on the quarter of the budget kept for them.
pub const SMALL_REQUEST_BYTES: usize = 64 * 1024;
/// What a top-level field of a request is counted, beyond its bytes: what decoding it may
/// allocate whatever its size on the wire — a `KeyVersion` is an 80-byte struct, as much again
/// in the spare capacity of the `Vec` that holds it, and up to three strings, each an
/// allocation of at least 32 bytes (glibc's smallest chunk). Measured (heap in use before and
/// after prost decoded 10,000 entries): 112–259 bytes per entry decoded for keys of 1–25 bytes
/// with or without a version, against 261–327 counted; 1,219 against 1,304 for 1,000-byte keys.
pub const FIELD_BYTES: usize = 256;
/// The least `request_buffer_bytes` can be: its small quarter holds four small messages.
pub const MIN_REQUEST_BUFFER_BYTES: usize = 16 * SMALL_REQUEST_BYTES;

/// One share of the budget.
struct Share {
    limit: usize,
    held: AtomicUsize,
    /// Whether a request may pass the limit when no other request holds any of this share.
    alone_admitted: bool,
}

impl Share {
    fn new(limit: usize, alone_admitted: bool) -> Share {
        Share {
            limit,
            held: AtomicUsize::new(0),
            alone_admitted,
        }
    }

    /// Counts `bytes` more for a request that holds `mine` of this share already; false (and
    /// nothing counted) when they do not fit. Decided on the total as it is and counted only
    /// if admitted (one compare-and-swap), so that bytes being refused never make another
    /// request look not alone.
    fn take(&self, bytes: usize, mine: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |before| {
                let fits = before.saturating_add(bytes) <= self.limit;
                let alone = before.saturating_sub(mine) == 0;
                (fits || (self.alone_admitted && alone)).then(|| before.saturating_add(bytes))
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The shared budget: a share for small messages, a share for large ones.
struct Budget {
    limit: usize,
    small: Share,
    large: Share,
    gauge: Gauge,
    refused: Counter,
}

impl Budget {
    fn new(limit: usize, metrics: &Metrics) -> Budget {
        let small = (limit / 4).max(SMALL_REQUEST_BYTES);
        Budget {
            limit,
            small: Share::new(small, false),
            large: Share::new(limit.saturating_sub(small), true),
            gauge: metrics.buffer(BUFFER),
            refused: metrics.limit_counter(SETTING),
        }
    }

    fn share(&self, small: bool) -> &Share {
        if small {
            &self.small
        } else {
            &self.large
        }
    }
}

/// The bytes one request holds, by share: given back when its handler has answered, or when
/// both its body and its response future are gone, whichever is first.
struct Held {
    budget: Arc<Budget>,
    small: AtomicUsize,
    large: AtomicUsize,
    /// The handler has answered: from then on, what the request holds is only the message
    /// being read (a stream of requests goes on after the answer).
    answered: AtomicBool,
}

impl Held {
    fn new(budget: &Arc<Budget>) -> Held {
        Held {
            budget: Arc::clone(budget),
            small: AtomicUsize::new(0),
            large: AtomicUsize::new(0),
            answered: AtomicBool::new(false),
        }
    }

    fn mine(&self, small: bool) -> &AtomicUsize {
        if small {
            &self.small
        } else {
            &self.large
        }
    }

    /// Counts `bytes` more against a share; false (nothing counted, the refusal counted) when
    /// they do not fit.
    fn take(&self, small: bool, bytes: usize) -> bool {
        let mine = self.mine(small).load(Ordering::Acquire);
        if !self.budget.share(small).take(bytes, mine) {
            self.budget.refused.inc();
            return false;
        }
        self.mine(small).fetch_add(bytes, Ordering::AcqRel);
        self.budget.gauge.inc_by(bytes as i64);
        true
    }

    fn give_back(&self, small: bool, bytes: usize) {
        self.lower(small, |mine| mine.saturating_sub(bytes));
    }

    fn release(&self) {
        self.keep_only(None);
    }

    /// Gives back everything but `message` (the one being read, if any).
    fn keep_only(&self, message: Option<&MessageCount>) {
        for small in [true, false] {
            let keep = message.filter(|m| m.small == small).map_or(0, |m| m.bytes);
            self.lower(small, |mine| mine.min(keep));
        }
    }

    /// Lowers what this request holds of a share to `to(what it holds)` and gives the
    /// difference back to the share.
    fn lower(&self, small: bool, to: impl Fn(usize) -> usize) {
        let before = self
            .mine(small)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |mine| {
                Some(to(mine).min(mine))
            })
            .unwrap_or(0);
        let bytes = before - to(before).min(before);
        if bytes > 0 {
            self.budget.share(small).give_back(bytes);
            self.budget.gauge.dec_by(bytes as i64);
        }
    }

    /// The handler has answered: give back everything.
    fn answered(&self) {
        self.answered.store(true, Ordering::Release);
        self.release();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

/// What the message being read is counted so far, and in which share.
#[derive(Debug, Default)]
struct MessageCount {
    small: bool,
    bytes: usize,
}

/// The layer; add it with `tonic::transport::Server::builder().layer(..)`.
#[derive(Clone)]
pub struct RequestBudgetLayer {
    budget: Arc<Budget>,
}

impl RequestBudgetLayer {
    pub fn new(limit: usize, metrics: &Metrics) -> RequestBudgetLayer {
        RequestBudgetLayer {
            budget: Arc::new(Budget::new(limit, metrics)),
        }
    }
}

impl<S> Layer<S> for RequestBudgetLayer {
    type Service = RequestBudget<S>;

    fn layer(&self, inner: S) -> RequestBudget<S> {
        RequestBudget {
            inner,
            budget: Arc::clone(&self.budget),
        }
    }
}

/// The service the layer wraps around the server's routes.
#[derive(Clone)]
pub struct RequestBudget<S> {
    inner: S,
    budget: Arc<Budget>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ResBody> Service<http::Request<tonic::body::Body>> for RequestBudget<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            // Health answers anyone, token or not: counted here, its requests would let a
            // client without the token take the budget from those with it. Its own decoder
            // limit bounds them (`grpc::health`).
            return Box::pin(self.inner.call(request));
        }
        let held = Arc::new(Held::new(&self.budget));
        let request = request.map(|body| {
            tonic::body::Body::new(CountedBody {
                inner: body,
                held: Arc::clone(&held),
                framing: Framing::default(),
                message: MessageCount::default(),
            })
        });
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            // The handler has answered: the decoded request is gone (a response stream keeps
            // only what it reads from the rings, bounded on its own).
            held.answered();
            answer
        })
    }
}

/// A request body whose messages count against the budget as their prefixes and fields
/// arrive.
struct CountedBody {
    inner: tonic::body::Body,
    held: Arc<Held>,
    framing: Framing,
    message: MessageCount,
}

impl CountedBody {
    /// Counts what the walk found; the refusal when it does not fit.
    fn count(held: &Held, message: &mut MessageCount, found: Found) -> Result<(), Status> {
        let fits = match found {
            Found::Message(bytes) => {
                *message = MessageCount {
                    small: bytes <= SMALL_REQUEST_BYTES,
                    bytes,
                };
                held.take(message.small, bytes)
            }
            Found::Field => {
                let before = message.bytes;
                message.bytes = before.saturating_add(FIELD_BYTES);
                if message.small && message.bytes > SMALL_REQUEST_BYTES {
                    // Its fields make it large: it moves to the large share, whole.
                    message.small = false;
                    let moved = held.take(false, message.bytes);
                    if moved {
                        held.give_back(true, before);
                    }
                    moved
                } else {
                    held.take(message.small, FIELD_BYTES)
                }
            }
        };
        if fits {
            return Ok(());
        }
        let limit = held.budget.limit;
        Err(Status::resource_exhausted(format!(
            "{SETTING}: a request counted at {} bytes (its size and {FIELD_BYTES} bytes per \
             entry) does not fit in what the sidecar holds for requests ({limit} bytes in all, a \
             quarter of it kept for requests of at most {SMALL_REQUEST_BYTES}); retry with \
             backoff, or send smaller batches",
            message.bytes
        )))
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.held.answered.load(Ordering::Acquire) {
            // A stream of requests whose handler answered at once (reflection's): tonic asks
            // for more only once it handed the messages before on, so those are given back.
            let reading = self.framing.within_message().then_some(&self.message);
            self.held.keep_only(reading);
        }
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                let this = &mut *self;
                let (held, message) = (&this.held, &mut this.message);
                let counted = this
                    .framing
                    .walk(data, |found| Self::count(held, message, found));
                if let Err(refused) = counted {
                    return Poll::Ready(Some(Err(refused)));
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(held: &Held, message: &mut MessageCount, found: &[Found]) -> Result<(), Status> {
        found
            .iter()
            .try_for_each(|f| CountedBody::count(held, message, *f))
    }

    #[test]
    fn a_quarter_is_kept_for_small_requests_and_a_large_one_alone_is_admitted() {
        let metrics = Metrics::new();
        let budget = Arc::new(Budget::new(MIN_REQUEST_BUFFER_BYTES, &metrics));
        let (small, large) = (budget.small.limit, budget.large.limit);
        assert_eq!(
            (small, large),
            (4 * SMALL_REQUEST_BYTES, 12 * SMALL_REQUEST_BYTES)
        );

        let (a, b) = (Held::new(&budget), Held::new(&budget));
        let (mut in_a, mut in_b) = (MessageCount::default(), MessageCount::default());
        count(&a, &mut in_a, &[Found::Message(large + 1)]).expect("a large one alone");
        let refused = count(&b, &mut in_b, &[Found::Message(SMALL_REQUEST_BYTES + 1)])
            .expect_err("no other large one then");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains(SETTING), "{refused:?}");
        for _ in 0..4 {
            count(&b, &mut in_b, &[Found::Message(SMALL_REQUEST_BYTES)])
                .expect("small ones have their quarter");
        }
        assert!(
            count(&b, &mut in_b, &[Found::Message(1)]).is_err(),
            "until it is full"
        );
        assert_eq!(metrics.limit_counter(SETTING).get(), 2);
        assert_eq!(metrics.buffer(BUFFER).get() as usize, large + 1 + small);
        drop(a);
        count(&b, &mut in_b, &[Found::Message(large)]).expect("the large share is free again");
        drop(b);
        assert_eq!(budget.small.held.load(Ordering::Acquire), 0);
        assert_eq!(budget.large.held.load(Ordering::Acquire), 0);
        assert_eq!(metrics.buffer(BUFFER).get(), 0, "everything given back");
    }

    #[test]
    fn a_request_alone_is_not_refused_for_the_bytes_of_others_being_refused() {
        let metrics = Metrics::new();
        let budget = Arc::new(Budget::new(MIN_REQUEST_BUFFER_BYTES, &metrics));
        let alone = Held::new(&budget);
        let past_its_share = budget.large.limit + 1;
        assert!(alone.take(false, past_its_share), "alone, past its share");
        let stop = AtomicBool::new(false);
        let refused_alone = std::thread::scope(|s| {
            s.spawn(|| {
                let other = Held::new(&budget);
                while !stop.load(Ordering::Relaxed) {
                    assert!(!other.take(false, 1), "the others are refused");
                }
            });
            let refused = (0..200_000).filter(|_| !alone.take(false, 1)).count();
            stop.store(true, Ordering::Relaxed);
            refused
        });
        assert_eq!(refused_alone, 0, "the lone request was refused");
    }

    #[test]
    fn once_answered_a_request_keeps_only_the_message_being_read() {
        let metrics = Metrics::new();
        let budget = Arc::new(Budget::new(MIN_REQUEST_BUFFER_BYTES, &metrics));
        let held = Held::new(&budget);
        let mut message = MessageCount::default();
        count(&held, &mut message, &[Found::Message(1_000)]).expect("fits");
        held.answered();
        assert_eq!(metrics.buffer(BUFFER).get(), 0, "given back at the answer");
        count(&held, &mut message, &[Found::Message(2_000)]).expect("fits");
        count(&held, &mut message, &[Found::Message(3_000)]).expect("fits");
        held.keep_only(Some(&message));
        assert_eq!(
            metrics.buffer(BUFFER).get(),
            3_000,
            "only the message being read"
        );
        held.keep_only(None);
        assert_eq!(metrics.buffer(BUFFER).get(), 0);
    }

    #[test]
    fn a_large_request_alone_is_admitted_with_all_its_entries() {
        let metrics = Metrics::new();
        let budget = Arc::new(Budget::new(MIN_REQUEST_BUFFER_BYTES, &metrics));
        let held = Held::new(&budget);
        let mut message = MessageCount::default();
        let mut found = vec![Found::Message(budget.large.limit)];
        found.extend(std::iter::repeat_n(Found::Field, 10_000));
        count(&held, &mut message, &found).expect("alone, past its share, entries and all");
        let other = Held::new(&budget);
        assert!(
            count(
                &other,
                &mut MessageCount::default(),
                &[Found::Message(SMALL_REQUEST_BYTES + 1)]
            )
            .is_err(),
            "another large one is refused meanwhile"
        );
    }

    #[test]
    fn entries_are_counted_and_a_small_message_made_large_by_them_moves_to_the_large_share() {
        let metrics = Metrics::new();
        let budget = Arc::new(Budget::new(MIN_REQUEST_BUFFER_BYTES, &metrics));
        let held = Held::new(&budget);
        let mut message = MessageCount::default();
        // 600 one-byte keys: ~3 KB on the wire, 600 entries when decoded.
        let mut found = vec![Found::Message(3_005)];
        found.extend(std::iter::repeat_n(Found::Field, 600));
        count(&held, &mut message, &found).expect("fits");
        let counted = 3_005 + 600 * FIELD_BYTES;
        assert_eq!(message.bytes, counted);
        assert!(!message.small, "counted past 64 KiB, it is large");
        assert_eq!(
            held.small.load(Ordering::Acquire),
            0,
            "nothing left in the small share"
        );
        assert_eq!(held.large.load(Ordering::Acquire), counted);
        assert_eq!(budget.small.held.load(Ordering::Acquire), 0);
        assert_eq!(metrics.buffer(BUFFER).get() as usize, counted);
        drop(held);
        assert_eq!(metrics.buffer(BUFFER).get(), 0);
    }
}
