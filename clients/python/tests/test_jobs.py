"""Jobs with fencing tokens, recurring runs and the keep-alive, against real sidecars."""

from __future__ import annotations

import time

import pytest

from coherence_client import (
    Client,
    Granted,
    Held,
    LeaseExpired,
    LeaseLost,
    LeaseRefused,
    RunGranted,
    RunRefused,
)
from support import eventually

TTL = 30.0


def test_a_lease_goes_to_one_holder_and_a_stale_token_is_refused(a, b, key):
    job = key("reindex")
    jobs_a, jobs_b = a.jobs(), b.jobs()
    asked = time.monotonic()
    first = jobs_a.try_acquire(job, TTL)
    answered = time.monotonic()
    assert isinstance(first, Granted) and first.lease.holder == "py-a"
    # Counted from before the request: never later than the sidecar's own expiry.
    assert asked < first.lease.expires_at <= answered + TTL
    held = jobs_b.try_acquire(job, TTL)
    assert isinstance(held, Held)
    assert held.holder == "py-a" and held.fencing_token == first.lease.fencing_token
    assert 0 < held.remaining <= TTL

    before = first.lease.expires_at
    assert jobs_a.renew(first.lease, TTL) > 0
    assert first.lease.expires_at >= before
    jobs_a.release(first.lease)

    second = jobs_b.try_acquire(job, TTL)
    assert isinstance(second, Granted)
    assert second.lease.fencing_token > first.lease.fencing_token
    with pytest.raises(LeaseLost):
        jobs_a.renew(first.lease, TTL)
    with pytest.raises(LeaseLost):
        jobs_a.release(first.lease)
    jobs_b.release(second.lease)


def test_a_recurring_run_is_granted_to_one_server_per_period(a, b, key):
    day = 24 * 3600.0
    for attempt in range(3):
        job = key(f"cleanup-{attempt}")
        first = a.jobs().claim_run(job, day, lease=60)
        second = b.jobs(holder="b-worker").claim_run(job, day, lease=60)
        if isinstance(second, RunRefused) and second.period == first.period:
            break  # else a period boundary fell between the claims: both were legitimate
    assert isinstance(first, RunGranted)
    assert isinstance(second, RunRefused) and second.because == "running"
    assert second.holder == first.lease.holder
    a.jobs().release(first.lease)
    third = b.jobs().claim_run(job, day, lease=60)
    assert isinstance(third, RunRefused) and third.because == "done"


def test_keep_alive_holds_a_lease_well_past_its_ttl(a, b, key):
    job, ttl = key("kept"), 2.4
    granted = a.jobs().try_acquire(job, ttl)
    assert isinstance(granted, Granted)
    first_expiry = granted.lease.expires_at
    with a.jobs().keep_alive(granted.lease, ttl) as keeper:
        # Four renewals a third of the TTL apart: the TTL has passed at least once over.
        assert eventually(lambda: keeper.renewals >= 4 or keeper.loss is not None)
        assert keeper.loss is None, repr(keeper.loss)
        assert keeper.lease.expires_at > first_expiry
        held = b.jobs().try_acquire(job, ttl)
        assert isinstance(held, Held) and held.fencing_token == granted.lease.fencing_token
        keeper.release()
    assert isinstance(b.jobs().try_acquire(job, ttl), Granted)


def test_keep_alive_reports_a_lease_taken_over_as_refused(a, b, key):
    job = key("taken")
    granted = a.jobs().try_acquire(job, TTL)
    assert isinstance(granted, Granted)
    # The lease goes to b while a still believes it has TTL left (as after a long pause).
    a.jobs().release(granted.lease)
    assert isinstance(b.jobs().try_acquire(job, TTL), Granted)
    with a.jobs().keep_alive(granted.lease, 0.3) as keeper:
        loss = keeper.wait_lost(20)
    assert isinstance(loss, LeaseRefused), repr(loss)
    assert isinstance(loss.__cause__, LeaseLost)


def test_keep_alive_reports_loss_when_renewals_cannot_reach_redis(fault, key):
    with Client(fault.sidecar, timeout=0.3) as client:
        ttl = 1.5
        granted = client.jobs().try_acquire(key("stalled"), ttl)
        assert isinstance(granted, Granted)
        keeper = client.jobs().keep_alive(granted.lease, ttl)
        try:
            with fault.paused():
                loss = keeper.wait_lost(20)
        finally:
            keeper.stop()
        assert isinstance(loss, LeaseExpired), repr(loss)
        assert time.monotonic() >= keeper.lease.expires_at, "lost before it could have expired"
