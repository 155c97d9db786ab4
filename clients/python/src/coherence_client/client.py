"""The typed client: one gRPC call per method, each with a deadline.

`Client` talks to one sidecar (the one beside this server) over an insecure local channel.
Every other part of the package (the cache helper, jobs, servers, notifications) is built on
its calls.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable, Sequence
from urllib.parse import urlsplit

import grpc

from . import watch as watch_events
from ._call import Stream, Target
from ._generated import coherence_pb2 as pb
from ._generated import coherence_pb2_grpc as pb_grpc
from .errors import CoherenceError, ConnectError, InvalidAddress, Malformed
from .jobs import Jobs
from .notifications import Notifications
from .servers import Servers
from .versions import (
    CheckResult,
    CheckSource,
    Consistency,
    Freshness,
    MirrorLeaseAnswer,
    Position,
    Version,
)

if TYPE_CHECKING:
    from .mirror import MirroredClient, MirrorOptions

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 1.0
"""Default per-call deadline, in seconds."""


def parse_address(address: str) -> str:
    """The gRPC target (`host:port`) for a sidecar address (`host:port` or
    `http://host:port`); `InvalidAddress` saying why for anything else."""

    def invalid(why: str) -> InvalidAddress:
        return InvalidAddress(f"invalid sidecar address {address!r}: {why}", address=address)

    url = address if "://" in address else f"http://{address}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise invalid(str(error)) from error
    if parts.scheme != "http":
        raise invalid(f"scheme {parts.scheme!r} is not supported (use http://host:port)")
    if not parts.hostname:
        raise invalid("no host")
    if port is None:
        raise invalid("no port (the sidecar has no default port)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise invalid("a sidecar address has no path")
    if " " in parts.netloc or parts.username or parts.password:
        raise invalid("not a host:port")
    return parts.netloc


class Client:
    """A connection to one sidecar. Safe to share between threads.

    The channel connects on first use and reconnects after the sidecar restarts;
    `Client.connect` waits for the first connection instead. Use it as a context manager, or
    call `close()`, to release the channel.

    >>> client = Client("127.0.0.1:50051")          # doctest: +SKIP
    >>> stamp = client.get_one("content")           # doctest: +SKIP
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        options: Sequence[tuple[str, Any]] = (),
    ):
        """`options` are grpcio channel arguments (`("grpc.keepalive_time_ms", 10000)`, …)."""
        self._target = Target(address, timeout)
        self._channel = grpc.insecure_channel(parse_address(address), options=list(options))
        self._stub = pb_grpc.CacheVersionsStub(self._channel)

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        options: Sequence[tuple[str, Any]] = (),
    ) -> "Client":
        """A client whose channel is connected: `ConnectError` naming the address when the
        sidecar does not accept a connection within `timeout`."""
        client = cls(address, timeout=timeout, options=options)
        try:
            grpc.channel_ready_future(client._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as error:
            client.close()
            raise ConnectError(
                f"cannot connect to the sidecar at {address} within {timeout} s", address=address
            ) from error
        return client

    @property
    def address(self) -> str:
        """The sidecar's address, as errors name it."""
        return self._target.address

    @property
    def timeout(self) -> float:
        """The per-call deadline, in seconds."""
        return self._target.timeout

    def close(self) -> None:
        """Closes the channel (calls after it fail)."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(address={self.address!r}, timeout={self.timeout!r})"

    def with_mirror(self, options: "MirrorOptions | None" = None) -> "MirroredClient":
        """This client with an in-process mirror (starts its Watch thread): most bounded
        checks answered in this process's memory (docs/client-protocol.md)."""
        from .mirror import MirroredClient

        return MirroredClient(self, options)

    # The rest of the kit, on the same channel.

    def jobs(self, holder: str = "") -> Jobs:
        """Distributed jobs: leases with fencing tokens, recurring runs. `holder` names the
        holder in leases (default: the sidecar's server id)."""
        return Jobs(self._channel, self._target, holder)

    def servers(self) -> Servers:
        """This server's role and the live servers."""
        return Servers(self._channel, self._target)

    def notifications(self) -> Notifications:
        """The notifications backplane: publish to every server, subscribe."""
        return Notifications(self._channel, self._target)

    # CacheVersions.

    def get(self, keys: Sequence[str], consistency: Consistency = Consistency.BOUNDED) -> list[Version]:
        """Current versions of `keys`, in order. A key never bumped still has one."""
        return [version for version, _ in self.get_positioned(keys, consistency)]

    def get_positioned(
        self, keys: Sequence[str], consistency: Consistency = Consistency.BOUNDED
    ) -> list[tuple[Version, Position | None]]:
        """`get`, with the position each version is known current as of (for a mirror)."""
        answer = self._target.unary(
            self._stub.Get, pb.GetRequest(keys=list(keys), consistency=consistency.value)
        )
        if len(answer.versions) != len(keys):
            raise Malformed("Get answered a different number of versions", address=self.address)
        return [(Version(v.token), Position.of(v)) for v in answer.versions]

    def get_one(self, key: str, consistency: Consistency = Consistency.BOUNDED) -> Version:
        """The current version of one key: read it *before* loading what it guards."""
        return self.get([key], consistency)[0]

    def check(
        self,
        entries: Iterable[tuple[str, Version]],
        consistency: Consistency = Consistency.BOUNDED,
    ) -> list[CheckResult]:
        """Whether each `(key, version)` is current, in order. Raises when the call fails;
        `freshness` and `is_current` answer "not current" instead."""
        entries = list(entries)
        request = pb.CheckRequest(
            entries=[pb.KeyVersion(key=k, version=pb.Version(token=v.token)) for k, v in entries],
            consistency=consistency.value,
        )
        answer = self._target.unary(self._stub.Check, request)
        if len(answer.results) != len(entries):
            raise Malformed("Check answered a different number of results", address=self.address)
        return [
            CheckResult(
                current=r.current,
                version=Version(r.version.token) if r.HasField("version") else None,
                source=CheckSource.from_proto(r.source),
                no_version=r.no_version,
                as_of=Position.of(r.version) if r.HasField("version") else None,
            )
            for r in answer.results
        ]

    def freshness(
        self, key: str, version: Version, consistency: Consistency = Consistency.BOUNDED
    ) -> Freshness:
        """Whether `version` is `key`'s current version: CURRENT, STALE (superseded), or
        UNVERIFIABLE when nothing could vouch for it — the sidecar failed closed or could not
        be asked. Never raises for a failed call: fail closed."""
        try:
            result = self.check([(key, version)], consistency)[0]
        except CoherenceError as error:
            log.debug("check of %r failed; answering unverifiable: %s", key, error)
            return Freshness.UNVERIFIABLE
        return Freshness.of(result)

    def is_current(
        self, key: str, version: Version, consistency: Consistency = Consistency.BOUNDED
    ) -> bool:
        """True only when the sidecar vouches that `version` is current (fail closed)."""
        return self.freshness(key, version, consistency).is_current

    def bump(self, keys: Sequence[str]) -> list[Version]:
        """Moves `keys` to new versions (call after your write committed); returns them in
        order."""
        return [version for version, _ in self.bump_positioned(keys)]

    def bump_positioned(self, keys: Sequence[str]) -> list[tuple[Version, Position | None]]:
        """`bump`, with the position each new version is known current as of (for a mirror)."""
        answer = self._target.unary(self._stub.Bump, pb.BumpRequest(keys=list(keys)))
        if len(answer.versions) != len(keys):
            raise Malformed("Bump answered a different number of versions", address=self.address)
        return [(Version(v.token), Position.of(v)) for v in answer.versions]

    def watch(
        self, prefixes: Sequence[str] = (), lease_id: str = ""
    ) -> Stream[watch_events.WatchEvent]:
        """Invalidations of keys under `prefixes` (every key when empty), with resyncs and
        heartbeats. Returns once the sidecar has subscribed: every bump completed after that
        reaches the stream. A stream opened with a `lease_id` lets its mirror hold read leases
        (`mirror_lease`), and its events carry `stream_position`."""
        return self._target.stream(
            self._stub.Watch,
            pb.WatchRequest(prefixes=list(prefixes), lease_id=lease_id),
            watch_events.from_proto,
        )

    def mirror_lease(self, lease_id: str, applied_position: int, renew: bool) -> MirrorLeaseAnswer:
        """Acknowledges that the mirror of the stream opened with `lease_id` applied every
        event up to `applied_position`, and with `renew` asks for a read lease
        (docs/client-protocol.md, rules 16-19). Read the monotonic clock before calling: a
        grant counts from then."""
        answer = self._target.unary(
            self._stub.MirrorLease,
            pb.MirrorLeaseRequest(
                lease_id=lease_id, applied_position=applied_position, renew=renew
            ),
        )
        return MirrorLeaseAnswer(answer.granted_ms / 1000, answer.min_position, answer.refused)
