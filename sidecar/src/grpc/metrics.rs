//! gRPC RED metrics (rate, errors, duration) for every service on the server, as a tower layer.
//!
//! Recording metrics in each handler is easy to forget in the next service someone adds, and
//! a handler cannot see calls that never reach it (unknown method, failed decoding). Like a
//! service-mesh proxy, this layer wraps the whole tonic server instead: it counts every call by
//! service, method and final gRPC status code, and times unary calls. The status comes from the
//! `grpc-status` header (trailers-only responses, which is how tonic answers errors) or from the
//! trailers at the end of the body (successful calls and streams); a stream the client abandons
//! counts as `CANCELLED`.
//!
//! Label values stay bounded whatever clients send: a path that names no method of a known
//! service (read from the encoded protobuf descriptors, so services added later are covered
//! without code here) is counted as `service="unknown", method="unknown"`. Streaming calls are
//! counted but not timed — their duration is the client's choice, not a latency — so the
//! duration histogram holds unary latencies only.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prost::Message;
use tonic::Code;

use crate::metrics::Metrics;

/// Label value for calls outside every known service.
const UNKNOWN: &str = "unknown";

/// One gRPC method the server knows.
#[derive(Debug, Clone, Copy)]
struct MethodInfo {
    service: &'static str,
    method: &'static str,
    streaming: bool,
}

/// The methods of every service in some encoded `FileDescriptorSet`s, by HTTP/2 path.
#[derive(Debug, Default)]
pub struct KnownMethods {
    by_path: HashMap<String, MethodInfo>,
}

impl KnownMethods {
    /// Reads the services of each encoded descriptor set; a set that does not decode is
    /// skipped (its calls are then counted as `unknown`), never a reason to refuse to start.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> KnownMethods {
        let mut by_path = HashMap::new();
        for set in sets {
            let Ok(decoded) = prost_types::FileDescriptorSet::decode(*set) else {
                tracing::warn!(
                    "an encoded descriptor set does not decode; its calls are counted as unknown"
                );
                continue;
            };
            for file in decoded.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = service.name.unwrap_or_default();
                    let full = if package.is_empty() {
                        name
                    } else {
                        format!("{package}.{name}")
                    };
                    // Leaked once per method at start: label values must be `'static`, and the
                    // set is fixed for the life of the process.
                    let service_label: &'static str = Box::leak(full.clone().into_boxed_str());
                    for m in service.method {
                        let method = m.name.unwrap_or_default();
                        let path = format!("/{full}/{method}");
                        let info = MethodInfo {
                            service: service_label,
                            method: Box::leak(method.into_boxed_str()),
                            streaming: m.client_streaming.unwrap_or(false)
                                || m.server_streaming.unwrap_or(false),
                        };
                        by_path.insert(path, info);
                    }
                }
            }
        }
        KnownMethods { by_path }
    }

    fn lookup(&self, path: &str) -> MethodInfo {
        self.by_path.get(path).copied().unwrap_or(MethodInfo {
            service: UNKNOWN,
            method: UNKNOWN,
            streaming: false,
        })
    }
}

/// The tower layer; add it with `tonic::transport::Server::builder().layer(..)`.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Metrics,
    known: Arc<KnownMethods>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Metrics, known: KnownMethods) -> Self {
        GrpcMetricsLayer {
            metrics,
            known: Arc::new(known),
        }
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service the layer wraps around the server's routes.
#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = Call {
            info: self.layer.known.lookup(request.uri().path()),
            started: Instant::now(),
            metrics: self.layer.metrics.clone(),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let pending = match header_code(&parts.headers) {
                        // Trailers-only response: the call is over.
                        Some(code) => {
                            call.finish(code);
                            None
                        }
                        None => Some(call),
                    };
                    Ok(http::Response::from_parts(
                        parts,
                        MeteredBody {
                            inner: body,
                            pending,
                        },
                    ))
                }
                Err(err) => {
                    call.finish(Code::Unknown);
                    Err(err)
                }
            }
        })
    }
}

/// A call whose final status is not known yet.
struct Call {
    info: MethodInfo,
    started: Instant,
    metrics: Metrics,
}

impl Call {
    fn finish(self, code: Code) {
        let info = self.info;
        self.metrics
            .grpc_requests
            .get_or_create(&[
                ("service", info.service),
                ("method", info.method),
                ("code", code_label(code)),
            ])
            .inc();
        if !info.streaming {
            self.metrics
                .grpc_request_duration
                .get_or_create(&[("service", info.service), ("method", info.method)])
                .observe(self.started.elapsed().as_secs_f64());
        }
    }
}

fn header_code(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// The response body, recording the call when its trailers pass (or when it is dropped
/// unfinished: the client went away).
pub struct MeteredBody<B> {
    inner: B,
    pending: Option<Call>,
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.pending.take() {
            call.finish(Code::Cancelled);
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|t| header_code(t).unwrap_or(Code::Unknown)),
            Poll::Ready(Some(Err(_))) => Some(Code::Unknown),
            // A body that ends without trailers broke the gRPC protocol.
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code {
            if let Some(call) = this.pending.take() {
                call.finish(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The canonical upper-case name of a gRPC status code (as in the gRPC docs and other
/// exporters), used as the `code` label.
pub fn code_label(code: Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_coherence_and_health_methods_and_nothing_else() {
        let known = KnownMethods::from_descriptor_sets(&[
            coherence_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]);
        let check = known.lookup("/coherence.v1.CacheVersions/Check");
        assert_eq!(
            (check.service, check.method, check.streaming),
            ("coherence.v1.CacheVersions", "Check", false)
        );
        assert!(known.lookup("/coherence.v1.CacheVersions/Watch").streaming);
        assert_eq!(known.lookup("/grpc.health.v1.Health/Check").method, "Check");
        let other = known.lookup("/coherence.v1.CacheVersions/NoSuchMethod");
        assert_eq!((other.service, other.method), (UNKNOWN, UNKNOWN));
    }
}
