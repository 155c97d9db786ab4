from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_SINGLE: _ClassVar[Role]
    ROLE_SCHEDULING_PUBLISHER: _ClassVar[Role]
    ROLE_SUBSCRIBER: _ClassVar[Role]
    ROLE_UNKNOWN: _ClassVar[Role]

class RoleMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_MODE_UNSPECIFIED: _ClassVar[RoleMode]
    ROLE_MODE_STATIC: _ClassVar[RoleMode]
    ROLE_MODE_ELECTED: _ClassVar[RoleMode]
ROLE_UNSPECIFIED: Role
ROLE_SINGLE: Role
ROLE_SCHEDULING_PUBLISHER: Role
ROLE_SUBSCRIBER: Role
ROLE_UNKNOWN: Role
ROLE_MODE_UNSPECIFIED: RoleMode
ROLE_MODE_STATIC: RoleMode
ROLE_MODE_ELECTED: RoleMode

class ListServersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("server_id", "address", "version", "started_at_unix_ms", "last_heartbeat_unix_ms", "role")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    address: str
    version: str
    started_at_unix_ms: int
    last_heartbeat_unix_ms: int
    role: Role
    def __init__(self, server_id: _Optional[str] = ..., address: _Optional[str] = ..., version: _Optional[str] = ..., started_at_unix_ms: _Optional[int] = ..., last_heartbeat_unix_ms: _Optional[int] = ..., role: _Optional[_Union[Role, str]] = ...) -> None: ...

class ListServersResponse(_message.Message):
    __slots__ = ("servers", "leader_id")
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    servers: _containers.RepeatedCompositeFieldContainer[ServerInfo]
    leader_id: str
    def __init__(self, servers: _Optional[_Iterable[_Union[ServerInfo, _Mapping]]] = ..., leader_id: _Optional[str] = ...) -> None: ...

class GetRoleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchRoleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RoleStatus(_message.Message):
    __slots__ = ("role", "mode", "server_id", "leader_id", "live_servers", "reason")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LIVE_SERVERS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    role: Role
    mode: RoleMode
    server_id: str
    leader_id: str
    live_servers: int
    reason: str
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., mode: _Optional[_Union[RoleMode, str]] = ..., server_id: _Optional[str] = ..., leader_id: _Optional[str] = ..., live_servers: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...
