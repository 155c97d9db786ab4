"""Python client for the coherence sidecar: cache coherence for apps that run on several
servers, each with its own in-process cache.

- `Client`: typed calls to the sidecar beside this server (CacheVersions, and through
  `jobs()`, `servers()`, `notifications()` the rest of the kit), each with a deadline.
- `CoherentCache`: stamp before load, single flight per key, fail closed, bump after write.
- `Jobs`: leases with fencing tokens, recurring runs, `keep_alive`.

There is no in-process mirror yet: every check is a call to the sidecar (see
`cache.VersionSource` for where one plugs in).
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
from .keep_alive import LeaseExpired, LeaseKeeper, LeaseLoss, LeaseRefused
from .notifications import Message, Missed, Notifications, Subscribed
from .servers import Role, RoleMode, RoleStatus, ServerInfo, ServerList, Servers
from .versions import CheckResult, CheckSource, Consistency, Freshness, Version
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
    "Missed",
    "Notifications",
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
