"""Distributed jobs, typed (service `coherence.v1.Jobs`): a lease one server of the fleet holds
at a time, and "run this recurring job now?" answered yes for one server per period.

Every grant carries a **fencing token** that grows with every grant of the job. A lease can be
lost without its holder noticing (a long pause, a partition), so pass the token with every
write the job makes and have the resource refuse a token older than the newest it has seen
(docs/jobs.md shows the SQL). `Jobs.keep_alive` renews a lease in the background and says when
it is lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import grpc

from ._call import Target, millis
from ._generated import jobs_pb2 as pb
from ._generated import jobs_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from .keep_alive import LeaseKeeper


@dataclass
class Lease:
    """A lease held on a job: write under `fencing_token` until `expires_at` passes without a
    renewal."""

    job: str
    fencing_token: int
    """Larger than every token issued for this job before; pass it with every write."""
    holder: str
    ttl: float
    """Seconds left when the sidecar answered (granted or last renewed)."""
    expires_at: float
    """`time.monotonic()` when the lease expires unless renewed: `ttl` counted from *before*
    the request was sent, so never later than the sidecar's own expiry."""

    @property
    def remaining(self) -> float:
        """Seconds until `expires_at` (0 once passed)."""
        return max(0.0, self.expires_at - time.monotonic())


@dataclass(frozen=True)
class Granted:
    """`try_acquire`: the lease is ours."""

    lease: Lease


@dataclass(frozen=True)
class Held:
    """`try_acquire`: somebody else holds it."""

    holder: str
    fencing_token: int
    remaining: float
    """Seconds left on their lease."""


@dataclass(frozen=True)
class RunGranted:
    """`claim_run`: run the job now under `lease`; `release` it when done."""

    lease: Lease
    period: int


@dataclass(frozen=True)
class RunRefused:
    """`claim_run`: not this time."""

    because: str
    """"running" (another server's run holds the lease) or "done" (the period already ran)."""
    holder: str | None
    period: int
    next_period_in: float
    """Seconds until the next period begins."""


Acquired = Union[Granted, Held]
Claimed = Union[RunGranted, RunRefused]


class Jobs:
    """The jobs of one sidecar's namespace; from `Client.jobs()`."""

    def __init__(self, channel: grpc.Channel, target: Target, holder: str = ""):
        self._stub = pb_grpc.JobsStub(channel)
        self._target = target
        self._holder = holder

    def try_acquire(self, job: str, ttl: float) -> Acquired:
        """Takes `job`'s lease for `ttl` seconds if nobody holds it."""
        asked = time.monotonic()
        answer = self._target.unary(
            self._stub.TryAcquire,
            pb.TryAcquireRequest(job=job, ttl_ms=millis(ttl), holder=self._holder),
        )
        remaining = answer.ttl_ms / 1000
        if answer.granted:
            return Granted(
                Lease(
                    job=job,
                    fencing_token=answer.fencing_token,
                    holder=answer.holder,
                    ttl=remaining,
                    expires_at=asked + remaining,
                )
            )
        return Held(holder=answer.holder, fencing_token=answer.fencing_token, remaining=remaining)

    def renew(self, lease: Lease, ttl: float, *, timeout: float | None = None) -> float:
        """Extends `lease` to `ttl` seconds from now, updating its `ttl` and `expires_at`;
        returns the seconds left. `LeaseLost` when the lease expired or was taken over: stop
        the work. `timeout` overrides the client's deadline for this call."""
        asked = time.monotonic()
        answer = self._target.unary(
            self._stub.Renew,
            pb.RenewRequest(job=lease.job, fencing_token=lease.fencing_token, ttl_ms=millis(ttl)),
            timeout,
        )
        lease.ttl = answer.ttl_ms / 1000
        lease.expires_at = asked + lease.ttl
        return lease.ttl

    def release(self, lease: Lease) -> None:
        """Gives `lease` up (and marks a `claim_run` run done). `LeaseLost` when it was no
        longer ours."""
        self._target.unary(
            self._stub.Release, pb.ReleaseRequest(job=lease.job, fencing_token=lease.fencing_token)
        )

    def claim_run(self, job: str, period: float, lease: float | None = None) -> Claimed:
        """"Run this recurring job now?": granted to one caller in the fleet per `period`
        seconds, with a lease of `lease` seconds (the period when None)."""
        asked = time.monotonic()
        answer = self._target.unary(
            self._stub.ClaimRun,
            pb.ClaimRunRequest(
                job=job,
                period_ms=millis(period),
                lease_ms=0 if lease is None else millis(lease),
                holder=self._holder,
            ),
        )
        if answer.granted:
            remaining = answer.lease_ms / 1000
            return RunGranted(
                lease=Lease(
                    job=job,
                    fencing_token=answer.fencing_token,
                    holder=answer.holder,
                    ttl=remaining,
                    expires_at=asked + remaining,
                ),
                period=answer.period,
            )
        return RunRefused(
            because=answer.refused_because,
            holder=answer.holder or None,
            period=answer.period,
            next_period_in=answer.next_period_in_ms / 1000,
        )

    def keep_alive(self, lease: Lease, ttl: float) -> "LeaseKeeper":
        """Renews `lease` to `ttl` every third of `ttl` on a background thread until stopped,
        and reports its loss (see `LeaseKeeper`)."""
        from .keep_alive import LeaseKeeper

        return LeaseKeeper(self, lease, ttl)
