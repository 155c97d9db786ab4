"""The exceptions of the client: what went wrong with a call to the sidecar.

Every exception that involves the network names the sidecar's address (`.address`) and keeps
the gRPC error it came from as `__cause__`, so a traceback says which sidecar and why.
"""

from __future__ import annotations

import grpc


class CoherenceError(Exception):
    """Base of every error this package raises.

    `address` is the sidecar's address (None when the error is not about one), `code` the gRPC
    status code it corresponds to.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, address: str | None = None):
        super().__init__(message)
        self.address = address


class InvalidAddress(CoherenceError):
    """The sidecar address could not be parsed (the message says why)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ConnectError(CoherenceError):
    """No connection to the sidecar could be made within the deadline."""

    code = grpc.StatusCode.UNAVAILABLE


class StatusError(CoherenceError):
    """The sidecar (or the transport under it) answered a gRPC error status."""

    def __init__(self, message: str, *, address: str, code: grpc.StatusCode, details: str):
        super().__init__(message, address=address)
        self.code = code
        self.details = details


class InvalidArgument(StatusError):
    """The sidecar refused the request; `details` names the field."""


class Unavailable(StatusError):
    """The sidecar, or Redis behind it, cannot serve the call now (or cannot be reached)."""


class DeadlineExceeded(StatusError):
    """No answer within the per-call deadline."""


class LeaseLost(StatusError):
    """A renew or release under a fencing token that is no longer the job's: the lease expired
    or another holder took it. Stop the work; anything it writes now must be refused."""


class Malformed(CoherenceError):
    """The answer did not have the expected shape."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[StatusError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: DeadlineExceeded,
    grpc.StatusCode.FAILED_PRECONDITION: LeaseLost,
}

_DESCRIBE: dict[type[StatusError], str] = {
    InvalidArgument: "the sidecar at {address} refused the request: {details}",
    Unavailable: "the sidecar at {address} is unavailable: {details}",
    DeadlineExceeded: "the sidecar at {address} did not answer in time: {details}",
    LeaseLost: "lease lost: {details}",
    StatusError: "the sidecar at {address} answered {code}: {details}",
}


def from_rpc_error(error: grpc.RpcError, address: str) -> StatusError:
    """The exception for a failed call to the sidecar at `address` (raise it `from error`)."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(code)
    kind = _BY_CODE.get(code, StatusError)
    message = _DESCRIBE[kind].format(address=address, details=details, code=code.name)
    return kind(message, address=address, code=code, details=details)
