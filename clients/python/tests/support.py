"""Helpers shared by the tests (fixtures are in conftest.py)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from coherence_client import Consistency, MirroredClient


def eventually(condition: Callable[[], bool], limit: float = 20.0, every: float = 0.01) -> bool:
    """Polls `condition` until it holds or `limit` seconds pass; whether it held."""
    deadline = time.monotonic() + limit
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


def free_port() -> int:
    """A loopback port nothing listens on (the OS picked it and it was released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OwnWrites:
    """What `race_own_writes` saw."""

    bumps: int = 0
    checks: int = 0
    violations: list[str] = field(default_factory=list)


def race_own_writes(
    mirror: MirroredClient,
    key: str,
    bumps: int,
    checkers: Sequence[bool] = (True, True, False, False),
    between: Callable[[int], None] | None = None,
) -> OwnWrites:
    """Guarantee 7 under concurrency (the Python twin of client/tests/mirror.rs
    own_bumps_stay_visible_under_concurrent_checks_and_late_invalidations): this process bumps
    `key` `bumps` times through the mirror while checker threads (those marked True also fill
    the mirror with strong checks that race the bumps) check the version each own bump
    replaced. Once an own bump has returned, that version must never again be answered
    current: each such answer is a violation. `between(i)` runs before own bump i (e.g.
    another server's bump)."""
    own = [mirror.get_one(key)]
    lock, done = threading.Lock(), threading.Event()
    seen = OwnWrites()

    def checker(strong: bool) -> None:
        checks, violations = 0, []
        while not done.is_set():
            with lock:
                latest = own[-1]
                superseded = own[-2] if len(own) > 1 else None
            if strong:
                mirror.is_current(key, latest, Consistency.STRONG)
            if superseded is not None:
                checks += 1
                if mirror.is_current(key, superseded):
                    violations.append(superseded.token)
            time.sleep(0)  # a local answer never waits: let the bumps run
        with lock:
            seen.checks += checks
            seen.violations.extend(violations)

    threads = [threading.Thread(target=checker, args=(strong,)) for strong in checkers]
    for thread in threads:
        thread.start()
    try:
        for i in range(bumps):
            if between is not None:
                between(i)
            [bumped] = mirror.bump([key])
            with lock:
                own.append(bumped)
                seen.bumps += 1
    finally:
        done.set()
        for thread in threads:
            thread.join()
    return seen
