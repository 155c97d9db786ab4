//! A bare HTTP/1.0 `GET`, for the sidecar's admin listener (`/metrics`, `/livez`, `/readyz`):
//! tests check status, headers and body exactly as a scraper gets them, without an HTTP
//! client library in between. The connection closes after the response.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one exchange (connect, request, whole response) may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// The response to [`http_get`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// The status line and headers, as received.
    pub headers: String,
    pub body: String,
}

/// `GET path` on `addr` with an optional `Accept` header. `None` when nothing answered within
/// [`HTTP_TIMEOUT`] (refused, closed, silent) or the answer was not an HTTP response.
pub async fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Option<HttpResponse> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some(HttpResponse {
            status,
            headers: head.to_string(),
            body: body.to_string(),
        })
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}
