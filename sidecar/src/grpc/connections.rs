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
//!
//! Accepting can fail for the process as a whole — out of file descriptors (`EMFILE`, the
//! pod's `ulimit` below `max_connections` plus what Redis and the admin port hold), out of
//! kernel memory. tonic's accept loop then tries again at once, and the listener, whose
//! pending connection is still there, fails again at once: a loop that burns a CPU of the pod
//! for as long as the shortage lasts. So an accept error that is not about one connection
//! pauses accepting, 10 ms doubling up to 1 s (what hyper and axum do), logged and counted in
//! `coherence_accept_errors_total`; admitted connections are served meanwhile, and the pending
//! ones are accepted once descriptors are free again.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

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
    accept_errors: Counter,
}

impl ConnectionSlots {
    pub fn new(max: usize, metrics: &Metrics) -> ConnectionSlots {
        ConnectionSlots {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            open: metrics.connections_open.clone(),
            refused: metrics.limit_counter(SETTING),
            accept_errors: metrics.accept_errors.clone(),
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
    /// arrive. Accept errors pass through (the server logs and goes on), those of the process
    /// as a whole after a pause ([`AcceptPause`]).
    pub fn limit<S, IO>(self, incoming: S) -> impl Stream<Item = io::Result<Admitted<IO>>>
    where
        S: Stream<Item = io::Result<IO>>,
    {
        let mut pause = AcceptPause::default();
        let accept_errors = self.accept_errors.clone();
        incoming
            .then(move |accepted| {
                let wait = pause.after(&accepted);
                if let Err(err) = &accepted {
                    accept_errors.inc();
                    match wait {
                        Some(wait) => tracing::warn!(
                            error = %err,
                            pause_ms = wait.as_millis() as u64,
                            "accepting a connection failed; pausing accepts"
                        ),
                        None => tracing::debug!(error = %err, "a connection failed while accepted"),
                    }
                }
                async move {
                    if let Some(wait) = wait {
                        tokio::time::sleep(wait).await;
                    }
                    accepted
                }
            })
            .filter_map(move |accepted| {
                let admitted = match accepted {
                    Ok(io) => self.admit(io).map(Ok),
                    Err(err) => Some(Err(err)),
                };
                std::future::ready(admitted)
            })
    }
}

/// How long to pause accepting after an error: none after an error of one connection (its
/// client reset it before it was accepted), 10 ms after the first error of the process as a
/// whole, doubled after each that follows up to 1 s, and back to 10 ms once a connection is
/// accepted again.
#[derive(Debug)]
struct AcceptPause {
    next: Duration,
}

impl AcceptPause {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// The pause before accepting again after `accepted`.
    fn after<IO>(&mut self, accepted: &io::Result<IO>) -> Option<Duration> {
        match accepted {
            Ok(_) => {
                self.next = Self::FIRST;
                None
            }
            Err(err) if Self::of_one_connection(err) => None,
            Err(_) => {
                let wait = self.next;
                self.next = (self.next * 2).min(Self::MAX);
                Some(wait)
            }
        }
    }

    /// Errors that end one pending connection, not accepting as such.
    fn of_one_connection(err: &io::Error) -> bool {
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
                | io::ErrorKind::Interrupted
        )
    }
}

impl Default for AcceptPause {
    fn default() -> AcceptPause {
        AcceptPause { next: Self::FIRST }
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

    #[test]
    fn accepting_pauses_after_errors_of_the_process_and_not_after_those_of_one_connection() {
        let out_of_descriptors = || Err::<(), _>(io::Error::from_raw_os_error(24)); // EMFILE
        let mut pause = AcceptPause::default();
        let pauses: Vec<_> = (0..9).map(|_| pause.after(&out_of_descriptors())).collect();
        let ms = |ms| Some(Duration::from_millis(ms));
        assert_eq!(
            pauses,
            [
                ms(10),
                ms(20),
                ms(40),
                ms(80),
                ms(160),
                ms(320),
                ms(640),
                ms(1000),
                ms(1000)
            ]
        );
        let reset = Err::<(), _>(io::Error::from(io::ErrorKind::ConnectionAborted));
        assert_eq!(
            pause.after(&reset),
            None,
            "one client's reset does not pause"
        );
        assert_eq!(pause.after(&Ok(())), None);
        assert_eq!(
            pause.after(&out_of_descriptors()),
            ms(10),
            "an accept starts over"
        );
    }
}
