from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishRequest(_message.Message):
    __slots__ = ("topic", "payload")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    topic: str
    payload: bytes
    def __init__(self, topic: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("receiving_sidecars",)
    RECEIVING_SIDECARS_FIELD_NUMBER: _ClassVar[int]
    receiving_sidecars: int
    def __init__(self, receiving_sidecars: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("topics",)
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, topics: _Optional[_Iterable[str]] = ...) -> None: ...

class Notification(_message.Message):
    __slots__ = ("topic", "payload", "publisher", "published_at_unix_ms")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    payload: bytes
    publisher: str
    published_at_unix_ms: int
    def __init__(self, topic: _Optional[str] = ..., payload: _Optional[bytes] = ..., publisher: _Optional[str] = ..., published_at_unix_ms: _Optional[int] = ...) -> None: ...

class Subscribed(_message.Message):
    __slots__ = ("topics",)
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, topics: _Optional[_Iterable[str]] = ...) -> None: ...

class MissedMessages(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class NotificationEvent(_message.Message):
    __slots__ = ("subscribed", "notification", "missed")
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    subscribed: Subscribed
    notification: Notification
    missed: MissedMessages
    def __init__(self, subscribed: _Optional[_Union[Subscribed, _Mapping]] = ..., notification: _Optional[_Union[Notification, _Mapping]] = ..., missed: _Optional[_Union[MissedMessages, _Mapping]] = ...) -> None: ...
