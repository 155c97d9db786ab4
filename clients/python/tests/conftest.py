"""Fixtures: the real sidecars and Redis the tests run against.

`cargo test --test python_client` (part of `cargo test --workspace`) starts redis-server
processes on free ports and sidecars on them, then runs this suite with their addresses in the
environment:

- COHERENCE_TEST_SIDECAR_A, COHERENCE_TEST_SIDECAR_B: two sidecars (server ids "py-a" and
  "py-b") of one namespace on one Redis;
- COHERENCE_TEST_FAULT_SIDECAR: a sidecar on a Redis of its own, whose process id is
  COHERENCE_TEST_FAULT_REDIS_PID: tests may pause that Redis (SIGSTOP) and must resume it;
- COHERENCE_TEST_LEASED_SIDECAR, COHERENCE_TEST_LEASED_OTHER: two sidecars ("py-leased",
  "py-leased-other") of a namespace of their own, holding read leases of 1 s (so that a mirror
  may answer strong checks locally), without canary bumps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from typing import Callable, Iterator

import pytest

from coherence_client import Client


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: run this suite through `cargo test --test python_client`, "
            "which starts Redis and the sidecars and sets it",
            pytrace=False,
        )
    return value


@pytest.fixture(scope="session")
def sidecar_a() -> str:
    return _env("COHERENCE_TEST_SIDECAR_A")


@pytest.fixture(scope="session")
def sidecar_b() -> str:
    return _env("COHERENCE_TEST_SIDECAR_B")


@pytest.fixture(scope="session")
def leased_sidecar() -> str:
    return _env("COHERENCE_TEST_LEASED_SIDECAR")


@pytest.fixture(scope="session")
def leased_other() -> str:
    return _env("COHERENCE_TEST_LEASED_OTHER")


@pytest.fixture
def a(sidecar_a: str) -> Iterator[Client]:
    with Client(sidecar_a, timeout=5.0) as client:
        yield client


@pytest.fixture
def b(sidecar_b: str) -> Iterator[Client]:
    with Client(sidecar_b, timeout=5.0) as client:
        yield client


@pytest.fixture
def key() -> Callable[[str], str]:
    """Keys of this test alone (the sidecars are shared by the whole session)."""
    prefix = f"py-{uuid.uuid4().hex[:12]}"
    return lambda name: f"{prefix}:{name}"


class FaultRedis:
    """The Redis behind the fault sidecar, which a test may pause."""

    def __init__(self, sidecar: str, pid: int):
        self.sidecar = sidecar
        self.pid = pid

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP for the duration of the block: connections stay open, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def fault() -> FaultRedis:
    return FaultRedis(_env("COHERENCE_TEST_FAULT_SIDECAR"), int(_env("COHERENCE_TEST_FAULT_REDIS_PID")))
