"""How much a local check of the Python mirror costs: nanoseconds per `is_current` answered
from the mirror, against a sidecar's `Check` over loopback for comparison.

    python3 clients/python/bench/local_check.py [--address 127.0.0.1:50051] [--keys 1000]

Needs a running sidecar (`cargo run --release -p coherence-sidecar`). Prints figures; asserts
nothing about time (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from coherence_client import Client, Consistency, MirrorOptions  # noqa: E402


def per_call_ns(calls: int, run) -> float:  # type: ignore[no-untyped-def]
    began = time.perf_counter_ns()
    run(calls)
    return (time.perf_counter_ns() - began) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=os.environ.get("COHERENCE_ADDR", "127.0.0.1:50051"))
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    client = Client.connect(args.address, timeout=5.0)
    # A long bound, so that trust does not lapse between heartbeats under a loaded machine.
    mirrored = client.with_mirror(MirrorOptions(max_staleness=5.0, idle_timeout=10.0))
    if not mirrored.wait_trusted(10):
        print("the mirror never became trusted", file=sys.stderr)
        return 1
    keys = [f"bench:local:{i}" for i in range(args.keys)]
    versions = mirrored.get(keys)
    pairs = list(zip(keys, versions))
    missing = sum(mirrored.is_current_local(k, v) is not True for k, v in pairs)
    if missing:
        print(f"{missing} keys not answered locally", file=sys.stderr)
        return 1

    def local(calls: int) -> None:
        check = mirrored.is_current_local
        n = len(pairs)
        for i in range(calls):
            key, version = pairs[i % n]
            check(key, version)

    def bounded(calls: int) -> None:
        check = mirrored.is_current
        n = len(pairs)
        for i in range(calls):
            key, version = pairs[i % n]
            check(key, version)

    def loop_only(calls: int) -> None:
        n = len(pairs)
        for i in range(calls):
            key, version = pairs[i % n]

    def remote(calls: int) -> None:
        for i in range(calls):
            key, version = pairs[i % len(pairs)]
            client.is_current(key, version, Consistency.BOUNDED)

    overhead = min(per_call_ns(args.calls, loop_only) for _ in range(args.rounds))
    def best(calls: int, run, rounds: int) -> float:  # type: ignore[no-untyped-def]
        return min(per_call_ns(calls, run) for _ in range(rounds))

    rows = [
        ("is_current_local (hit)", best(args.calls, local, args.rounds)),
        ("is_current (bounded, answered locally)", best(args.calls, bounded, args.rounds)),
        ("Client.is_current (a Check to the sidecar)", best(2_000, remote, 3)),
    ]
    print(f"Python {sys.version.split()[0]}, {args.keys} keys mirrored, best of {args.rounds} rounds")
    print(f"{'check':<45} {'ns/call':>10} {'minus loop':>11}")
    for name, ns in rows:
        print(f"{name:<45} {ns:>10.0f} {ns - overhead:>11.0f}")
    print(f"{'(the benchmark loop itself)':<45} {overhead:>10.0f}")
    stats = mirrored.stats()
    print(f"mirror: hits {stats.hits}, misses {stats.misses}, reconnects {stats.reconnects}")
    mirrored.close()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
