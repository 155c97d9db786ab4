"""The Python side of the conformance suite (tests/conformance.rs): runs mirrors in this process
and answers the Rust test's commands, one JSON object per line on stdin and stdout.

Why a driver rather than a pytest module: the situations need faults only the Rust test can
make (a proxy stalling a sidecar's Redis subscription, a frozen gRPC connection, a Redis user
without SUBSCRIBE, in-process sidecars), interleaved step by step with what the mirror does.
With the mirror behind a command channel, one Rust scenario drives the Rust `MirroredClient`
and the Python mirror alike, and judges both by the same assertions.

Request:  {"id": 7, "op": "is_current", "mirror": "m", "key": "k", "version": "e.1.x"}
Answer:   {"id": 7, "ok": true, "result": true}   or   {"id": 7, "ok": false, "error": "..."}

Commands run on a thread pool, so several may be in flight (a Get held up by a stalled Redis
while the test bumps elsewhere); answers carry the request's id and may come out of order.
Ops: open, close, get, bump, is_current, is_current_local, wait_trusted, stats, own_writes.
Logs go to stderr; stdout carries answers only.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from coherence_client import (  # noqa: E402
    Client,
    Consistency,
    MirroredClient,
    MirrorEvent,
    MirrorOptions,
    Version,
)
from mirror_variants import mirror_class  # noqa: E402
from support import race_own_writes  # noqa: E402

mirrors: dict[str, MirroredClient] = {}
connected: dict[str, int] = {}
"""Streams each mirror opened (its "connected" events)."""
out = threading.Lock()


def reply(message: dict[str, Any]) -> None:
    line = json.dumps(message)
    with out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def open_mirror(r: dict[str, Any]) -> None:
    name = r["mirror"]
    connected[name] = 0

    def on_event(event: MirrorEvent) -> None:
        if event.kind == "connected":
            connected[name] += 1

    options = MirrorOptions(
        on_event=on_event,
        max_staleness=r.get("max_staleness_ms", 500) / 1000,
        idle_timeout=r.get("idle_timeout_ms", 3000) / 1000,
        max_entries=r.get("max_entries", 1_000_000),
        backoff_min=0.02,
        backoff_max=0.5,
    )
    client = Client(r["address"], timeout=r.get("timeout_ms", 2000) / 1000)
    mirrors[name] = mirror_class(r.get("variant", "shipped"))(client, options)


def close_mirror(r: dict[str, Any]) -> None:
    mirror = mirrors.pop(r["mirror"])
    mirror.close()
    mirror.client.close()


def stats(r: dict[str, Any]) -> dict[str, Any]:
    mirror = mirrors[r["mirror"]]
    return {
        **asdict(mirror.stats()),
        "trusted": mirror.is_trusted,
        "keys": mirror.mirrored_keys(),
        "connected": connected[r["mirror"]],
    }


def own_writes(r: dict[str, Any]) -> dict[str, Any]:
    """The concurrent own-writes race (`support.race_own_writes`); another server's bumps are
    the Rust test's business."""
    mirror = mirrors[r["mirror"]]
    seen = race_own_writes(mirror, r["key"], r.get("bumps", 300))
    return {
        "bumps": seen.bumps,
        "checks": seen.checks,
        "violations": len(seen.violations),
        "example": seen.violations[0] if seen.violations else None,
        "stats": asdict(mirror.stats()),
    }


OPS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "open": open_mirror,
    "close": close_mirror,
    "get": lambda r: mirrors[r["mirror"]].get([r["key"]])[0].token,
    "bump": lambda r: mirrors[r["mirror"]].bump([r["key"]])[0].token,
    "is_current": lambda r: mirrors[r["mirror"]].is_current(
        r["key"],
        Version(r["version"]),
        Consistency.STRONG if r.get("strong") else Consistency.BOUNDED,
    ),
    "is_current_local": lambda r: mirrors[r["mirror"]].is_current_local(
        r["key"], Version(r["version"])
    ),
    "wait_trusted": lambda r: mirrors[r["mirror"]].wait_trusted(r["timeout_ms"] / 1000),
    "stats": stats,
    "own_writes": own_writes,
}


def serve(request: dict[str, Any]) -> None:
    try:
        result = OPS[request["op"]](request)
    except Exception as error:  # noqa: BLE001 — every failure goes back to the test, named
        reply({"id": request.get("id"), "ok": False, "error": f"{type(error).__name__}: {error}"})
    else:
        reply({"id": request.get("id"), "ok": True, "result": result})


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="driver") as pool:
        for line in sys.stdin:
            if line.strip():
                pool.submit(serve, json.loads(line))
    for mirror in mirrors.values():
        mirror.close()


if __name__ == "__main__":
    main()
