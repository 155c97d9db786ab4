//! The one error type of the crate: what went wrong with a call to the sidecar.
//!
//! Kept apart from the client so the mirror and the cache can share it without depending on
//! each other.

use std::time::Duration;

/// What went wrong with a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The sidecar address could not be parsed.
    #[error("invalid sidecar address {0}")]
    InvalidAddress(String),
    /// No connection to the sidecar could be made.
    #[error("cannot connect to the sidecar: {0}")]
    Connect(String),
    /// The sidecar refused the request (the message names the field).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The sidecar (or Redis behind it) cannot serve the call now; retry later.
    #[error("sidecar unavailable: {0}")]
    Unavailable(String),
    /// No answer within the per-call deadline.
    #[error("the sidecar did not answer within {0:?}")]
    DeadlineExceeded(Duration),
    /// A renew or release under a fencing token that is no longer the job's: the lease expired
    /// or another holder took it. Stop the work; anything it writes now must be refused.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// Any other gRPC status.
    #[error("sidecar answered {code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// The sidecar's message.
        message: String,
    },
    /// The answer did not have the expected shape.
    #[error("malformed answer from the sidecar: {0}")]
    Malformed(&'static str),
}

impl Error {
    pub(crate) fn from_status(status: tonic::Status, timeout: Duration) -> Error {
        match status.code() {
            tonic::Code::InvalidArgument => Error::InvalidArgument(status.message().to_string()),
            tonic::Code::Unavailable => Error::Unavailable(status.message().to_string()),
            tonic::Code::FailedPrecondition => Error::LeaseLost(status.message().to_string()),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Error::DeadlineExceeded(timeout)
            }
            code => Error::Status {
                code,
                message: status.message().to_string(),
            },
        }
    }

    /// The gRPC status code this error corresponds to.
    ///
    /// ```
    /// use coherence_client::Error;
    /// let err = Error::Unavailable("redis down".into());
    /// assert_eq!(err.code(), tonic::Code::Unavailable);
    /// ```
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::InvalidAddress(_) | Error::InvalidArgument(_) => tonic::Code::InvalidArgument,
            Error::Connect(_) | Error::Unavailable(_) => tonic::Code::Unavailable,
            Error::DeadlineExceeded(_) => tonic::Code::DeadlineExceeded,
            Error::LeaseLost(_) => tonic::Code::FailedPrecondition,
            Error::Status { code, .. } => *code,
            Error::Malformed(_) => tonic::Code::Internal,
        }
    }
}
