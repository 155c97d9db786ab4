//! Request checks the kit's gRPC services (Servers, Jobs, Notifications) share, each naming the
//! offending field in its `INVALID_ARGUMENT`. (Call metrics come from the server-wide
//! `grpc_metrics` layer.)

use tonic::Status;

use crate::grpc::validation::Limits;

/// Checks a job or topic name: non-empty, at most `max_key_bytes`, and no '{' or '}' (the name
/// becomes part of a Redis hash tag).
pub fn check_name(limits: &Limits, field: &str, name: &str) -> Result<(), Status> {
    limits.check_key(field, name, false)?;
    if name.contains(['{', '}']) {
        return Err(Status::invalid_argument(format!(
            "{field}: must not contain '{{' or '}}'"
        )));
    }
    Ok(())
}

/// Checks a duration field in milliseconds: 1..=`max`, or 0 when `zero_ok`.
pub fn check_ms(field: &str, value: u64, max: u64, zero_ok: bool) -> Result<(), Status> {
    if value == 0 && !zero_ok {
        return Err(Status::invalid_argument(format!(
            "{field}: must be greater than 0"
        )));
    }
    if value > max {
        return Err(Status::invalid_argument(format!(
            "{field}: {value} ms is more than the maximum ({max} ms)"
        )));
    }
    Ok(())
}
