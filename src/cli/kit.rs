//! What the kit's subcommands (`servers`, `role`, `jobs`) share: a channel to the sidecar within
//! the deadline, and gRPC statuses turned into the client's errors so that exit codes follow
//! [`super::exit`].

use std::sync::Arc;
use std::time::Duration;

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
        Err(_) => Err(connect_timed_out(&global.addr, global.timeout()).into()),
    }
}

/// The error for a connection to `addr` not made within `timeout`.
pub fn connect_timed_out(addr: &str, timeout: Duration) -> Error {
    let why = std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {timeout:?}"),
    );
    Error::Connect {
        address: addr.to_string(),
        source: Arc::new(why),
    }
}

/// A failed call as the client crate's error (for the exit code).
pub fn call_error(status: tonic::Status, global: &GlobalOptions) -> anyhow::Error {
    Error::from_status(global.addr.as_str(), status, global.timeout()).into()
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
