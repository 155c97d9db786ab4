//! Exit codes, a contract with scripts (also in the README and `coherencectl --help`).

/// Success; for `check`: every version checked is current.
pub const OK: u8 = 0;
/// `check`: at least one version is not current (stale, or the sidecar could not vouch for it).
pub const STALE: u8 = 1;
/// Bad command line (clap's own code), or input the sidecar rejected (INVALID_ARGUMENT).
pub const USAGE: u8 = 2;
/// The sidecar could not be reached, was unavailable, or did not answer within the deadline.
pub const UNAVAILABLE: u8 = 3;
/// Anything else.
pub const OTHER_ERROR: u8 = 4;

/// A command line that clap accepted but that makes no sense (exit code [`USAGE`]).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The exit code for a failed command.
pub fn for_error(err: &anyhow::Error) -> u8 {
    use coherence_client::Error;
    if err.downcast_ref::<UsageError>().is_some()
        || err.downcast_ref::<coherence_client::TokenError>().is_some()
    {
        return USAGE;
    }
    match err.downcast_ref::<Error>() {
        Some(Error::InvalidAddress { .. } | Error::InvalidArgument { .. }) => USAGE,
        Some(err) if err.is_transient() => UNAVAILABLE,
        Some(_) | None => OTHER_ERROR,
    }
}
