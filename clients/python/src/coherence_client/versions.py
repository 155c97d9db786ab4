"""The values of the cache-version API: versions, consistency, check answers, freshness.

Kept apart from the client so that the cache helper and the in-process mirror can use them
without depending on how calls are made.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._generated import coherence_pb2 as pb


@dataclass(frozen=True, order=False)
class Version:
    """An opaque version token. Compare for equality only (a newer version is not "greater");
    store `token` next to a cached value and hand it back unchanged."""

    token: str

    def __str__(self) -> str:
        return self.token


@dataclass(frozen=True)
class Position:
    """Where in its shard's history a version is known to be its key's current one, as the
    sidecar reports with every version it answers or announces (`Version.epoch`,
    `Version.as_of_sequence` on the wire). Within one epoch a higher sequence is newer
    knowledge; positions of different epochs are not ordered. A mirror orders what it learns
    about a key by it (docs/client-protocol.md, rule 8)."""

    epoch: str
    sequence: int

    @classmethod
    def of(cls, version: pb.Version) -> "Position | None":
        """The position of a version on the wire; None from sidecars that do not send one."""
        return cls(version.epoch, version.as_of_sequence) if version.epoch else None


class Consistency(enum.Enum):
    """How fresh an answer must be."""

    BOUNDED = pb.CONSISTENCY_UNSPECIFIED
    """Reflects every bump completed more than the sidecar's max_staleness ago (fast)."""
    STRONG = pb.CONSISTENCY_STRONG
    """Reflects every bump completed before the call began (one Redis round trip, shared)."""


class CheckSource(enum.Enum):
    """Where the sidecar's answer to a check came from."""

    MIRROR = pb.CHECK_SOURCE_MIRROR
    REDIS = pb.CHECK_SOURCE_REDIS
    FAIL_CLOSED = pb.CHECK_SOURCE_FAIL_CLOSED
    """Nothing could vouch for the version in time: answered current = False."""
    UNKNOWN = pb.CHECK_SOURCE_UNSPECIFIED
    """A source this client does not know (a newer sidecar)."""

    @classmethod
    def from_proto(cls, value: int) -> "CheckSource":
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True)
class CheckResult:
    """The answer for one checked entry."""

    current: bool
    """Whether the checked version is current; False also when the sidecar could not vouch."""
    version: Version | None
    """The current version, when the sidecar knows it."""
    source: CheckSource
    no_version: bool = False
    """Redis holds no current version for the key (never issued, or expired): no token is
    current. A check never creates one; `get` does."""
    as_of: Position | None = None
    """Where `version` is known current (None without a version, or from an older sidecar)."""


class Freshness(enum.Enum):
    """Whether a stamped version is current, and if not, whether it was proven superseded."""

    CURRENT = "current"
    STALE = "stale"
    """A newer version exists."""
    UNVERIFIABLE = "unverifiable"
    """Nothing could vouch for the version (sidecar or Redis unreachable, deadline passed):
    treat it as not current (fail closed), though it may well be current."""

    @property
    def is_current(self) -> bool:
        return self is Freshness.CURRENT

    @classmethod
    def of(cls, result: CheckResult) -> "Freshness":
        if result.source is CheckSource.FAIL_CLOSED:
            return cls.UNVERIFIABLE
        return cls.CURRENT if result.current else cls.STALE


@dataclass(frozen=True)
class MirrorLeaseAnswer:
    """What `Client.mirror_lease` answered (docs/client-protocol.md, rule 17)."""

    granted: float
    """Seconds of lease, counted from the instant the request was sent (before taking off the
    clock-rate allowance); 0 when nothing was granted."""
    min_position: int
    """The stream position the mirror must have applied before answering under the lease."""
    refused: str = ""
    """Why nothing was granted (empty when the call asked for no lease)."""
