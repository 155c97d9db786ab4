//! A bound on the bytes of request messages the gRPC port holds at once
//! (`request_buffer_bytes`), as a tower layer around the whole server.
//!
//! Every other buffer clients can fill is bounded on its own (the rings, the batchers, the
//! streams, the connections); requests themselves were bounded only per call (the decoder
//! limit, about 12.8 MB with the defaults) and per connection (`max_concurrent_streams` of
//! them), which multiplied by `max_connections` is a bound in name only: an app that sends
//! large batches on many streams at once could grow the sidecar until the kubelet kills it.
//!
//! Here each gRPC message is counted at the size its 5-byte prefix announces, as soon as the
//! prefix arrives — before its bytes are read — and stays counted until the handler has
//! answered (the decoded message lives that long). Messages of at most
//! [`SMALL_REQUEST_BYTES`] draw on a quarter of the budget kept for them, larger ones on the
//! other three quarters, so that a flood of large batches cannot refuse the small Check or Get
//! an app sends on every cache read. A message that does not fit its share while other
//! requests hold it is refused at once with `RESOURCE_EXHAUSTED` naming the setting (counted
//! in `coherence_limits_reached_total{limit="request_buffer_bytes"}`); a large message alone
//! is always admitted, whatever its size within the decoder limit, so that no setting of
//! `max_batch_keys` makes a valid request impossible. The bytes held are exported as
//! `coherence_buffer_bytes{buffer="requests"}`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tonic::codegen::Bytes;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use crate::metrics::Metrics;

/// The setting, as refusals are labelled.
pub const SETTING: &str = "request_buffer_bytes";
/// The buffer, as `coherence_buffer_bytes` labels it.
pub const BUFFER: &str = "requests";
/// Messages of at most this many bytes (5-byte prefix included) are small: they draw on the
/// quarter of the budget kept for them.
pub const SMALL_REQUEST_BYTES: usize = 64 * 1024;
/// The least `request_buffer_bytes` can be: its small quarter holds four small messages.
pub const MIN_REQUEST_BUFFER_BYTES: usize = 16 * SMALL_REQUEST_BYTES;
/// The gRPC message prefix: a compression flag and a big-endian u32 length.
const PREFIX_BYTES: usize = 5;

/// One share of the budget.
struct Share {
    limit: usize,
    held: AtomicUsize,
    /// Whether a message may pass the limit when nothing else holds any of this share.
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

    /// Counts `bytes`; false (and nothing counted) when they do not fit.
    fn take(&self, bytes: usize) -> bool {
        let before = self.held.fetch_add(bytes, Ordering::AcqRel);
        let fits = before.saturating_add(bytes) <= self.limit;
        if fits || (self.alone_admitted && before == 0) {
            return true;
        }
        self.held.fetch_sub(bytes, Ordering::AcqRel);
        false
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
}

impl Held {
    fn new(budget: &Arc<Budget>) -> Held {
        Held {
            budget: Arc::clone(budget),
            small: AtomicUsize::new(0),
            large: AtomicUsize::new(0),
        }
    }

    /// Counts one message of `bytes` (prefix included) against its share.
    fn take(&self, bytes: usize) -> Result<(), Status> {
        let small = bytes <= SMALL_REQUEST_BYTES;
        if !self.budget.share(small).take(bytes) {
            self.budget.refused.inc();
            let limit = self.budget.limit;
            return Err(Status::resource_exhausted(format!(
                "{SETTING}: a request of {bytes} bytes does not fit in what the sidecar holds \
                 for requests ({limit} bytes in all, a quarter of it kept for requests of at \
                 most {SMALL_REQUEST_BYTES} bytes); retry with backoff, or send smaller batches"
            )));
        }
        let mine = if small { &self.small } else { &self.large };
        mine.fetch_add(bytes, Ordering::AcqRel);
        self.budget.gauge.inc_by(bytes as i64);
        Ok(())
    }

    fn release(&self) {
        for (small, mine) in [(true, &self.small), (false, &self.large)] {
            let bytes = mine.swap(0, Ordering::AcqRel);
            if bytes > 0 {
                self.budget.share(small).give_back(bytes);
                self.budget.gauge.dec_by(bytes as i64);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

/// Where a request body is in its gRPC framing: reading a message's prefix, or skipping the
/// rest of a message already counted.
#[derive(Debug, Default)]
struct Framing {
    prefix: [u8; PREFIX_BYTES],
    prefix_read: usize,
    message_left: u64,
}

impl Framing {
    /// Walks `data`; the size (prefix included) of each message whose prefix it completes.
    fn messages_begun(
        &mut self,
        mut data: &[u8],
        mut begun: impl FnMut(usize) -> Result<(), Status>,
    ) -> Result<(), Status> {
        while !data.is_empty() {
            if self.message_left > 0 {
                let skip = data
                    .len()
                    .min(usize::try_from(self.message_left).unwrap_or(usize::MAX));
                self.message_left -= skip as u64;
                data = &data[skip..];
                continue;
            }
            let take = data.len().min(PREFIX_BYTES - self.prefix_read);
            self.prefix[self.prefix_read..self.prefix_read + take].copy_from_slice(&data[..take]);
            self.prefix_read += take;
            data = &data[take..];
            if self.prefix_read == PREFIX_BYTES {
                self.prefix_read = 0;
                let [_, a, b, c, d] = self.prefix;
                let length = u32::from_be_bytes([a, b, c, d]);
                self.message_left = u64::from(length);
                begun((length as usize).saturating_add(PREFIX_BYTES))?;
            }
        }
        Ok(())
    }
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
        let held = Arc::new(Held::new(&self.budget));
        let request = request.map(|body| {
            tonic::body::Body::new(CountedBody {
                inner: body,
                held: Arc::clone(&held),
                framing: Framing::default(),
            })
        });
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            // The handler has answered: the decoded request is gone (a response stream keeps
            // only what it reads from the rings, bounded on its own).
            held.release();
            answer
        })
    }
}

/// A request body whose messages count against the budget as their prefixes arrive.
struct CountedBody {
    inner: tonic::body::Body,
    held: Arc<Held>,
    framing: Framing,
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                let this = &mut *self;
                let held = &this.held;
                if let Err(refused) = this.framing.messages_begun(data, |bytes| held.take(bytes)) {
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

    fn message(length: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.resize(PREFIX_BYTES + length as usize, 7);
        bytes
    }

    #[test]
    fn each_message_is_counted_at_its_announced_size_when_its_prefix_is_complete() {
        let mut stream = message(10);
        stream.extend(message(0));
        stream.extend(message(300));
        for chunk in [1, 2, 3, 5, 7, 64, stream.len()] {
            let mut framing = Framing::default();
            let mut begun = Vec::new();
            for piece in stream.chunks(chunk) {
                framing
                    .messages_begun(piece, |bytes| {
                        begun.push(bytes);
                        Ok(())
                    })
                    .expect("nothing refused");
            }
            assert_eq!(begun, [15, 5, 305], "in chunks of {chunk}");
        }
        let mut framing = Framing::default();
        let mut begun = Vec::new();
        framing
            .messages_begun(&[0, 0xff, 0xff, 0xff, 0xff], |bytes| {
                begun.push(bytes);
                Ok(())
            })
            .expect("counted");
        assert_eq!(
            begun,
            [u32::MAX as usize + PREFIX_BYTES],
            "the announced size, not the bytes read"
        );
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

        let a = Held::new(&budget);
        let b = Held::new(&budget);
        assert!(
            a.take(large + 1).is_ok(),
            "a large request alone passes its share"
        );
        let refused = b
            .take(SMALL_REQUEST_BYTES + 1)
            .expect_err("no other large one then");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains(SETTING), "{refused:?}");
        for _ in 0..4 {
            assert!(
                b.take(SMALL_REQUEST_BYTES).is_ok(),
                "small ones have their quarter"
            );
        }
        assert!(b.take(1).is_err(), "until it is full");
        assert_eq!(metrics.limit_counter(SETTING).get(), 2);
        assert_eq!(metrics.buffer(BUFFER).get() as usize, large + 1 + small);
        drop(a);
        assert!(b.take(large).is_ok(), "the large share is free again");
        drop(b);
        assert_eq!(budget.small.held.load(Ordering::Acquire), 0);
        assert_eq!(budget.large.held.load(Ordering::Acquire), 0);
        assert_eq!(metrics.buffer(BUFFER).get(), 0, "everything given back");
    }
}
