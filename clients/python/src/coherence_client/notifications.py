"""The notifications backplane, typed (service `coherence.v1.Notifications`): small messages
fanned out to every server of the namespace.

Delivery is at most once: a subscriber is told when it may have missed messages (`Missed`).
Use it for "something changed, look again", never as the only copy of data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import grpc

from ._call import Stream, Target
from ._generated import notifications_pb2 as pb
from ._generated import notifications_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class Subscribed:
    """The subscription is live: messages published from now on are delivered."""

    topics: list[str]


@dataclass(frozen=True)
class Message:
    """A message."""

    topic: str
    payload: bytes
    publisher: str
    """The server id of the sidecar it was published through."""
    published_at_unix_ms: int


@dataclass(frozen=True)
class Missed:
    """Messages may have been lost: re-read whatever state they were about."""

    reason: str


NotificationEvent = Union[Subscribed, Message, Missed]


def _event(message: pb.NotificationEvent) -> NotificationEvent | None:
    kind = message.WhichOneof("event")
    if kind == "subscribed":
        return Subscribed(topics=list(message.subscribed.topics))
    if kind == "notification":
        n = message.notification
        return Message(
            topic=n.topic,
            payload=n.payload,
            publisher=n.publisher,
            published_at_unix_ms=n.published_at_unix_ms,
        )
    if kind == "missed":
        return Missed(reason=message.missed.reason)
    return None


class Notifications:
    """The backplane of one sidecar's namespace; from `Client.notifications()`."""

    def __init__(self, channel: grpc.Channel, target: Target):
        self._stub = pb_grpc.NotificationsStub(channel)
        self._target = target

    def publish(self, topic: str, payload: bytes) -> int:
        """Sends `payload` to every subscriber of `topic` on every server; returns how many
        sidecars were listening."""
        answer = self._target.unary(
            self._stub.Publish, pb.PublishRequest(topic=topic, payload=payload)
        )
        return answer.receiving_sidecars

    def subscribe(self, topics: Sequence[str]) -> Stream[NotificationEvent]:
        """Messages on `topics` from every server, after a first `Subscribed` event."""
        return self._target.stream(
            self._stub.Subscribe, pb.SubscribeRequest(topics=list(topics)), _event
        )
