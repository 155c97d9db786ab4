"""The events of a `Watch` stream, typed.

These are the raw facts the sidecar sends. Building an in-process mirror on them takes the
rules of docs/client-protocol.md (when a stream counts as connected, what to drop on reconnect,
how far a heartbeat vouches); `mirror.MirroredClient` follows them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Union

from ._generated import coherence_pb2 as pb
from .versions import Position, Version

NO_FENCE = 2**64 - 1
"""`fence_age_ms` when the sidecar cannot vouch for its mirror."""


@dataclass(frozen=True)
class Invalidated:
    """`key` moved to `version`."""

    key: str
    version: Version
    sequence: int
    """The per-shard sequence number assigned atomically with the bump."""
    shard: int
    bumped_at_unix_ms: int
    """Wall-clock time of the bump on the Redis server (for display; 0 on corrections)."""
    epoch: str = ""
    """The shard's epoch ("" from sidecars that do not send it)."""
    stream_position: int = 0
    """Where this event stands on its stream (on streams opened with a `lease_id`; else 0):
    a mirror acknowledges it once applied (docs/client-protocol.md, rule 16)."""

    @property
    def position(self) -> Position | None:
        """Where `version` is known current: (epoch, sequence); None from an older sidecar.
        Reconciliation's corrections reuse the shard's current sequence, so this is an order,
        not an identity: never de-duplicate invalidations by it (docs/client-protocol.md,
        rule 6)."""
        return Position(self.epoch, self.sequence) if self.epoch else None


@dataclass(frozen=True)
class Resync:
    """Invalidations may have been lost: drop everything cached under the watched prefixes."""

    reason: str
    stream_position: int = 0
    """As `Invalidated.stream_position`."""


@dataclass(frozen=True)
class Heartbeat:
    """The stream is alive; the sidecar's mirror was fresh as of `fence_age_ms` ago when sent."""

    fence_age_ms: int | None
    """None when the sidecar cannot vouch for its mirror."""
    sent_at_unix_us: int
    """The sidecar's wall clock when it sent the heartbeat (0 when unknown)."""
    received_at: float
    """`time.monotonic()` when this client read it from the stream."""
    received_at_unix_us: int
    """This host's wall clock then (time in transit = received - sent, on the same host)."""
    max_staleness_ms: int | None = None
    """The sidecar's own staleness bound (None from a sidecar that does not send it)."""
    heartbeat_interval_ms: int | None = None
    """How often the sidecar sends heartbeats (None when not sent)."""
    stream_position: int = 0
    """As `Invalidated.stream_position`."""


WatchEvent = Union[Invalidated, Resync, Heartbeat]


def from_proto(message: pb.WatchEvent) -> WatchEvent | None:
    """The typed event, or None for a kind this client does not know."""
    kind = message.WhichOneof("event")
    if kind == "invalidated":
        inv = message.invalidated
        return Invalidated(
            key=inv.key,
            version=Version(inv.version.token),
            sequence=inv.sequence,
            shard=inv.shard,
            bumped_at_unix_ms=inv.bumped_at_unix_ms,
            epoch=inv.version.epoch,
            stream_position=message.position,
        )
    if kind == "resync":
        return Resync(reason=message.resync.reason, stream_position=message.position)
    if kind == "heartbeat":
        hb = message.heartbeat
        return Heartbeat(
            fence_age_ms=None if hb.fence_age_ms == NO_FENCE else hb.fence_age_ms,
            sent_at_unix_us=hb.sent_at_unix_us,
            received_at=time.monotonic(),
            received_at_unix_us=time.time_ns() // 1000,
            max_staleness_ms=hb.max_staleness_ms or None,
            heartbeat_interval_ms=hb.heartbeat_interval_ms or None,
            stream_position=message.position,
        )
    return None
