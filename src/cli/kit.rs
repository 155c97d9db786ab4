//! What the kit's subcommands (`servers`, `role`, `jobs`) share: a channel to the sidecar within
//! the deadline, and gRPC statuses turned into the client's errors so that exit codes follow
//! [`super::exit`].

use coherence_client::{AuthToken, Error};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::GlobalOptions;

/// Connects to the sidecar (TCP or Unix socket) within the global deadline; every call
/// carries the bearer token when `--auth-token-file` names one.
pub async fn channel(
    global: &GlobalOptions,
) -> anyhow::Result<InterceptedService<Channel, AuthToken>> {
    let token = global.auth_token()?;
    let connect = coherence_client::connect_channel(&global.addr, global.timeout());
    match tokio::time::timeout(global.timeout(), connect).await {
        Ok(Ok(channel)) => Ok(InterceptedService::new(channel, token)),
        Ok(Err(err)) => Err(err.into()),
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

/// The seed's name of a role, as printed.
pub fn role_name(role: coherence_proto::v1::Role) -> &'static str {
    use coherence_proto::v1::Role;
    match role {
        Role::Single => "SINGLE",
        Role::SchedulingPublisher => "SCHEDULING_PUBLISHER",
        Role::Subscriber => "SUBSCRIBER",
        Role::Unknown | Role::Unspecified => "UNKNOWN",
    }
}
