"""Read leases in the mirror (docs/client-protocol.md, rules 16-19; the Python twin of
client/tests/mirror_leases.rs), against real sidecars on a real Redis: a mirror answers strong
checks in its own memory while it holds a lease, a bump elsewhere completes only once that
mirror applied it (so the superseded version is never answered current afterwards), and
without leases — turned off in the mirror or in the sidecar — strong checks go to the sidecar.

The leased sidecars hold read leases of 1 s (conftest.py); a bump through one of them waits for
every mirror holding a lease to acknowledge it, or for that lease to run out. The last tests
drive one stream's lease (`StreamLease`) against a scripted sidecar: what a grant allows, and
when acknowledgements are sent."""

from __future__ import annotations

import queue
import statistics
import threading
import time

import grpc
import pytest

from coherence_client import (
    Client,
    Consistency,
    Freshness,
    Invalidated,
    MirroredClient,
    MirrorLeaseAnswer,
    MirrorOptions,
    StatusError,
    Version,
)
from coherence_client.mirror_lease import DRIFT, StreamLease, new_lease_id
from support import eventually

LEASE = 1.0
"""The leased sidecars' read-lease period (tests/python_client.rs), in seconds."""


def answers_strong_locally(mirror: MirroredClient, key: str, version: Version) -> bool:
    """Waits (bounded) until `mirror` answers a strong check of `version` locally, current."""

    def local_and_current() -> bool:
        before = mirror.stats().strong_hits
        fresh = mirror.freshness(key, version, Consistency.STRONG)
        return fresh is Freshness.CURRENT and mirror.stats().strong_hits > before

    return eventually(local_and_current)


@pytest.fixture
def elsewhere(leased_other: str):
    """A client of the other leased sidecar: its bumps wait for the first one's mirrors."""
    with Client(leased_other, timeout=10.0) as client:
        yield client


def test_strong_checks_are_answered_locally_and_no_bump_elsewhere_outruns_the_mirror(
    leased_sidecar, elsewhere, key
):
    k = key("content")
    with Client(leased_sidecar, timeout=10.0) as client, client.with_mirror() as mirror:
        assert mirror.wait_trusted(10), "the mirror never trusted its stream"
        current = mirror.get_one(k)
        assert answers_strong_locally(mirror, k, current), f"never local: {mirror.stats()}"
        assert mirror.holds_strong_lease()

        # Each bump completes elsewhere; at once, the superseded version must not be current —
        # the mirror may answer locally only because the bump waited for it to apply it.
        local_before = mirror.stats().strong_hits
        bump_times = []
        for round_ in range(40):
            started = time.monotonic()
            [bumped] = elsewhere.bump([k])
            bump_times.append(time.monotonic() - started)
            old = mirror.freshness(k, current, Consistency.STRONG)
            assert old is not Freshness.CURRENT, f"round {round_}: superseded version current"
            current = bumped
            # Fills, so that the next round's check of the old version can be answered locally.
            assert mirror.is_current(k, current, Consistency.STRONG), f"round {round_}"
        assert mirror.stats().strong_hits > local_before, f"none local: {mirror.stats()}"
        # Rule 18: the mirror acknowledges what it applied at once. A renewal acknowledges too,
        # so a mirror that only renewed would hold each bump until its next renewal (up to a
        # quarter of the lease: a median near 125 ms); acknowledged ones take a few ms.
        assert statistics.median(bump_times) < LEASE / 20, f"bumps waited: {sorted(bump_times)}"

        # Its own bumps too: the sidecar answers them once its mirror applied them.
        before = current
        [own] = mirror.bump([k])
        assert mirror.freshness(k, before, Consistency.STRONG) is Freshness.STALE
        assert mirror.is_current(k, own, Consistency.STRONG)

    # The lease ends with the mirror (rule 19), and its thread with it.
    assert not mirror.holds_strong_lease()
    leases = [t for t in threading.enumerate() if t.name == "coherence-mirror-lease"]
    assert not any(t.is_alive() for t in leases)


def test_concurrent_strong_checks_never_see_a_version_superseded_elsewhere(
    leased_sidecar, elsewhere, key
):
    """Checker threads check, strongly and without pause, the version each completed bump
    elsewhere superseded; none may answer it current once that bump returned."""
    k = key("race")
    with Client(leased_sidecar, timeout=10.0) as client, client.with_mirror() as mirror:
        assert mirror.wait_trusted(10)
        superseded: list[Version] = []
        latest = [mirror.get_one(k)]
        assert answers_strong_locally(mirror, k, latest[0])
        done = threading.Event()
        violations: list[str] = []

        def checker() -> None:
            while not done.is_set():
                stale = list(superseded)  # read before the check starts
                mirror.is_current(k, latest[-1], Consistency.STRONG)  # keeps the map filled
                for version in stale[-3:]:
                    if mirror.is_current(k, version, Consistency.STRONG):
                        violations.append(version.token)
                time.sleep(0)

        threads = [threading.Thread(target=checker) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(60):
                [bumped] = elsewhere.bump([k])
                superseded.append(latest[-1])
                latest.append(bumped)
        finally:
            done.set()
            for thread in threads:
                thread.join()
        assert violations == []
        assert mirror.stats().strong_hits > 0


def test_without_strong_leases_the_mirror_never_answers_strong_locally(
    leased_sidecar, elsewhere, key
):
    k = key("off")
    with Client(leased_sidecar, timeout=10.0) as client:
        with client.with_mirror(MirrorOptions(strong_leases=False)) as mirror:
            assert mirror.wait_trusted(10)
            stamp = mirror.get_one(k)
            assert mirror.is_current_local(k, stamp) is True, "bounded checks stay local"
            misses = mirror.stats().misses
            for round_ in range(20):
                assert mirror.is_current(k, stamp, Consistency.STRONG), f"round {round_}"
                [bumped] = elsewhere.bump([k])
                assert not mirror.is_current(k, stamp, Consistency.STRONG), f"round {round_}"
                stamp = bumped
            assert not mirror.holds_strong_lease()
            stats = mirror.stats()
            assert stats.strong_hits == 0 and stats.misses - misses >= 40, stats


def test_a_sidecar_without_read_leases_grants_none_and_strong_checks_ask_it(sidecar_a, b, key):
    with Client(sidecar_a, timeout=5.0) as client:
        lease_id = new_lease_id()
        with client.watch((key(""),), lease_id):
            answer = client.mirror_lease(lease_id, 0, renew=True)
            assert answer.granted == 0 and answer.refused, answer

        with client.with_mirror() as mirror:
            assert mirror.wait_trusted(10)
            k = key("strong")
            stamp = mirror.get_one(k)
            for round_ in range(20):
                b.bump([k])
                # Reflects the bump that completed before the call, whatever the mirror knows.
                assert not mirror.is_current(k, stamp, Consistency.STRONG), f"round {round_}"
            assert not mirror.holds_strong_lease()
            stats = mirror.stats()
            assert stats.strong_hits == 0 and stats.misses >= 20, stats


def test_lease_streams_carry_positions_and_lease_ids_are_not_reused(leased_sidecar, elsewhere, key):
    """The client calls underneath (rules 16, 17): a stream opened with a lease id gets a
    grant once its sidecar holds a lease, refuses a second stream with the same id, and its
    events carry positions growing along it."""
    k = key("raw")
    with Client(leased_sidecar, timeout=10.0) as client:
        lease_id = new_lease_id()
        with client.watch((key(""),), lease_id) as stream:
            assert eventually(lambda: client.mirror_lease(lease_id, 0, renew=True).granted > 0)
            with pytest.raises(StatusError) as refused:
                client.watch((key(""),), lease_id)
            assert refused.value.code is grpc.StatusCode.ALREADY_EXISTS
            # Nothing acknowledges them: each waits for the lease to run out (at most 1 s).
            elsewhere.bump([k])
            elsewhere.bump([k])
            positions, invalidated = [], []
            deadline = time.monotonic() + 20  # heartbeats keep coming: the loop gets here
            for event in stream:
                positions.append(event.stream_position)
                if isinstance(event, Invalidated) and event.key == k:
                    invalidated.append(event.stream_position)
                if len(invalidated) == 2 or time.monotonic() > deadline:
                    break
    assert len(invalidated) == 2, positions
    assert 0 < invalidated[0] < invalidated[1], invalidated
    assert positions == sorted(positions), positions


class FakeSidecar:
    """Answers `mirror_lease` calls as told, recording each (lease_id, applied, renew) with the
    monotonic time the call arrived: the lease rules one step at a time, without a clock race."""

    def __init__(self, granted: float, min_position: int, delay: float = 0.0):
        self.granted, self.min_position, self.delay = granted, min_position, delay
        self.calls: queue.Queue[tuple[float, int, bool]] = queue.Queue()

    def mirror_lease(self, lease_id: str, applied: int, renew: bool) -> MirrorLeaseAnswer:
        self.calls.put((time.monotonic(), applied, renew))
        time.sleep(self.delay)  # the answer's way back
        if not renew:
            return MirrorLeaseAnswer(0, 0)
        return MirrorLeaseAnswer(self.granted, self.min_position, "" if self.granted else "off")


def test_a_grant_counts_from_the_send_less_the_drift_and_needs_min_position():
    sidecar = FakeSidecar(granted=10.0, min_position=5, delay=0.2)
    lease = StreamLease(sidecar, new_lease_id())  # type: ignore[arg-type]
    lease.start()
    try:
        sent, applied, renew = sidecar.calls.get(timeout=10)
        assert (applied, renew) == (0, True)
        assert eventually(lambda: lease._grant is not None)
        until = sent + 10.0 * (1 - DRIFT)
        # Not caught up with the sidecar yet (rule 19).
        assert not lease.allows(sent + 1)
        lease.applied(5, acknowledge=False)
        assert lease.allows(sent + 1)
        # Counted from before the request left, less 0.1 %: counted from the answer's arrival
        # (0.2 s later) it would still allow this.
        assert lease.allows(until - 0.05) and not lease.allows(until)
        lease.stop()
        assert not lease.allows(sent + 1), "the lease ends with its stream"
    finally:
        lease.stop()
        lease.join(10)


def test_acknowledgements_follow_applied_events_only_once_granted():
    refusing = FakeSidecar(granted=0.0, min_position=0)
    lease = StreamLease(refusing, new_lease_id())  # type: ignore[arg-type]
    lease.start()
    try:
        assert refusing.calls.get(timeout=10)[2] is True
        lease.applied(3, acknowledge=True)
        # Never granted: the next call is the retried renewal, 250 ms on, not an acknowledgement.
        assert refusing.calls.get(timeout=10)[1:] == (3, True)
    finally:
        lease.stop()
        lease.join(10)

    granting = FakeSidecar(granted=10.0, min_position=0)
    lease = StreamLease(granting, new_lease_id())  # type: ignore[arg-type]
    lease.start()
    try:
        assert granting.calls.get(timeout=10)[2] is True
        assert eventually(lambda: lease.allows(time.monotonic()))
        lease.applied(7, acknowledge=False)  # a heartbeat: nothing to acknowledge
        lease.applied(8, acknowledge=True)
        # Acknowledged at once (the next renewal is 2.5 s away), carrying the latest position.
        assert granting.calls.get(timeout=2)[1:] == (8, False)
    finally:
        lease.stop()
        lease.join(10)
