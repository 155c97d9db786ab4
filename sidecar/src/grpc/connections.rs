//! A bound on the gRPC port's open connections (`max_connections`), enforced where connections
//! are accepted, for the TCP and the Unix-socket listener alike.
//!
//! Everything else the port holds is bounded per connection (streams, headers, decoded
//! requests: see `transport.rs`), so without this bound a client that opens connections in a
//! loop — a leak in the app, a retry storm that never closes its channels — would grow the
//! sidecar's memory and file descriptors without end, and the kubelet would kill it, app's
//! coherence with it. A connection past the limit is closed at once, before any byte of
//! HTTP/2 is read or written: its client sees the connection reset and may retry; every
//! admitted connection goes on being served. Refusals count in
//! `coherence_limits_reached_total{limit="max_connections"}`, open connections in
//! `coherence_connections_open`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

use crate::metrics::Metrics;

/// The setting, as refusals are labelled.
pub const SETTING: &str = "max_connections";

/// Admission of connections: at most `max` open at once.
#[derive(Clone)]
pub struct ConnectionSlots {
    slots: Arc<Semaphore>,
    open: Gauge,
    refused: Counter,
}

impl ConnectionSlots {
    pub fn new(max: usize, metrics: &Metrics) -> ConnectionSlots {
        ConnectionSlots {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            open: metrics.connections_open.clone(),
            refused: metrics.limit_counter(SETTING),
        }
    }

    /// `io` with a slot held until it is dropped (hyper drops it when the connection ends), or
    /// `None` when every slot is taken: `io` is then dropped here, which closes it.
    pub fn admit<IO>(&self, io: IO) -> Option<Admitted<IO>> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => {
                self.open.inc();
                Some(Admitted {
                    io,
                    _slot: slot,
                    open: self.open.clone(),
                })
            }
            Err(_) => {
                self.refused.inc();
                tracing::debug!(
                    setting = SETTING,
                    "connection refused: every connection slot is taken"
                );
                None
            }
        }
    }

    /// The accepted connections of `incoming` that get a slot; the others are closed as they
    /// arrive, accept errors pass through (the server logs and goes on).
    pub fn limit<S, IO>(self, incoming: S) -> impl Stream<Item = io::Result<Admitted<IO>>>
    where
        S: Stream<Item = io::Result<IO>>,
    {
        incoming.filter_map(move |accepted| {
            let admitted = match accepted {
                Ok(io) => self.admit(io).map(Ok),
                Err(err) => Some(Err(err)),
            };
            std::future::ready(admitted)
        })
    }
}

/// An admitted connection: the socket and its slot.
pub struct Admitted<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
    open: Gauge,
}

impl<IO> Drop for Admitted<IO> {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl<IO: Connected> Connected for Admitted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> IO::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Admitted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Admitted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_released_with_the_connection_and_refusals_counted() {
        let metrics = Metrics::new();
        let slots = ConnectionSlots::new(2, &metrics);
        let a = slots.admit(());
        let b = slots.admit(());
        assert!(a.is_some() && b.is_some());
        assert!(slots.admit(()).is_none(), "a third connection is refused");
        assert_eq!(metrics.connections_open.get(), 2);
        assert_eq!(metrics.limit_counter(SETTING).get(), 1);
        drop(a);
        assert_eq!(metrics.connections_open.get(), 1);
        assert!(slots.admit(()).is_some(), "a freed slot admits again");
    }
}
