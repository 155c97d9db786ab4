//! How every call reaches the sidecar: under a deadline, and with a failure turned into an
//! [`Error`] that names the sidecar's address.
//!
//! The typed clients of the four services ([`Client`](crate::Client), [`Jobs`](crate::Jobs),
//! [`Servers`](crate::Servers), [`Notifications`](crate::Notifications)) share one channel and
//! one [`Target`], so an app that gets "unavailable" from any of them knows which sidecar.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;

use crate::error::Error;

/// The sidecar a client talks to and the deadline of each call.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    address: Arc<str>,
    timeout: Duration,
}

impl Target {
    pub(crate) fn new(address: impl Into<Arc<str>>, timeout: Duration) -> Target {
        Target {
            address: address.into(),
            timeout,
        }
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Target {
        self.timeout = timeout;
        self
    }

    /// A request that carries the deadline to the sidecar as its gRPC deadline.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Awaits one call (or the opening of a stream) for at most the deadline.
    pub(crate) async fn call<T, F>(&self, fut: F) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.error(status)),
            Err(_) => Err(Error::DeadlineExceeded {
                address: self.address.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    pub(crate) fn error(&self, status: tonic::Status) -> Error {
        Error::from_status(self.address.as_ref(), status, self.timeout)
    }
}

/// The next event of a server stream that `map` turns into one of ours; messages it maps to
/// `None` (an event kind this client does not know, from a newer sidecar) are skipped.
pub(crate) fn poll_events<P, T>(
    inner: &mut tonic::Streaming<P>,
    cx: &mut Context<'_>,
    target: &Target,
    mut map: impl FnMut(P) -> Option<T>,
) -> Poll<Option<Result<T, Error>>> {
    loop {
        match Pin::new(&mut *inner).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(status))) => return Poll::Ready(Some(Err(target.error(status)))),
            Poll::Ready(Some(Ok(message))) => {
                if let Some(event) = map(message) {
                    return Poll::Ready(Some(Ok(event)));
                }
            }
        }
    }
}

/// Milliseconds for a proto field; longer than `u64::MAX` ms saturates.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
