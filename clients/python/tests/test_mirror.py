"""The in-process mirror against real sidecars on a real Redis. (The situations each protocol
rule exists for are driven by the conformance suite, tests/conformance.rs, through
`conformance_driver.py`; the rules one step at a time are in `test_mirror_state.py`.)"""

from __future__ import annotations

import threading

import pytest

from coherence_client import (
    Client,
    CoherentCache,
    Consistency,
    Freshness,
    MirroredClient,
    MirrorEvent,
    MirrorOptions,
)
from support import eventually, race_own_writes


@pytest.fixture
def mirrored(sidecar_a: str):
    events: list[MirrorEvent] = []
    client = Client(sidecar_a, timeout=5.0)
    with client.with_mirror(MirrorOptions(on_event=events.append)) as mirror:
        mirror.events = events  # type: ignore[attr-defined]
        assert mirror.wait_trusted(10), "the mirror never trusted its stream"
        yield mirror
    client.close()


def test_answers_locally_and_sees_bumps_from_other_servers(mirrored, b, key):
    k = key("content")
    stamp = mirrored.get_one(k)
    assert mirrored.is_current_local(k, stamp) is True, "the fill answers locally"
    assert mirrored.is_current(k, stamp)
    assert mirrored.stats().hits >= 2
    bumped = b.bump([k])[0]
    assert eventually(lambda: mirrored.is_current_local(k, stamp) is False), "never invalidated"
    assert mirrored.is_current_local(k, bumped) is True
    assert mirrored.freshness(k, stamp) is Freshness.STALE
    assert [e.kind for e in mirrored.events[:2]] == ["connected", "vouched"]


def test_own_bump_is_visible_at_once(mirrored, key):
    k = key("own")
    for round_ in range(50):
        old = mirrored.get_one(k)
        new = mirrored.bump([k])[0]
        assert not mirrored.is_current(k, old), f"round {round_}: old version current"
        assert mirrored.is_current(k, new), f"round {round_}"


def test_a_key_outside_the_prefixes_always_asks_the_sidecar(sidecar_a, key):
    with Client(sidecar_a, timeout=5.0) as client:
        with client.with_mirror(MirrorOptions(prefixes=(key("in"),))) as mirror:
            assert mirror.wait_trusted(10)
            inside, outside = mirror.get_one(key("in")), mirror.get_one(key("out"))
            assert mirror.is_current_local(key("in"), inside) is True
            assert mirror.is_current_local(key("out"), outside) is None
            assert mirror.is_current(key("out"), outside)


def test_the_cache_on_a_mirror_serves_hits_from_local_memory(mirrored, b, key):
    items = CoherentCache(mirrored, lambda item_id: key(f"item:{item_id}"))
    loads = []

    def load() -> str:
        loads.append(1)
        return f"teapot {len(loads)}"

    assert items.get_or_load(42, load) == "teapot 1"
    before = mirrored.stats()
    for _ in range(100):
        assert items.get_or_load(42, load) == "teapot 1"
    after = mirrored.stats()
    assert after.hits - before.hits >= 100 and after.misses == before.misses
    # Another server writes: every server's cache drops the entry within the bound.
    b.bump([key("item:42")])
    assert eventually(lambda: items.get(42) is None)
    assert items.get_or_load(42, load) == "teapot 2"
    # This process writes: its own cache never serves the old value again.
    assert items.invalidate_after_write([42]).complete
    assert items.get_or_load(42, load) == "teapot 3"


def test_concurrent_checks_and_own_bumps_never_revive_an_own_version(mirrored, b, key):
    """Guarantee 7 under concurrency, briefly (the conformance suite runs it longer, with a
    stranger's bumps racing in another thread)."""
    k = key("race")
    def stranger(i: int) -> None:
        if i % 3 == 0:
            b.bump([k])

    seen = race_own_writes(mirrored, k, 100, between=stranger)
    assert seen.checks > 0
    assert seen.violations == []


def test_fails_closed_while_redis_is_paused_and_recovers(fault, key):
    with Client(fault.sidecar, timeout=2.0) as client:
        with client.with_mirror() as mirror:
            assert mirror.wait_trusted(10)
            k = key("paused")
            stamp = mirror.get_one(k)
            assert mirror.is_current_local(k, stamp) is True
            with fault.paused():
                # The sidecar's fences stop coming back: past the bound nothing can vouch.
                assert eventually(lambda: not mirror.is_trusted, limit=5)
                assert mirror.freshness(k, stamp) is Freshness.UNVERIFIABLE
                assert not mirror.is_current(k, stamp)
            assert mirror.wait_trusted(10), "the mirror never recovered"
            assert eventually(lambda: mirror.is_current(k, stamp))


def test_close_stops_the_mirror_and_checks_go_to_the_sidecar(sidecar_a, key):
    with Client(sidecar_a, timeout=5.0) as client:
        mirror = MirroredClient(client)
        assert mirror.wait_trusted(10)
        stamp = mirror.get_one(key("closed"))
        mirror.close()
        assert not mirror.is_trusted
        assert mirror.is_current_local(key("closed"), stamp) is None
        assert mirror.is_current(key("closed"), stamp), "answered by the sidecar"
        mine = [t for t in threading.enumerate() if t.name.startswith("coherence-mirror")]
        assert not any(t.is_alive() for t in mine)
