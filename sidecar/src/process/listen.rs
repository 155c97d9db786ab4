//! Where the gRPC API listens: `host:port` (TCP, loopback by default) or `unix:///path`, a
//! Unix domain socket — so that containers of a pod sharing an `emptyDir` talk to their
//! sidecar with no TCP port open at all, and file permissions decide who may connect.
//!
//! The socket file is made `0660` (owner and group: in Kubernetes, give the pod an `fsGroup`),
//! a stale file left by a crashed sidecar is replaced, a live one is never taken over, and the
//! file is removed at shutdown.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::net::{TcpListener, UnixListener};

/// The `listen` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

const UNIX_PREFIX: &str = "unix://";

/// Why a listen address was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0:?} is neither host:port (e.g. 127.0.0.1:50051) nor unix:///absolute/path")]
pub struct ListenAddrError(String);

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(text: &str) -> Result<ListenAddr, ListenAddrError> {
        if let Some(path) = text.strip_prefix(UNIX_PREFIX) {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(ListenAddrError(text.to_string()));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        text.parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| ListenAddrError(text.to_string()))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> ListenAddr {
        ListenAddr::Tcp(addr)
    }
}

impl serde::Serialize for ListenAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ListenAddr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl ListenAddr {
    /// Reachable only from this host (loopback) or through the file system (a Unix socket).
    pub fn is_local(&self) -> bool {
        match self {
            ListenAddr::Tcp(addr) => addr.ip().is_loopback(),
            ListenAddr::Unix(_) => true,
        }
    }

    /// The address a client passes to `Client::connect` / `coherencectl --addr`.
    pub fn client_url(&self) -> String {
        match self {
            ListenAddr::Tcp(addr) => format!("http://{addr}"),
            ListenAddr::Unix(_) => self.to_string(),
        }
    }
}

/// A bound gRPC listener.
pub enum GrpcListener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl GrpcListener {
    pub async fn bind(addr: &ListenAddr) -> io::Result<GrpcListener> {
        match addr {
            ListenAddr::Tcp(addr) => Ok(GrpcListener::Tcp(TcpListener::bind(addr).await?)),
            ListenAddr::Unix(path) => {
                remove_stale_socket(path).await?;
                let listener = UnixListener::bind(path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                Ok(GrpcListener::Unix(listener, path.clone()))
            }
        }
    }

    /// The address actually bound (the port the OS chose for port 0).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            GrpcListener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            GrpcListener::Unix(_, path) => Ok(ListenAddr::Unix(path.clone())),
        }
    }
}

/// Removes a socket file nobody listens on (left by a process that died); refuses to touch a
/// live one or anything that is not a socket.
async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process listens on this socket",
        )),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_forms() {
        let tcp: ListenAddr = "127.0.0.1:50051".parse().unwrap();
        assert!(tcp.is_local());
        assert_eq!(tcp.to_string(), "127.0.0.1:50051");
        let unix: ListenAddr = "unix:///run/coherence/grpc.sock".parse().unwrap();
        assert_eq!(unix, ListenAddr::Unix("/run/coherence/grpc.sock".into()));
        assert_eq!(unix.to_string(), "unix:///run/coherence/grpc.sock");
        assert!(unix.is_local());
        assert!(!"0.0.0.0:1".parse::<ListenAddr>().unwrap().is_local());
        assert!("unix://relative.sock".parse::<ListenAddr>().is_err());
        assert!("nowhere".parse::<ListenAddr>().is_err());
    }
}
