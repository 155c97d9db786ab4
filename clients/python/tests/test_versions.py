"""CacheVersions through the typed client, against real sidecars on a real Redis."""

from __future__ import annotations

import threading
import time

import pytest

from coherence_client import (
    CheckSource,
    Consistency,
    Freshness,
    Heartbeat,
    InvalidArgument,
    Invalidated,
    Version,
)
from support import eventually


def test_a_new_key_has_a_version_and_keeps_it_until_bumped(a, b, key):
    first = a.get_one(key("k"))
    assert isinstance(first, Version) and first.token
    assert a.get_one(key("k")) == first
    assert b.get([key("k")], Consistency.STRONG) == [first]
    bumped = b.bump([key("k")])[0]
    assert bumped != first
    assert a.get_one(key("k"), Consistency.STRONG) == bumped


def test_a_bump_on_one_server_makes_the_old_version_stale_on_the_other(a, b, key):
    stamp = a.get_one(key("page"))
    assert a.freshness(key("page"), stamp) is Freshness.CURRENT
    new = b.bump([key("page")])[0]
    # Strong: reflects every bump completed before the call began.
    [strong] = a.check([(key("page"), stamp)], Consistency.STRONG)
    assert not strong.current and strong.version == new and strong.source is CheckSource.REDIS
    # Bounded: within max_staleness.
    assert eventually(lambda: a.freshness(key("page"), stamp) is Freshness.STALE)
    assert a.is_current(key("page"), new)


def test_a_key_without_a_version_is_never_current_and_checking_it_creates_none(a, key):
    [result] = a.check([(key("unknown"), Version("1.1.x"))])
    assert not result.current and result.no_version
    stamp = a.get_one(key("unknown"))
    [result] = a.check([(key("unknown"), stamp)])
    assert result.current and not result.no_version


def test_check_answers_each_entry_in_order(a, key):
    one, two = a.get([key("one"), key("two")])
    results = a.check([(key("one"), one), (key("two"), Version("0.0.nope")), (key("two"), two)])
    assert [r.current for r in results] == [True, False, True]
    assert results[1].version == two


def test_bad_input_is_invalid_argument_naming_the_field_and_the_sidecar(a, sidecar_a):
    with pytest.raises(InvalidArgument) as raised:
        a.get(["fine", ""])
    assert "keys[1]" in str(raised.value)
    assert sidecar_a in str(raised.value)
    assert raised.value.address == sidecar_a


def test_own_bumps_are_never_reported_current_again(a, key):
    """Read-your-writes through the sidecar: once this process's bump has returned, no check
    that starts afterwards may call the old version current, however many run concurrently."""
    k = key("own")
    violations: list[float] = []
    stop = threading.Event()
    state: dict[str, object] = {"old": a.get_one(k), "bumped_at": None}
    lock = threading.Lock()

    def checker() -> None:
        while not stop.is_set():
            with lock:
                old, bumped_at = state["old"], state["bumped_at"]
            began = time.monotonic()
            current = a.is_current(k, old)  # type: ignore[arg-type]
            if current and bumped_at is not None and began > bumped_at:  # type: ignore[operator]
                violations.append(began - bumped_at)  # type: ignore[operator]

    threads = [threading.Thread(target=checker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(50):
            with lock:
                state["bumped_at"] = None
            new = a.bump([k])[0]
            returned = time.monotonic()
            with lock:
                old = state["old"]
                state["bumped_at"] = returned
            assert new != old
            time.sleep(0.005)
            with lock:
                state["old"] = new
                state["bumped_at"] = None
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert violations == [], f"{len(violations)} checks called a superseded own write current"


def test_watch_delivers_a_bump_made_through_another_sidecar(a, b, key):
    prefix = key("")
    deadline = time.monotonic() + 20
    with a.watch([prefix]) as stream:
        # watch() returned: the sidecar has subscribed, so this bump must reach the stream.
        version = b.bump([key("watched")])[0]
        seen_heartbeat = None
        for event in stream:
            if isinstance(event, Heartbeat) and seen_heartbeat is None:
                seen_heartbeat = event
            if isinstance(event, Invalidated) and event.key == key("watched"):
                assert event.version == version
                assert event.sequence > 0
                break
            assert time.monotonic() < deadline, "no invalidation within 20 s"
    if seen_heartbeat is not None:
        assert seen_heartbeat.received_at <= time.monotonic()


def test_watch_heartbeats_carry_the_fence_age(a):
    deadline = time.monotonic() + 20
    with a.watch(["nothing-here:"]) as stream:
        for event in stream:
            if isinstance(event, Heartbeat):
                assert event.fence_age_ms is not None and event.fence_age_ms < 10_000
                assert event.sent_at_unix_us > 0
                assert event.max_staleness_ms == 500 and event.heartbeat_interval_ms == 100
                break
            assert time.monotonic() < deadline, "no heartbeat within 20 s"
