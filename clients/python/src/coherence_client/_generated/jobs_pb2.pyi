from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TryAcquireRequest(_message.Message):
    __slots__ = ("job", "ttl_ms", "holder")
    JOB_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    job: str
    ttl_ms: int
    holder: str
    def __init__(self, job: _Optional[str] = ..., ttl_ms: _Optional[int] = ..., holder: _Optional[str] = ...) -> None: ...

class TryAcquireResponse(_message.Message):
    __slots__ = ("granted", "holder", "fencing_token", "ttl_ms")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    holder: str
    fencing_token: int
    ttl_ms: int
    def __init__(self, granted: _Optional[bool] = ..., holder: _Optional[str] = ..., fencing_token: _Optional[int] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("job", "fencing_token", "ttl_ms")
    JOB_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    job: str
    fencing_token: int
    ttl_ms: int
    def __init__(self, job: _Optional[str] = ..., fencing_token: _Optional[int] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("ttl_ms",)
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    ttl_ms: int
    def __init__(self, ttl_ms: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("job", "fencing_token")
    JOB_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job: str
    fencing_token: int
    def __init__(self, job: _Optional[str] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClaimRunRequest(_message.Message):
    __slots__ = ("job", "period_ms", "lease_ms", "holder")
    JOB_FIELD_NUMBER: _ClassVar[int]
    PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    job: str
    period_ms: int
    lease_ms: int
    holder: str
    def __init__(self, job: _Optional[str] = ..., period_ms: _Optional[int] = ..., lease_ms: _Optional[int] = ..., holder: _Optional[str] = ...) -> None: ...

class ClaimRunResponse(_message.Message):
    __slots__ = ("granted", "period", "fencing_token", "holder", "lease_ms", "next_period_in_ms", "refused_because")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PERIOD_IN_MS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_BECAUSE_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    period: int
    fencing_token: int
    holder: str
    lease_ms: int
    next_period_in_ms: int
    refused_because: str
    def __init__(self, granted: _Optional[bool] = ..., period: _Optional[int] = ..., fencing_token: _Optional[int] = ..., holder: _Optional[str] = ..., lease_ms: _Optional[int] = ..., next_period_in_ms: _Optional[int] = ..., refused_because: _Optional[str] = ...) -> None: ...
