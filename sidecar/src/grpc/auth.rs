//! Bearer-token authentication of the gRPC API, for a listener that others than the app can
//! reach (neither loopback nor a Unix socket).
//!
//! With `auth_token_file` set, every call must carry `authorization: Bearer <token>`; anything
//! else is answered `UNAUTHENTICATED` before any service sees it. The comparison takes the
//! same time whatever the bytes (`subtle`), so the answer's timing does not leak how much of a
//! guess was right. `grpc.health.v1.Health` stays open: it tells only SERVING or not, and
//! gRPC health probes (the kubelet's) cannot send a header.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Either;
use subtle::ConstantTimeEq;
use tower_layer::Layer;
use tower_service::Service;

use crate::secrets::Secret;

/// The path prefix of `grpc.health.v1.Health`, the one service that answers without a token.
pub const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Wraps every gRPC service with the token check (a no-op without a token).
#[derive(Clone)]
pub struct AuthLayer {
    expected: Option<Arc<[u8]>>,
}

impl AuthLayer {
    pub fn new(token: Option<&Secret>) -> AuthLayer {
        AuthLayer {
            expected: token.map(|t| Arc::from(format!("Bearer {}", t.expose()).into_bytes())),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            expected: self.expected.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    expected: Option<Arc<[u8]>>,
}

impl<S> Auth<S> {
    fn allows<B>(&self, request: &http::Request<B>) -> bool {
        let Some(expected) = &self.expected else {
            return true;
        };
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            return true;
        }
        request
            .headers()
            .get(http::header::AUTHORIZATION)
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected)))
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Auth<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Either<S::Future, std::future::Ready<Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if self.allows(&request) {
            Either::Left(self.inner.call(request))
        } else {
            let refused = tonic::Status::unauthenticated(
                "missing or wrong bearer token (the sidecar's auth_token_file)",
            );
            Either::Right(std::future::ready(Ok(refused.into_http())))
        }
    }
}
