"""Rule-breaking mirrors, for the conformance suite (tests/conformance.rs) to prove it can fail.

Each variant is the shipped `MirroredClient` with one protocol step changed, the way a port of
docs/client-protocol.md could plausibly get it wrong. Each must FAIL the conformance case of the
situation its rule exists for; the shipped mirror must pass them all. Test code only: nothing
here is part of the package.
"""

from __future__ import annotations

from coherence_client import watch
from coherence_client.mirror import Entry, MirroredClient, MirrorState


class FillsBeforeVouching(MirrorState):
    """Rules 2 and 3 broken: the stream counts as connected once its headers arrive, fills are
    stored from then on, and the first vouching heartbeat clears nothing. The sidecar's
    first-sync `Resync` would still save it (watch contract 2, which older sidecars lacked),
    so this port also ignores `Resync`, as one that trusts the headers would."""

    def stream_opened(self) -> None:
        self.vouched = True

    def vouch(self) -> None:
        self.vouched = True

    def resync(self) -> None:
        self.count("resyncs")


class KeepsMapAcrossReconnect(MirrorState):
    """Rule 4 broken (and the clear of rule 3, which would otherwise repeat it on the new
    stream's first vouching heartbeat): the map survives a reconnect."""

    def disconnected(self) -> None:
        with self.lock:
            self.trusted_until = float("-inf")
            self.vouched = False

    def vouch(self) -> None:
        self.vouched = True


class FillsWithoutOrdering(MirrorState):
    """Rules 7 and 8 broken: an answer overwrites the entry whatever was learnt while it was in
    flight (neither generations nor positions)."""

    def fill(self, key, version, position, asked_at):  # type: ignore[no-untyped-def]
        with self.lock:
            if self.vouched:
                self.entries[key] = Entry(version.token, asked_at, position)


class IgnoresPositions(MirrorState):
    """Rule 8 with positions ignored: generations alone decide (the earlier own-writes rule)."""

    def order(self, known: Entry, new: Entry, asked_at: int, invalidation: bool = False) -> Entry:
        blind = known._replace(position=None), new._replace(position=None)
        return super().order(*blind, asked_at, invalidation)


class EvictsWithoutFloor(MirrorState):
    """Rule 9 broken: a full map drops entries without raising the fill floor."""

    def make_room(self) -> None:
        if len(self.entries) < self.max_entries:
            return
        victims = list(self.entries)[: -(-self.max_entries // 8)]
        for key in victims:
            del self.entries[key]
        self.count("evictions", len(victims))


class DedupesBySequence(MirrorState):
    """Rule 6 broken: invalidations de-duplicated by (shard, sequence), which drops
    reconciliation's corrections (they reuse the shard's current sequence)."""

    def __init__(self, options):  # type: ignore[no-untyped-def]
        super().__init__(options)
        self.seen: set[tuple[str, int, int]] = set()

    def invalidate(self, event: watch.Invalidated) -> None:
        seen = (event.epoch, event.shard, event.sequence)
        if seen in self.seen:
            return
        self.seen.add(seen)
        super().invalidate(event)


class TrustsAnyFiniteFenceAge(MirrorState):
    """Rule 10 broken: any finite fence age is trusted for the whole bound (the age, the
    transit time and the sidecar's bound are ignored)."""

    def trusted_until_after(self, heartbeat: watch.Heartbeat) -> float:
        if heartbeat.fence_age_ms is None or not self.vouched:
            return float("-inf")
        return heartbeat.received_at + self.max_staleness


class NoIdleTimeout(MirroredClient):
    """Rule 5 broken: a stream that stays silent is never given up (no watchdog)."""

    def _guard(self) -> None:
        return


def mirror_class(variant: str) -> type[MirroredClient]:
    """The mirror class of a variant name ("shipped" for the package's own)."""
    if variant == "shipped":
        return MirroredClient
    if variant == "no_idle_timeout":
        return NoIdleTimeout
    state = STATES[variant]
    return type(f"MirroredClient_{variant}", (MirroredClient,), {"State": state})


STATES: dict[str, type[MirrorState]] = {
    "fills_before_vouching": FillsBeforeVouching,
    "keeps_map_across_reconnect": KeepsMapAcrossReconnect,
    "fills_without_ordering": FillsWithoutOrdering,
    "ignores_positions": IgnoresPositions,
    "evicts_without_floor": EvictsWithoutFloor,
    "dedupes_by_sequence": DedupesBySequence,
    "trusts_any_finite_fence_age": TrustsAnyFiniteFenceAge,
}

VARIANTS = ["shipped", "no_idle_timeout", *STATES]
