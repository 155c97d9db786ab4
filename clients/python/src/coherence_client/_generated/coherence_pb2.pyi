from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Consistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSISTENCY_UNSPECIFIED: _ClassVar[Consistency]
    CONSISTENCY_STRONG: _ClassVar[Consistency]

class CheckSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_SOURCE_UNSPECIFIED: _ClassVar[CheckSource]
    CHECK_SOURCE_MIRROR: _ClassVar[CheckSource]
    CHECK_SOURCE_REDIS: _ClassVar[CheckSource]
    CHECK_SOURCE_FAIL_CLOSED: _ClassVar[CheckSource]
CONSISTENCY_UNSPECIFIED: Consistency
CONSISTENCY_STRONG: Consistency
CHECK_SOURCE_UNSPECIFIED: CheckSource
CHECK_SOURCE_MIRROR: CheckSource
CHECK_SOURCE_REDIS: CheckSource
CHECK_SOURCE_FAIL_CLOSED: CheckSource

class Version(_message.Message):
    __slots__ = ("token", "epoch", "as_of_sequence")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    AS_OF_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    token: str
    epoch: str
    as_of_sequence: int
    def __init__(self, token: _Optional[str] = ..., epoch: _Optional[str] = ..., as_of_sequence: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("keys", "consistency")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    consistency: Consistency
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., consistency: _Optional[_Union[Consistency, str]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[Version]
    def __init__(self, versions: _Optional[_Iterable[_Union[Version, _Mapping]]] = ...) -> None: ...

class KeyVersion(_message.Message):
    __slots__ = ("key", "version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    version: Version
    def __init__(self, key: _Optional[str] = ..., version: _Optional[_Union[Version, _Mapping]] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("entries", "consistency")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[KeyVersion]
    consistency: Consistency
    def __init__(self, entries: _Optional[_Iterable[_Union[KeyVersion, _Mapping]]] = ..., consistency: _Optional[_Union[Consistency, str]] = ...) -> None: ...

class CheckResult(_message.Message):
    __slots__ = ("current", "version", "source", "no_version")
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NO_VERSION_FIELD_NUMBER: _ClassVar[int]
    current: bool
    version: Version
    source: CheckSource
    no_version: bool
    def __init__(self, current: _Optional[bool] = ..., version: _Optional[_Union[Version, _Mapping]] = ..., source: _Optional[_Union[CheckSource, str]] = ..., no_version: _Optional[bool] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CheckResult]
    def __init__(self, results: _Optional[_Iterable[_Union[CheckResult, _Mapping]]] = ...) -> None: ...

class BumpRequest(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class BumpResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[Version]
    def __init__(self, versions: _Optional[_Iterable[_Union[Version, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("prefixes", "lease_id")
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    prefixes: _containers.RepeatedScalarFieldContainer[str]
    lease_id: str
    def __init__(self, prefixes: _Optional[_Iterable[str]] = ..., lease_id: _Optional[str] = ...) -> None: ...

class Invalidation(_message.Message):
    __slots__ = ("key", "version", "sequence", "shard", "bumped_at_unix_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    BUMPED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    key: str
    version: Version
    sequence: int
    shard: int
    bumped_at_unix_ms: int
    def __init__(self, key: _Optional[str] = ..., version: _Optional[_Union[Version, _Mapping]] = ..., sequence: _Optional[int] = ..., shard: _Optional[int] = ..., bumped_at_unix_ms: _Optional[int] = ...) -> None: ...

class Resync(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("fence_age_ms", "sent_at_unix_us", "max_staleness_ms", "heartbeat_interval_ms")
    FENCE_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    fence_age_ms: int
    sent_at_unix_us: int
    max_staleness_ms: int
    heartbeat_interval_ms: int
    def __init__(self, fence_age_ms: _Optional[int] = ..., sent_at_unix_us: _Optional[int] = ..., max_staleness_ms: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("invalidated", "resync", "heartbeat", "position")
    INVALIDATED_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    invalidated: Invalidation
    resync: Resync
    heartbeat: Heartbeat
    position: int
    def __init__(self, invalidated: _Optional[_Union[Invalidation, _Mapping]] = ..., resync: _Optional[_Union[Resync, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., position: _Optional[int] = ...) -> None: ...

class MirrorLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "applied_position", "renew")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    APPLIED_POSITION_FIELD_NUMBER: _ClassVar[int]
    RENEW_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    applied_position: int
    renew: bool
    def __init__(self, lease_id: _Optional[str] = ..., applied_position: _Optional[int] = ..., renew: _Optional[bool] = ...) -> None: ...

class MirrorLeaseResponse(_message.Message):
    __slots__ = ("granted_ms", "min_position", "refused")
    GRANTED_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    granted_ms: int
    min_position: int
    refused: str
    def __init__(self, granted_ms: _Optional[int] = ..., min_position: _Optional[int] = ..., refused: _Optional[str] = ...) -> None: ...
