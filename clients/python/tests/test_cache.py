"""CoherentCache against real sidecars: stamp before load, single flight, fail closed."""

from __future__ import annotations

import threading

import pytest

from coherence_client import CacheStats, Client, CoherentCache, Freshness
from coherence_client import cache as cache_module
from support import eventually, free_port


def test_a_bump_racing_the_load_leaves_the_entry_stale(a, b, key):
    cache = CoherentCache(a, key)
    loads = []

    def old_row_while_another_server_writes():
        # The write (and its bump) lands after the version was read, during the load.
        b.bump([key(5)])
        loads.append("old")
        return "old row"

    assert cache.get_or_load(5, old_row_while_another_server_writes) == "old row"
    assert eventually(lambda: cache.get(5) is None), "the entry loaded across a bump was served"
    assert cache.stats().stale == 1
    assert cache.get_or_load(5, lambda: "new row") == "new row"
    assert cache.get(5) == "new row"
    assert cache.stats().loads == 2


def test_concurrent_misses_share_one_load(a, key, monkeypatch):
    callers = 16
    joined = []

    class CountedEvent(threading.Event):
        """The flight's event, counting the callers that wait on it."""

        def wait(self, timeout=None):
            joined.append(1)
            return super().wait(timeout)

    make_flight = cache_module._Flight.__init__

    def counted_flight(self):
        make_flight(self)
        self.done = CountedEvent()

    monkeypatch.setattr(cache_module._Flight, "__init__", counted_flight)
    cache = CoherentCache(a, key)
    release = threading.Event()
    loads = []
    results = []

    def loader():
        loads.append(1)
        assert release.wait(20), "the test never let the load finish"
        return 42

    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_load(1, loader)))
        for _ in range(callers)
    ]
    for t in threads:
        t.start()
    # Let the load finish only once every other caller is waiting for it.
    assert eventually(lambda: len(joined) == callers - 1), f"{len(joined)} joined"
    release.set()
    for t in threads:
        t.join(20)
    assert results == [42] * callers
    assert len(loads) == 1, f"{len(loads)} loads for one key"
    assert cache.stats() == CacheStats(loads=1), cache.stats()


def test_a_loader_error_reaches_every_caller_and_is_not_cached(a, key):
    cache = CoherentCache(a, key)

    def failing():
        raise ConnectionError("database down")

    with pytest.raises(ConnectionError, match="database down"):
        cache.get_or_load(3, failing)
    assert cache.get_or_load(3, lambda: 3) == 3


def test_without_a_sidecar_the_value_is_returned_but_never_cached():
    client = Client(f"127.0.0.1:{free_port()}", timeout=0.3)
    cache = CoherentCache(client, lambda k: f"item:{k}")
    loads = []
    for round in range(1, 4):
        assert cache.get_or_load(9, lambda: loads.append(1) or 99) == 99
        assert len(loads) == round, "nothing may be cached without a version"
    assert cache.get(9) is None
    assert cache.stats().loads == 0 and cache.stats().uncached_loads == 3


def test_when_redis_stalls_entries_are_unverifiable_not_current(fault, key):
    """The sidecar is up but cannot vouch (its Redis is paused): fail closed, and count the
    dropped entry as unverifiable, not stale."""
    with Client(fault.sidecar, timeout=1.0) as client:
        cache = CoherentCache(client, key)
        assert cache.get_or_load(1, lambda: "row 1") == "row 1"
        assert cache.get(1) == "row 1"
        stamp = client.get_one(key(1))
        with fault.paused():
            assert eventually(
                lambda: client.freshness(key(1), stamp) is Freshness.UNVERIFIABLE
            ), "the sidecar kept vouching while Redis was paused"
            assert cache.get(1) is None
            assert cache.stats().unverifiable == 1 and cache.stats().stale == 0
            assert cache.get_or_load(1, lambda: "row 1, again") == "row 1, again"
            assert cache.get(1) is None, "cached without a version"
        assert eventually(lambda: cache.get_or_load(1, lambda: "row 1") and cache.get(1) == "row 1")


def test_invalidate_after_write_drops_the_entry_on_every_server(a, b, key):
    here = CoherentCache(a, key)
    there = CoherentCache(b, key)
    assert here.get_or_load(7, lambda: "v1") == "v1"
    assert there.get_or_load(7, lambda: "v1") == "v1"
    report = here.invalidate_after_write([7, 7])
    assert report.complete and report.bumped == [key(7)]
    assert here.get(7) is None
    assert eventually(lambda: there.get(7) is None), "the other server kept serving the old row"


def test_invalidate_after_write_reports_keys_it_could_not_bump():
    client = Client(f"127.0.0.1:{free_port()}", timeout=0.3)
    cache = CoherentCache(client, lambda k: f"item:{k}", bump_attempts=3, bump_backoff=0.01)
    report = cache.invalidate_after_write([1, 2, 2])
    assert not report.complete
    assert report.not_bumped == ["item:1", "item:2"]
    assert report.last_error is not None
