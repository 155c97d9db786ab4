//! A bound on the bytes of request messages the gRPC port holds at once
//! (`request_buffer_bytes`), as a tower layer around the whole server.
//!
//! Every other buffer clients can fill is bounded on its own (the rings, the batchers, the
//! streams, the connections); requests themselves were bounded only per call (the decoder
//! limit, about 12.8 MB with the defaults) and per connection (`max_concurrent_streams` of
//! them), which multiplied by `max_connections` is a bound in name only: an app that sends
//! large batches on many streams at once could grow the sidecar until the kubelet kills it.
//! Here each request's body counts against one shared budget as its bytes arrive, and keeps
//! them counted until its handler has answered (the decoded message lives that long); a body
//! that would take the total past the budget while other requests hold bytes is refused at
//! once with `RESOURCE_EXHAUSTED` naming the setting, before the rest of it is read (counted
//! in `coherence_limits_reached_total{limit="request_buffer_bytes"}`). A request alone is
//! always admitted, whatever its size within the decoder limit, so that no setting of
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

/// The shared budget.
struct Budget {
    limit: usize,
    held: AtomicUsize,
    gauge: Gauge,
    refused: Counter,
}

impl Budget {
    /// Counts `more` bytes for a request that holds `mine` already; false (and nothing
    /// counted) when that would pass the limit while other requests hold bytes.
    fn take(&self, mine: usize, more: usize) -> bool {
        let before = self.held.fetch_add(more, Ordering::AcqRel);
        let others = before.saturating_sub(mine);
        if before.saturating_add(more) > self.limit && others > 0 {
            self.held.fetch_sub(more, Ordering::AcqRel);
            self.refused.inc();
            return false;
        }
        self.gauge.inc_by(more as i64);
        true
    }

    fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
        self.gauge.dec_by(bytes as i64);
    }
}

/// The bytes one request holds: given back when its handler has answered, or when both its
/// body and its response future are gone, whichever is first.
struct Held {
    budget: Arc<Budget>,
    bytes: AtomicUsize,
}

impl Held {
    fn take(&self, more: usize) -> bool {
        let mine = self.bytes.load(Ordering::Acquire);
        if !self.budget.take(mine, more) {
            return false;
        }
        self.bytes.fetch_add(more, Ordering::AcqRel);
        true
    }

    fn release(&self) {
        let bytes = self.bytes.swap(0, Ordering::AcqRel);
        if bytes > 0 {
            self.budget.give_back(bytes);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
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
            budget: Arc::new(Budget {
                limit,
                held: AtomicUsize::new(0),
                gauge: metrics.buffer(BUFFER),
                refused: metrics.limit_counter(SETTING),
            }),
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
        let held = Arc::new(Held {
            budget: Arc::clone(&self.budget),
            bytes: AtomicUsize::new(0),
        });
        let request = request.map(|body| {
            tonic::body::Body::new(CountedBody {
                inner: body,
                held: Arc::clone(&held),
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

/// A request body whose bytes count against the budget as they arrive.
struct CountedBody {
    inner: tonic::body::Body,
    held: Arc<Held>,
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
                if !self.held.take(data.len()) {
                    let limit = self.held.budget.limit;
                    return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                        "{SETTING}: the sidecar holds requests of {limit} bytes in all; \
                         retry with backoff, or send smaller batches"
                    )))));
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

    fn budget(limit: usize, metrics: &Metrics) -> Arc<Budget> {
        RequestBudgetLayer::new(limit, metrics).budget
    }

    fn held(budget: &Arc<Budget>) -> Held {
        Held {
            budget: Arc::clone(budget),
            bytes: AtomicUsize::new(0),
        }
    }

    #[test]
    fn a_request_past_the_budget_is_refused_while_others_hold_bytes_and_admitted_alone() {
        let metrics = Metrics::new();
        let budget = budget(100, &metrics);
        let a = held(&budget);
        let b = held(&budget);
        assert!(a.take(60));
        assert!(b.take(40), "up to the budget");
        assert!(!b.take(1), "past it, while a holds bytes");
        assert_eq!(metrics.limit_counter(SETTING).get(), 1);
        assert_eq!(metrics.buffer(BUFFER).get(), 100);
        a.release();
        assert!(b.take(500), "alone, a request may pass the budget");
        assert!(!a.take(1), "and then nobody else gets in");
        drop(b);
        assert_eq!(budget.held.load(Ordering::Acquire), 0);
        assert_eq!(metrics.buffer(BUFFER).get(), 0, "everything given back");
    }
}
