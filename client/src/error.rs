//! The one error type of the crate: what went wrong with a call to the sidecar.
//!
//! Kept apart from the client so the mirror and the cache can share it without depending on
//! each other. Every error that involves the network names the sidecar's address and keeps its
//! cause: the transport error under a failed connection ("connection refused") is reachable
//! through [`std::error::Error::source`], so a report that walks the chain (anyhow's `{:#}`,
//! `tracing`'s error fields) says why, not only what.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The cause of an [`Error`]: shared so that errors stay cheap to clone.
pub type Source = Arc<dyn StdError + Send + Sync + 'static>;

/// What went wrong with a call.
///
/// Print it with its causes to see why: `format!("{:#}", anyhow::Error::from(err))`, or walk
/// [`std::error::Error::source`].
///
/// ```
/// use std::error::Error as _;
/// use coherence_client::Client;
///
/// let err = Client::connect_lazy("http://").unwrap_err();
/// assert!(matches!(err, coherence_client::Error::InvalidAddress { .. }));
/// assert!(err.to_string().contains("http://"));
/// assert!(err.source().is_some());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The sidecar address could not be parsed (the source says why).
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it is not an address.
        source: Source,
    },
    /// No connection to the sidecar could be made (the source is the transport error, e.g.
    /// "connection refused").
    Connect {
        /// The sidecar's address.
        address: String,
        /// The transport error.
        source: Source,
    },
    /// The sidecar refused the request (the message names the field).
    InvalidArgument {
        /// The sidecar's address.
        address: String,
        /// Its answer.
        status: SidecarStatus,
    },
    /// The sidecar (or Redis behind it) cannot serve the call now, or the connection to it
    /// failed; retry later. The source, when there is one, is the transport error.
    Unavailable {
        /// The sidecar's address.
        address: String,
        /// Its answer, or the transport's.
        status: SidecarStatus,
    },
    /// No answer within the per-call deadline.
    DeadlineExceeded {
        /// The sidecar's address.
        address: String,
        /// The deadline.
        timeout: Duration,
    },
    /// A renew or release under a fencing token that is no longer the job's: the lease expired
    /// or another holder took it. Stop the work; anything it writes now must be refused.
    LeaseLost {
        /// The sidecar's address.
        address: String,
        /// Its answer.
        status: SidecarStatus,
    },
    /// Any other gRPC status.
    Status {
        /// The sidecar's address.
        address: String,
        /// Its answer.
        status: SidecarStatus,
    },
    /// The answer did not have the expected shape.
    Malformed(&'static str),
}

/// A gRPC status answered by the sidecar or by the transport under it, kept whole.
///
/// Displays as its message; its [`source`](std::error::Error::source) is the transport error
/// the status was made from, if any (a refused connection, a reset stream).
#[derive(Debug, Clone)]
pub struct SidecarStatus(tonic::Status);

impl SidecarStatus {
    /// The gRPC status code.
    pub fn code(&self) -> tonic::Code {
        self.0.code()
    }

    /// The message.
    pub fn message(&self) -> &str {
        self.0.message()
    }

    /// The status itself (metadata, details).
    pub fn status(&self) -> &tonic::Status {
        &self.0
    }
}

impl From<tonic::Status> for SidecarStatus {
    fn from(status: tonic::Status) -> SidecarStatus {
        SidecarStatus(status)
    }
}

impl fmt::Display for SidecarStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.message() {
            "" => write!(f, "{}", self.0.code()),
            message => f.write_str(message),
        }
    }
}

impl StdError for SidecarStatus {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidAddress { address, .. } => {
                write!(f, "invalid sidecar address {address:?}")
            }
            Error::Connect { address, .. } => {
                write!(f, "cannot connect to the sidecar at {address}")
            }
            Error::InvalidArgument { address, status } => {
                write!(f, "the sidecar at {address} refused the request: {status}")
            }
            Error::Unavailable { address, status } => {
                write!(f, "the sidecar at {address} is unavailable: {status}")
            }
            Error::DeadlineExceeded { address, timeout } => {
                write!(
                    f,
                    "the sidecar at {address} did not answer within {timeout:?}"
                )
            }
            Error::LeaseLost { status, .. } => write!(f, "lease lost: {status}"),
            Error::Status { address, status } => {
                write!(
                    f,
                    "the sidecar at {address} answered {:?}: {status}",
                    status.code()
                )
            }
            Error::Malformed(what) => write!(f, "malformed answer from the sidecar: {what}"),
        }
    }
}

/// The status variants display their status's message themselves; their source is what lies
/// under the status (the transport error), so that a report of the chain says each thing once.
impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::InvalidAddress { source, .. } | Error::Connect { source, .. } => {
                Some(source.as_ref())
            }
            Error::InvalidArgument { status, .. }
            | Error::Unavailable { status, .. }
            | Error::LeaseLost { status, .. }
            | Error::Status { status, .. } => status.source(),
            Error::DeadlineExceeded { .. } | Error::Malformed(_) => None,
        }
    }
}

impl Error {
    /// The error for a call to the sidecar at `address` that failed with `status` under a
    /// deadline of `timeout`.
    pub fn from_status(
        address: impl Into<String>,
        status: tonic::Status,
        timeout: Duration,
    ) -> Error {
        let address = address.into();
        let status = SidecarStatus(status);
        match status.code() {
            tonic::Code::InvalidArgument => Error::InvalidArgument { address, status },
            tonic::Code::Unavailable => Error::Unavailable { address, status },
            tonic::Code::FailedPrecondition => Error::LeaseLost { address, status },
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Error::DeadlineExceeded { address, timeout }
            }
            _ => Error::Status { address, status },
        }
    }

    /// An [`Error::InvalidAddress`] for `address`, saying why.
    pub fn invalid_address(address: impl Into<String>, why: impl Into<String>) -> Error {
        let why: Box<dyn StdError + Send + Sync> = why.into().into();
        Error::InvalidAddress {
            address: address.into(),
            source: Arc::from(why),
        }
    }

    /// The gRPC status code this error corresponds to.
    ///
    /// ```
    /// use std::time::Duration;
    /// use coherence_client::Error;
    /// let err = Error::from_status("http://127.0.0.1:50051", tonic::Status::unavailable("redis down"), Duration::from_secs(1));
    /// assert_eq!(err.code(), tonic::Code::Unavailable);
    /// assert_eq!(err.to_string(), "the sidecar at http://127.0.0.1:50051 is unavailable: redis down");
    /// ```
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::InvalidAddress { .. } | Error::InvalidArgument { .. } => {
                tonic::Code::InvalidArgument
            }
            Error::Connect { .. } | Error::Unavailable { .. } => tonic::Code::Unavailable,
            Error::DeadlineExceeded { .. } => tonic::Code::DeadlineExceeded,
            Error::LeaseLost { .. } => tonic::Code::FailedPrecondition,
            Error::Status { status, .. } => status.code(),
            Error::Malformed(_) => tonic::Code::Internal,
        }
    }

    /// The sidecar's address, when the error came from talking to it.
    pub fn address(&self) -> Option<&str> {
        match self {
            Error::InvalidAddress { address, .. }
            | Error::Connect { address, .. }
            | Error::InvalidArgument { address, .. }
            | Error::Unavailable { address, .. }
            | Error::DeadlineExceeded { address, .. }
            | Error::LeaseLost { address, .. }
            | Error::Status { address, .. } => Some(address),
            Error::Malformed(_) => None,
        }
    }

    /// Whether retrying later may succeed: the sidecar or the connection to it is down or slow.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::Unavailable { .. } | Error::DeadlineExceeded { .. }
        )
    }
}
