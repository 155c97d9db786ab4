"""The mirror's read lease: strong checks answered in this process's own memory
(docs/client-protocol.md, rules 16-19; the Rust client's `mirror/lease.rs` does the same).

Each Watch stream is opened with a fresh random `lease_id`, and has a `StreamLease` of its own:
while the stream is open, a thread renews the lease (`MirrorLease` with `renew`) about four
times per grant, and acknowledges the stream position the map has applied whenever the watch
thread applied an invalidation or a resync (one call in flight, later positions coalesced into
the next call). The sidecar holds back its acknowledgements to Redis — and so every bump of
the namespace — until this mirror applied them or its lease ran out. A grant counts from the
instant the request was sent, less the 0.1 % clock-rate allowance, so it always ends before
the sidecar stops counting it.

The lease ends with its stream: the mirror drops the `StreamLease` before it clears its map,
and a new stream gets a new one, so a call still in flight when its stream ended can only
install its grant in an object nobody asks any more.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import NamedTuple

from .client import Client
from .errors import CoherenceError

log = logging.getLogger(__name__)

DRIFT = 0.001
"""How much slower than real time a clock may run (0.1 %), as in the sidecar."""

RETRY = 0.25
RETRY_MAX = 2.0
"""How soon to ask again after a first refusal or failed call (seconds); doubled after each one
more, up to `RETRY_MAX` (a sidecar with leases off refuses until it restarts, which ends the
stream)."""

RENEW_MIN = 0.01
"""Never renew more often than this, however short the grant."""


def new_lease_id() -> str:
    """A lease id never used before: 128 random bits in hex (rule 16)."""
    return secrets.token_hex(16)


class Grant(NamedTuple):
    """One grant: answers allowed until `until` (monotonic seconds) once the map applied
    `min_position`."""

    until: float
    min_position: int


class StreamLease:
    """The read lease of one Watch stream, shared by the watch thread (which reports what it
    applied), the lease thread (which renews and acknowledges) and the app's strong checks.

    Strong checks take no lock: `grant` is an immutable tuple replaced whole and `applied` an
    int written by the watch thread alone, so a reader sees either the old or the new one."""

    def __init__(self, client: Client, lease_id: str):
        self.lease_id = lease_id
        self._client = client
        self._grant: Grant | None = None
        self._applied = 0
        """The position of the last event the map finished applying (rule 16)."""
        self._wake = threading.Condition()
        self._nudged = False
        """The watch thread applied something the sidecar waits for."""
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, name="coherence-mirror-lease", daemon=True
        )

    def allows(self, now: float) -> bool:
        """Whether a strong check starting at `now` (monotonic) may be answered from the map,
        if it is trusted and knows the key (rule 19)."""
        grant = self._grant
        return grant is not None and now < grant.until and self._applied >= grant.min_position

    def applied(self, position: int, acknowledge: bool) -> None:
        """The map applied the stream up to `position`; `acknowledge` when the sidecar waits
        for it (an invalidation or a resync, not a heartbeat: rule 18)."""
        if position > self._applied:
            self._applied = position
        if acknowledge:
            with self._wake:
                self._nudged = True
                self._wake.notify()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """The stream ended: no more answers under this lease, and its thread ends once a call
        in flight returns (closing the stream's channel cuts it short)."""
        with self._wake:
            self._grant = None
            self._stopped = True
            self._wake.notify()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        """Renews the lease and acknowledges what the map applied, until stopped (rules 17, 18)."""
        renew_at = time.monotonic()
        retry = RETRY
        # Acknowledgements matter only once the sidecar granted something on this stream.
        granted_once = False
        while True:
            with self._wake:
                while not self._stopped and not (granted_once and self._nudged):
                    wait = renew_at - time.monotonic()
                    if wait <= 0:
                        break
                    self._wake.wait(wait)
                if self._stopped:
                    return
                self._nudged = False
            sent_at = time.monotonic()  # rule 17: the grant counts from before the request left
            renew = sent_at >= renew_at
            applied = self._applied
            try:
                answer = self._client.mirror_lease(self.lease_id, applied, renew)
            except CoherenceError as error:
                log.debug("mirror lease call failed: %s", error)
                renew_at = max(renew_at, sent_at + retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            if answer.granted > 0:
                term = answer.granted * (1 - DRIFT)
                with self._wake:
                    if not self._stopped:
                        self._grant = Grant(sent_at + term, answer.min_position)
                renew_at = sent_at + max(term / 4, RENEW_MIN)
                granted_once = True
                retry = RETRY
            elif renew:
                log.debug(
                    "mirror lease refused (%s): strong checks ask the sidecar", answer.refused
                )
                renew_at = sent_at + retry
                retry = min(retry * 2, RETRY_MAX)
