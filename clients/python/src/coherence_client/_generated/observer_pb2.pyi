from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnsweredCheck(_message.Message):
    __slots__ = ("key", "token", "answered_at_unix_us", "max_staleness_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_AT_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    key: str
    token: str
    answered_at_unix_us: int
    max_staleness_ms: int
    def __init__(self, key: _Optional[str] = ..., token: _Optional[str] = ..., answered_at_unix_us: _Optional[int] = ..., max_staleness_ms: _Optional[int] = ...) -> None: ...

class SubmitAnswersRequest(_message.Message):
    __slots__ = ("answers",)
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    answers: _containers.RepeatedCompositeFieldContainer[AnsweredCheck]
    def __init__(self, answers: _Optional[_Iterable[_Union[AnsweredCheck, _Mapping]]] = ...) -> None: ...

class SubmitAnswersResponse(_message.Message):
    __slots__ = ("accepted", "dropped")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    dropped: int
    def __init__(self, accepted: _Optional[int] = ..., dropped: _Optional[int] = ...) -> None: ...

class GetSloRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SloReport(_message.Message):
    __slots__ = ("server_id", "audit_sample_rate", "correct", "stale_within_bound", "violations", "undecided", "suspected", "dropped", "propagation_bucket_upper_bounds", "propagation_bucket_cumulative_counts", "propagation_count", "propagation_sum_seconds", "max_staleness_ms")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    STALE_WITHIN_BOUND_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    UNDECIDED_FIELD_NUMBER: _ClassVar[int]
    SUSPECTED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    PROPAGATION_BUCKET_UPPER_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    PROPAGATION_BUCKET_CUMULATIVE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    PROPAGATION_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROPAGATION_SUM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    audit_sample_rate: float
    correct: int
    stale_within_bound: int
    violations: int
    undecided: int
    suspected: int
    dropped: int
    propagation_bucket_upper_bounds: _containers.RepeatedScalarFieldContainer[float]
    propagation_bucket_cumulative_counts: _containers.RepeatedScalarFieldContainer[int]
    propagation_count: int
    propagation_sum_seconds: float
    max_staleness_ms: int
    def __init__(self, server_id: _Optional[str] = ..., audit_sample_rate: _Optional[float] = ..., correct: _Optional[int] = ..., stale_within_bound: _Optional[int] = ..., violations: _Optional[int] = ..., undecided: _Optional[int] = ..., suspected: _Optional[int] = ..., dropped: _Optional[int] = ..., propagation_bucket_upper_bounds: _Optional[_Iterable[float]] = ..., propagation_bucket_cumulative_counts: _Optional[_Iterable[int]] = ..., propagation_count: _Optional[int] = ..., propagation_sum_seconds: _Optional[float] = ..., max_staleness_ms: _Optional[int] = ...) -> None: ...
