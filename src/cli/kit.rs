//! What the kit's subcommands (`servers`, `role`, `jobs`) share: a channel to the sidecar within
//! the deadline, and gRPC statuses turned into the client's errors so that exit codes follow
//! [`super::exit`].

use coherence_client::Error;
use tonic::transport::{Channel, Endpoint};

use super::GlobalOptions;

/// Connects to the sidecar within the global deadline.
pub async fn channel(global: &GlobalOptions) -> anyhow::Result<Channel> {
    let uri = if global.addr.contains("://") {
        global.addr.clone()
    } else {
        format!("http://{}", global.addr)
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|_| Error::InvalidAddress(global.addr.clone()))?
        .timeout(global.timeout());
    match tokio::time::timeout(global.timeout(), endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(err)) => Err(Error::Connect(format!("{}: {err}", global.addr)).into()),
        Err(_) => Err(Error::Connect(format!(
            "{}: no answer within {:?}",
            global.addr,
            global.timeout()
        ))
        .into()),
    }
}

/// A failed call as the client crate's error (for the exit code).
pub fn call_error(status: tonic::Status, global: &GlobalOptions) -> anyhow::Error {
    let message = status.message().to_string();
    match status.code() {
        tonic::Code::InvalidArgument => Error::InvalidArgument(message),
        tonic::Code::Unavailable => Error::Unavailable(message),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            Error::DeadlineExceeded(global.timeout())
        }
        code => Error::Status { code, message },
    }
    .into()
}

/// Umbraco's name of a role, as printed.
pub fn role_name(role: coherence_proto::v1::Role) -> &'static str {
    use coherence_proto::v1::Role;
    match role {
        Role::Single => "SINGLE",
        Role::SchedulingPublisher => "SCHEDULING_PUBLISHER",
        Role::Subscriber => "SUBSCRIBER",
        Role::Unknown | Role::Unspecified => "UNKNOWN",
    }
}
