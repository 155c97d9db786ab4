"""Python client for the coherence sidecar: cache coherence for apps that run on several
servers, each with its own in-process cache.

- `Client`: typed calls to the sidecar beside this server (CacheVersions, and through
  `jobs()`, `servers()`, `notifications()` the rest of the kit), each with a deadline.
- `MirroredClient` (`client.with_mirror()`): an in-process mirror fed by `Watch` that answers
  most checks in this process's memory, by the rules of docs/client-protocol.md.
- `CoherentCache`: stamp before load, single flight per key, fail closed, bump after write, on a
  `Client` or a `MirroredClient`.
- `Jobs`: leases with fencing tokens, recurring runs, `keep_alive`.
"""

from .cache import BumpReport, CacheStats, CoherentCache, VersionSource
from .client import DEFAULT_TIMEOUT, Client, parse_address
from .errors import (
    CoherenceError,
    ConnectError,
    DeadlineExceeded,
    InvalidAddress,
    InvalidArgument,
    LeaseLost,
    Malformed,
    StatusError,
    Unavailable,
)
from .jobs import Granted, Held, Jobs, Lease, RunGranted, RunRefused
from .mirror import MirroredClient, MirrorEvent, MirrorOptions, MirrorStats
from .keep_alive import LeaseExpired, LeaseKeeper, LeaseLoss, LeaseRefused
from .notifications import Message, Missed, Notifications, Subscribed
from .servers import Role, RoleMode, RoleStatus, ServerInfo, ServerList, Servers
from .versions import (
    CheckResult,
    CheckSource,
    Consistency,
    Freshness,
    MirrorLeaseAnswer,
    Position,
    Version,
)
from .watch import Heartbeat, Invalidated, Resync

__all__ = [
    "BumpReport",
    "CacheStats",
    "CheckResult",
    "CheckSource",
    "Client",
    "CoherenceError",
    "CoherentCache",
    "ConnectError",
    "Consistency",
    "DEFAULT_TIMEOUT",
    "DeadlineExceeded",
    "Freshness",
    "Granted",
    "Heartbeat",
    "Held",
    "InvalidAddress",
    "InvalidArgument",
    "Invalidated",
    "Jobs",
    "Lease",
    "LeaseExpired",
    "LeaseKeeper",
    "LeaseLoss",
    "LeaseLost",
    "LeaseRefused",
    "Malformed",
    "Message",
    "MirrorEvent",
    "MirrorLeaseAnswer",
    "MirrorOptions",
    "MirrorStats",
    "MirroredClient",
    "Missed",
    "Notifications",
    "Position",
    "Resync",
    "Role",
    "RoleMode",
    "RoleStatus",
    "RunGranted",
    "RunRefused",
    "ServerInfo",
    "ServerList",
    "Servers",
    "StatusError",
    "Subscribed",
    "Unavailable",
    "VersionSource",
    "Version",
    "parse_address",
]
