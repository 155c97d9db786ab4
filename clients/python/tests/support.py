"""Helpers shared by the tests (fixtures are in conftest.py)."""

from __future__ import annotations

import socket
import time
from typing import Callable


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
