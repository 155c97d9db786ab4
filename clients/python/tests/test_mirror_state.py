"""The mirror's rules one step at a time (docs/client-protocol.md), on `MirrorState` alone: the
races the rules exist for, arranged deterministically. `test_mirror.py` and the conformance
suite (tests/conformance.rs) drive the whole mirror against real sidecars."""

from __future__ import annotations

import time

import pytest

from coherence_client import Heartbeat, Invalidated, MirrorOptions, Position, Version
from coherence_client.mirror import NEVER, MirrorState


def v(token: str) -> Version:
    return Version(token)


def at(epoch: str, sequence: int) -> Position:
    return Position(epoch, sequence)


def heartbeat(
    age_ms: int | None, *, sent_ago: float = 0.0, sidecar_bound_ms: int | None = None
) -> Heartbeat:
    now_us = time.time_ns() // 1000
    return Heartbeat(
        fence_age_ms=age_ms,
        sent_at_unix_us=now_us - int(sent_ago * 1e6),
        received_at=time.monotonic(),
        received_at_unix_us=now_us,
        max_staleness_ms=sidecar_bound_ms,
    )


def invalidated(
    key: str, token: str, position: Position | None = None, shard: int = 0
) -> Invalidated:
    return Invalidated(
        key=key,
        version=v(token),
        sequence=position.sequence if position else 0,
        shard=shard,
        bumped_at_unix_ms=0,
        epoch=position.epoch if position else "",
    )


def local(state: MirrorState, key: str, token: str) -> bool | None:
    """The local answer as `MirroredClient.is_current_local` computes it."""
    if time.monotonic() >= state.trusted_until:
        return None
    entry = state.entries.get(key)
    if entry is None or entry.token is None:
        return None
    return entry.token == token


def trusted(**options: object) -> MirrorState:
    state = MirrorState(MirrorOptions(**options))  # type: ignore[arg-type]
    state.vouch()
    state.heartbeat(heartbeat(0))
    return state


def test_a_fill_answers_locally_while_trusted():
    state = trusted()
    state.fill("k", v("1.1.a"), None, state.generation)
    assert local(state, "k", "1.1.a") is True
    assert local(state, "k", "1.0.z") is False
    assert local(state, "other", "1.1.a") is None


def test_nothing_is_filled_before_the_stream_vouched():
    """Rule 2."""
    state = MirrorState(MirrorOptions())
    state.fill("k", v("1.1.a"), None, state.generation)
    assert state.entries == {}


def test_a_fill_asked_before_the_stream_vouched_is_refused():
    """Rule 3: the vouch clears the map and raises the fill floor before accepting fills."""
    state = MirrorState(MirrorOptions())
    asked_before = state.generation
    state.vouch()
    state.heartbeat(heartbeat(0))
    state.fill("k", v("1.1.a"), None, asked_before)
    assert local(state, "k", "1.1.a") is None
    state.fill("k", v("1.1.a"), None, state.generation)
    assert local(state, "k", "1.1.a") is True


def test_a_disconnect_untrusts_and_forgets_everything():
    """Rule 4."""
    state = trusted()
    state.fill("k", v("1.1.a"), None, state.generation)
    asked_at = state.generation
    state.disconnected()
    assert state.trusted_until == NEVER and not state.vouched and state.entries == {}
    state.vouch()
    state.heartbeat(heartbeat(0))
    state.fill("k", v("1.1.a"), None, asked_at)
    assert local(state, "k", "1.1.a") is None, "a fill asked on the previous stream"


def test_an_invalidation_during_a_fill_wins_without_positions():
    """Rules 7 and 8 with a sidecar of an earlier release (no positions): generations decide."""
    state = trusted()
    asked_at = state.generation
    state.invalidate(invalidated("k", "1.2.b"))
    state.fill("k", v("1.1.a"), None, asked_at)
    assert local(state, "k", "1.1.a") is None, "the old version is never current"
    assert state.stats().fills_refused == 1
    state.invalidate(invalidated("k", "1.3.c"))
    assert local(state, "k", "1.3.c") is True


def test_a_fill_agreeing_with_a_newer_invalidation_keeps_it():
    state = trusted()
    asked_at = state.generation
    state.invalidate(invalidated("k", "1.2.b"))
    state.fill("k", v("1.2.b"), None, asked_at)
    assert local(state, "k", "1.2.b") is True


def test_a_resync_during_a_fill_refuses_it():
    """Rule 6: a Resync raises the fill floor."""
    state = trusted()
    asked_at = state.generation
    state.resync()
    state.fill("k", v("1.1.a"), None, asked_at)
    assert state.entries == {}
    state.fill("k", v("1.1.a"), None, state.generation)
    assert len(state.entries) == 1


def test_own_bump_is_never_overwritten_by_older_knowledge():
    """Rules 8 and 14: a concurrent check asked in the same generation as the bump, and an
    older bump's invalidation arriving late, are both older by position."""
    state = trusted()
    asked_at = state.generation
    state.fill("k", v("e.15.c"), at("e", 15), asked_at)  # the bump's answer
    state.fill("k", v("e.12.b"), at("e", 12), asked_at)  # a check asked at the same generation
    assert local(state, "k", "e.15.c") is True
    state.invalidate(invalidated("k", "e.14.x", at("e", 14)))  # an older bump, late
    assert local(state, "k", "e.15.c") is True
    assert local(state, "k", "e.14.x") is False
    state.invalidate(invalidated("k", "e.16.d", at("e", 16)))
    assert local(state, "k", "e.16.d") is True


def test_a_correction_at_the_same_sequence_replaces_the_entry():
    """Rule 6: reconciliation's correction reuses the shard's current sequence; it must not be
    dropped as a duplicate."""
    state = trusted()
    state.invalidate(invalidated("k", "e.7.a", at("e", 7)))
    state.invalidate(invalidated("k", "e.999.byhand", at("e", 7)))
    assert local(state, "k", "e.7.a") is False
    assert local(state, "k", "e.999.byhand") is True


def test_knowledge_from_another_epoch_makes_the_key_unknown():
    state = trusted()
    asked_at = state.generation
    state.fill("k", v("new.1.a"), at("new", 1), asked_at)
    state.invalidate(invalidated("k", "old.500.z", at("old", 500)))
    assert local(state, "k", "old.500.z") is None
    assert local(state, "k", "new.1.a") is None
    state.fill("k", v("old.499.y"), at("old", 499), asked_at)
    assert local(state, "k", "old.499.y") is None, "asked before"
    state.fill("k", v("new.1.a"), at("new", 1), state.generation)
    assert local(state, "k", "new.1.a") is True


def test_a_full_mirror_evicts_an_eighth_and_stays_bounded():
    """Rule 9."""
    state = trusted(max_entries=800)
    for i in range(5_000):
        state.fill(f"k{i}", v("1.1.a"), None, state.generation)
    assert 700 <= len(state.entries) <= 800
    stats = state.stats()
    # The fill that finds the map full began before the eviction it causes: refused.
    assert stats.evictions + stats.fills_refused + len(state.entries) == 5_000


def test_a_fill_older_than_an_evicted_entry_is_refused():
    """Rule 9: the race eviction must not open."""
    state = trusted(max_entries=1)
    asked_at = state.generation
    state.invalidate(invalidated("k", "1.2.b"))
    state.invalidate(invalidated("other", "1.3.c"))
    assert local(state, "k", "1.2.b") is None, "k was evicted"
    state.fill("k", v("1.1.a"), None, asked_at)
    assert local(state, "k", "1.1.a") is None
    state.fill("k", v("1.2.b"), None, state.generation)
    assert local(state, "k", "1.2.b") is True


def test_trust_follows_the_fence_age_and_the_smaller_bound():
    """Rule 10."""
    state = trusted()
    assert time.monotonic() < state.trusted_until
    state.heartbeat(heartbeat(None))
    assert state.trusted_until == NEVER, "a sidecar that cannot vouch"
    state.heartbeat(heartbeat(500))
    assert state.trusted_until == NEVER, "a fence as old as max_staleness proves nothing"
    state.heartbeat(heartbeat(100))
    assert time.monotonic() < state.trusted_until <= time.monotonic() + 0.4
    state.heartbeat(heartbeat(300, sidecar_bound_ms=250))
    assert state.trusted_until == NEVER, "the sidecar's own bound caps ours"
    state.heartbeat(heartbeat(300, sidecar_bound_ms=60_000))
    assert time.monotonic() < state.trusted_until, "a larger sidecar bound does not lift ours"


def test_time_in_transit_counts_against_the_bound():
    state = trusted()
    state.heartbeat(heartbeat(200, sent_ago=0.35))
    assert state.trusted_until == NEVER
    state.heartbeat(heartbeat(200, sent_ago=0.1))
    assert time.monotonic() < state.trusted_until <= time.monotonic() + 0.2


def test_clock_skew_shrinks_the_bound():
    state = trusted(clock_skew=0.3)
    state.heartbeat(heartbeat(250))
    assert state.trusted_until == NEVER


@pytest.mark.parametrize(
    "options",
    [
        {"idle_timeout": float("inf")},
        {"idle_timeout": 0},
        {"max_staleness": 0},
        {"max_entries": 0},
        {"backoff_min": 2, "backoff_max": 1},
        {"clock_skew": 1.0},
        {"prefixes": "item:"},
    ],
)
def test_bad_options_are_refused_naming_the_problem(options):
    with pytest.raises(ValueError, match="invalid mirror options"):
        MirrorOptions(**options)
