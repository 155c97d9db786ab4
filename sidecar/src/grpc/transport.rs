//! Limits of the gRPC server's HTTP/2 transport, so that one client cannot hold unbounded
//! work or memory through the connection itself.
//!
//! tonic leaves most of them unset: it advertises no `SETTINGS_MAX_CONCURRENT_STREAMS`, and by
//! passing `None` for hyper's reset-stream limit it turns off hyper's default guard against
//! floods of streams the server must reset (RUSTSEC-2024-0003 / CVE-2023-44487 style). Here:
//!
//! - at most `max_concurrent_streams` calls and streams per connection (advertised, so a client
//!   waits or opens another connection);
//! - request headers of at most `max_header_list_bytes` (a larger header block is refused);
//! - an HTTP/2 PING every `http2_keepalive_ms`, and a connection whose peer does not answer
//!   within `http2_keepalive_timeout_ms` is closed, its calls ended (a dead or frozen client
//!   does not pin its streams); TCP keepalive on the socket as well;
//! - at most [`MAX_LOCAL_ERROR_RESETS`] streams reset by the server for errors, and
//!   [`MAX_PENDING_ACCEPT_RESETS`] streams reset by the client before they were accepted, per
//!   connection, before it is closed with `GOAWAY` (`ENHANCE_YOUR_CALM`);
//! - every call has a deadline even when the client sends none: [`TransportLimits::call_timeout`].

use std::time::Duration;

use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

/// Streams the server may reset for errors on one connection before closing it (hyper's own
/// default, which tonic turns off).
pub const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Streams a client may reset before the server accepted them, on one connection, before it is
/// closed (h2's default, made explicit).
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// TCP keepalive probes on accepted connections start after this much silence.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The transport settings (see the configuration reference for each).
#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    pub max_concurrent_streams: u32,
    pub max_header_list_bytes: u32,
    /// `None`: no pings.
    pub keepalive: Option<Duration>,
    pub keepalive_timeout: Duration,
    /// The server's own deadline for any call (the response, not a stream's body):
    /// longer than every deadline the operations apply themselves, a last resort.
    pub call_timeout: Duration,
}

impl TransportLimits {
    /// A server builder with these limits.
    pub fn server(&self) -> Server {
        Server::builder()
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_max_header_list_size(self.max_header_list_bytes)
            .http2_keepalive_interval(self.keepalive)
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
            .timeout(self.call_timeout)
    }

    /// Accepted TCP connections: no Nagle delay (as `Server::serve` would set it: without it a
    /// response written in more than one segment waits for the client's delayed ACK, ~40 ms per
    /// batch Check) and TCP keepalive.
    pub fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
        TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(TCP_KEEPALIVE))
    }
}
