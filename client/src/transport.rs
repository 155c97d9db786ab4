//! How a client reaches its sidecar: TCP (`http://127.0.0.1:50051`, `127.0.0.1:50051`) or a
//! Unix domain socket (`unix:///run/coherence/grpc.sock`, for pods that share an `emptyDir` and
//! expose no TCP port at all), and the bearer token sent with every call when the sidecar
//! requires one (its `auth_token_file`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::Error;

/// A channel with the token interceptor: what every generated client of the crate runs on.
pub(crate) type Transport = InterceptedService<Channel, AuthToken>;

pub(crate) fn transport(channel: Channel, auth: AuthToken) -> Transport {
    InterceptedService::new(channel, auth)
}

/// The path of a `unix://` address (`unix:///run/x.sock` → `/run/x.sock`).
pub(crate) fn unix_path(addr: &str) -> Option<&str> {
    addr.strip_prefix("unix://")
}

/// An endpoint that reaches the socket at `path` whatever the URI (which only fills the
/// `:authority` of each request).
fn unix_endpoint(path: &str) -> Result<(Endpoint, PathBuf), Error> {
    if !path.starts_with('/') {
        return Err(Error::invalid_address(
            format!("unix://{path}"),
            "a Unix socket address is unix:///absolute/path",
        ));
    }
    let endpoint =
        Endpoint::from_static("http://localhost").connect_timeout(Duration::from_secs(1));
    Ok((endpoint, PathBuf::from(path)))
}

fn connect_error(address: &str, err: tonic::transport::Error) -> Error {
    Error::Connect {
        address: address.to_string(),
        source: Arc::new(err),
    }
}

fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future: Send,
> + Send
       + 'static {
    tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    })
}

/// Connects to the sidecar's Unix socket at `path`.
pub(crate) async fn connect_unix(path: &str) -> Result<Channel, Error> {
    let (endpoint, socket) = unix_endpoint(path)?;
    endpoint
        .connect_with_connector(unix_connector(socket))
        .await
        .map_err(|e| connect_error(&format!("unix://{path}"), e))
}

/// A channel to the sidecar's Unix socket that connects on first use.
pub(crate) fn connect_unix_lazy(path: &str) -> Result<Channel, Error> {
    let (endpoint, socket) = unix_endpoint(path)?;
    Ok(endpoint.connect_with_connector_lazy(unix_connector(socket)))
}

/// A tonic channel to the sidecar at `addr` (any form [`crate::Client::connect`] takes), with
/// `call_timeout` as every call's deadline, for code that uses the generated gRPC clients
/// directly; wrap it with [`AuthToken`] (`InterceptedService::new(channel, token)`) when the
/// sidecar requires a token.
pub async fn connect_channel(addr: &str, call_timeout: Duration) -> Result<Channel, Error> {
    let (endpoint, socket) = match unix_path(addr) {
        Some(path) => {
            let (endpoint, socket) = unix_endpoint(path)?;
            (endpoint, Some(socket))
        }
        None => (crate::client::endpoint(addr)?, None),
    };
    let endpoint = endpoint.timeout(call_timeout);
    let connected = match socket {
        Some(socket) => {
            endpoint
                .connect_with_connector(unix_connector(socket))
                .await
        }
        None => endpoint.connect().await,
    };
    connected.map_err(|e| connect_error(addr, e))
}

/// The bearer token sent as `authorization: Bearer <token>` with every call (none by
/// default). `Debug` never shows it.
#[derive(Clone, Default)]
pub struct AuthToken(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AuthToken(***)"
        } else {
            "AuthToken(none)"
        })
    }
}

/// Why a bearer token cannot be used (never quotes the token).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read the auth token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token is empty or holds characters a header cannot carry.
    #[error("the auth token must be non-empty visible ASCII without spaces")]
    Invalid,
}

impl AuthToken {
    /// A token given as text (visible ASCII, no spaces).
    pub fn new(token: &str) -> Result<AuthToken, TokenError> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Invalid);
        }
        let value =
            MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| TokenError::Invalid)?;
        Ok(AuthToken(Some(value)))
    }

    /// The token in a file (a mounted Kubernetes Secret), trailing newline ignored.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<AuthToken, TokenError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AuthToken::new(text.trim_end_matches(['\n', '\r']))
    }
}

impl Interceptor for AuthToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}
