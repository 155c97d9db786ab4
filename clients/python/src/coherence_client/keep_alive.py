"""Keeping a job lease alive while the work runs, and saying at once when it is lost.

A background thread renews the lease every third of its TTL and retries a failed renewal
sooner. The lease counts as lost when the sidecar refuses the token (`LeaseRefused`) or when
its local expiry passes without a renewal known to have succeeded (`LeaseExpired`): a renewal
still in flight then counts as failed, because the work must stop rather than hope. Fencing
tokens stay the real protection.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import TYPE_CHECKING

from .errors import CoherenceError, LeaseLost

if TYPE_CHECKING:
    from .jobs import Jobs, Lease

log = logging.getLogger(__name__)


class LeaseLoss(Exception):
    """Why a kept-alive lease was lost: stop the work (`raise keeper.loss` is fine)."""


class LeaseRefused(LeaseLoss):
    """The sidecar refused to renew: the lease expired or another holder took it."""


class LeaseExpired(LeaseLoss):
    """No renewal succeeded before the lease's local expiry; another holder may have it now.
    `__cause__` is the last renewal's failure, if one failed."""


class LeaseKeeper:
    """A lease renewed in the background; from `Jobs.keep_alive`. Use it as a context manager
    (leaving it stops the renewals) or call `stop()` / `release()`.

        with jobs.keep_alive(lease, ttl=30) as keeper:
            for batch in work:
                if keeper.loss:
                    raise keeper.loss
                write(batch, fencing_token=keeper.lease.fencing_token)
    """

    def __init__(self, jobs: "Jobs", lease: "Lease", ttl: float):
        self._jobs = jobs
        self._ttl = ttl
        self._lease = copy.copy(lease)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._loss: LeaseLoss | None = None
        self._renewals = 0
        self._thread = threading.Thread(
            target=self._run, name=f"coherence-keep-alive-{lease.job}", daemon=True
        )
        self._thread.start()

    @property
    def lease(self) -> "Lease":
        """The lease as last renewed (a copy; its fencing token never changes)."""
        with self._lock:
            return copy.copy(self._lease)

    @property
    def renewals(self) -> int:
        """Renewals that succeeded so far."""
        with self._lock:
            return self._renewals

    @property
    def loss(self) -> LeaseLoss | None:
        """Why the lease was lost, once it was."""
        with self._lock:
            return self._loss

    def wait_lost(self, timeout: float | None = None) -> LeaseLoss | None:
        """Waits up to `timeout` seconds for the lease to be lost; its loss, or None."""
        self._lost.wait(timeout)
        return self.loss

    def stop(self) -> None:
        """Stops renewing (the lease then runs out)."""
        self._stop.set()
        self._thread.join()

    def release(self) -> None:
        """Stops renewing and gives the lease up. `LeaseLost` when it was no longer ours."""
        self.stop()
        self._jobs.release(self.lease)

    def __enter__(self) -> "LeaseKeeper":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LeaseKeeper(job={self._lease.job!r}, renewals={self.renewals}, loss={self.loss!r})"

    def _run(self) -> None:
        period = max(self._ttl / 3, 0.001)
        retry = max(period / 3, 0.001)
        lease = copy.copy(self._lease)
        next_at = time.monotonic() + period
        last_error: CoherenceError | None = None
        while True:
            if self._stop.wait(max(0.0, min(next_at, lease.expires_at) - time.monotonic())):
                return
            left = lease.expires_at - time.monotonic()
            if left <= 0:
                loss: LeaseLoss = LeaseExpired("the lease expired before a renewal succeeded")
                loss.__cause__ = last_error
                break
            renewed = copy.copy(lease)
            try:
                # No later than the expiry: an answer after it could not undo the loss.
                self._jobs.renew(renewed, self._ttl, timeout=left)
            except LeaseLost as error:
                loss = LeaseRefused("the sidecar refused to renew the lease")
                loss.__cause__ = error
                break
            except CoherenceError as error:
                log.debug("renewal of %r failed; retrying: %s", lease.job, error)
                last_error = error
                next_at = time.monotonic() + retry
                continue
            lease = renewed
            last_error = None
            next_at = time.monotonic() + period
            with self._lock:
                self._lease = copy.copy(lease)
                self._renewals += 1
        log.warning("job lease %r (token %d) lost: %s", lease.job, lease.fencing_token, loss)
        with self._lock:
            self._loss = loss
        self._lost.set()
