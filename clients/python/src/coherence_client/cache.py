"""`CoherentCache`: the app's side of the protocol, done once and right.

Stamp before load (read the version, then load, then store the value with that version), serve
a value only while its version is current, one load per key at a time (single flight, so an
invalidation does not stampede the database), never cache what no version vouches for (fail
closed), and bump after writing with a bounded retry.

Extension point: the cache asks a `VersionSource` for versions. `Client` is one (every check
is a call to the sidecar, tens to hundreds of microseconds); `MirroredClient`, the in-process
mirror that follows docs/client-protocol.md, is another (most checks answered from local
memory in well under a microsecond).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, Iterable, Protocol, Sequence, TypeVar

from .errors import CoherenceError
from .versions import Consistency, Freshness, Version

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class VersionSource(Protocol):
    """What the cache needs from the sidecar; `Client` and `MirroredClient` implement it."""

    def get_one(self, key: str, consistency: Consistency = Consistency.BOUNDED) -> Version:
        """The current version of `key`; raises `CoherenceError` when none can be read."""
        ...

    def freshness(
        self, key: str, version: Version, consistency: Consistency = Consistency.BOUNDED
    ) -> Freshness:
        """Whether `version` is current; UNVERIFIABLE (never an exception) when nothing can
        vouch for it."""
        ...

    def bump(self, keys: Sequence[str]) -> list[Version]:
        """Moves `keys` to new versions; raises `CoherenceError` on failure."""
        ...


@dataclass(frozen=True)
class CacheStats:
    """Counters of one `CoherentCache`."""

    hits: int = 0
    """Gets served from the cache (the entry's version was current)."""
    loads: int = 0
    """Loader calls whose result was cached."""
    uncached_loads: int = 0
    """Loader calls whose result was returned but not cached (no version could be read, or
    joined loads were superseded too often)."""
    stale: int = 0
    """Entries dropped because a newer version exists."""
    unverifiable: int = 0
    """Entries dropped only because nothing could vouch for their version (an outage)."""


@dataclass
class BumpReport:
    """What `invalidate_after_write` achieved."""

    bumped: list[str] = field(default_factory=list)
    not_bumped: list[str] = field(default_factory=list)
    """Coherence keys that could not be bumped after every retry: other servers may serve
    their old data until they are. Retry, alert, or bump them later."""
    last_error: CoherenceError | None = None

    @property
    def complete(self) -> bool:
        return not self.not_bumped


@dataclass(frozen=True)
class _Entry(Generic[V]):
    version: Version
    value: V


class _Flight(Generic[V]):
    """One load in progress, shared by every caller of the same key."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.version: Version | None = None
        self.error: BaseException | None = None


class CoherentCache(Generic[K, V]):
    """A bounded in-process cache whose entries are served only while the version they were
    stamped with is current. Safe to share between threads.

    `coherence_key(key)` names the coherence key guarding each app key: one per entity
    (`item:42`) for fine-grained invalidation, or one per type (`items`) for "any write drops
    them all".
    """

    def __init__(
        self,
        source: VersionSource,
        coherence_key: Callable[[K], str],
        *,
        max_entries: int = 10_000,
        bump_attempts: int = 3,
        bump_backoff: float = 0.05,
    ):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._source = source
        self._coherence_key = coherence_key
        self._max_entries = max_entries
        self._bump_attempts = max(1, bump_attempts)
        self._bump_backoff = bump_backoff
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._flights: dict[K, _Flight[V]] = {}
        self._counts = {name: 0 for name in CacheStats.__dataclass_fields__}

    MAX_ROUNDS = 3
    """Times `get_or_load` joins a load that was already superseded before loading itself,
    uncached."""

    def __repr__(self) -> str:
        return f"CoherentCache(entries={len(self._entries)}, stats={self.stats()})"

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(**self._counts)

    def _lookup(self, key: K) -> _Entry[V] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def _drop_if_same(self, key: K, entry: _Entry[V], freshness: Freshness) -> None:
        """Removes `key` only if it still holds `entry`, counting why it goes."""
        with self._lock:
            self._counts["stale" if freshness is Freshness.STALE else "unverifiable"] += 1
            if self._entries.get(key) is entry:
                del self._entries[key]

    def _serve(self, key: K, ckey: str, entry: _Entry[V], consistency: Consistency) -> bool:
        """Whether `entry` may be served; drops it when not."""
        freshness = self._source.freshness(ckey, entry.version, consistency)
        if freshness.is_current:
            self._count("hits")
            return True
        self._drop_if_same(key, entry, freshness)
        return False

    def get(self, key: K, consistency: Consistency = Consistency.BOUNDED) -> V | None:
        """The cached value of `key` if its version is current, else None (a stale or
        unverifiable entry is dropped)."""
        entry = self._lookup(key)
        if entry is not None and self._serve(key, self._coherence_key(key), entry, consistency):
            return entry.value
        return None

    def get_or_load(
        self,
        key: K,
        loader: Callable[[], V],
        consistency: Consistency = Consistency.BOUNDED,
    ) -> V:
        """The value of `key`: from the cache while its version is current, else from `loader`.

        The version is read *before* `loader` runs and the value is stored with it, so a bump
        that races the load leaves the new entry stale. Concurrent calls for one key share one
        load (single flight); `loader` runs at most once per call: not at all on a hit or when
        the call joins another's load that is still current when it finishes; once, cached,
        when this call loads with a version; once, **not cached**, when no version can be read
        (sidecar or Redis down: fail closed) or after joining `MAX_ROUNDS` loads that were
        already superseded. An exception from the loader reaches every caller that shared the
        load, and nothing is cached.
        """
        ckey = self._coherence_key(key)
        for _ in range(self.MAX_ROUNDS):
            entry = self._lookup(key)
            if entry is not None and self._serve(key, ckey, entry, consistency):
                return entry.value
            with self._lock:
                flight = self._flights.get(key)
                leader = flight is None
                if leader:
                    stored = self._entries.get(key)
                    if stored is not None and stored is not entry:
                        continue  # another load finished meanwhile: check it next round
                    flight = self._flights[key] = _Flight()
            assert flight is not None
            if leader:
                return self._lead(key, ckey, consistency, loader, flight)
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.version is None:
                return flight.value  # type: ignore[return-value]  # unstamped: not cached
            # A load we joined may have been stamped before this call began: serve it only if
            # it is still current.
            if self._source.freshness(ckey, flight.version, consistency).is_current:
                return flight.value  # type: ignore[return-value]
        self._count("uncached_loads")
        return loader()

    def _lead(
        self,
        key: K,
        ckey: str,
        consistency: Consistency,
        loader: Callable[[], V],
        flight: _Flight[V],
    ) -> V:
        """Stamp, load and store for every caller that joins `flight`."""
        try:
            try:
                version: Version | None = self._source.get_one(ckey, consistency)
            except CoherenceError as error:
                log.debug("no version for %r; loading without caching: %s", ckey, error)
                version = None
            value = loader()
            flight.value, flight.version = value, version
        except BaseException as error:
            flight.error = error
            raise
        finally:
            with self._lock:
                if flight.error is None:
                    if flight.version is not None:
                        self._entries[key] = _Entry(flight.version, flight.value)  # type: ignore[arg-type]
                        self._entries.move_to_end(key)
                        while len(self._entries) > self._max_entries:
                            self._entries.popitem(last=False)
                        self._counts["loads"] += 1
                    else:
                        self._counts["uncached_loads"] += 1
                del self._flights[key]
            flight.done.set()
        return value

    def invalidate_after_write(self, keys: Iterable[K]) -> BumpReport:
        """Call after a write to the source of truth committed: drops `keys` here and bumps
        their coherence keys so every server drops them, retrying a failed bump a bounded
        number of times. Keys that could not be bumped are reported, never silently lost."""
        keys = list(keys)
        coherence_keys = sorted({self._coherence_key(k) for k in keys})
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)
        backoff = self._bump_backoff
        last_error: CoherenceError | None = None
        for attempt in range(1, self._bump_attempts + 1):
            try:
                self._source.bump(coherence_keys)
                return BumpReport(bumped=coherence_keys)
            except CoherenceError as error:
                log.warning("bump of %s failed (attempt %d): %s", coherence_keys, attempt, error)
                last_error = error
            if attempt < self._bump_attempts:
                time.sleep(backoff)
                backoff *= 2
        return BumpReport(not_bumped=coherence_keys, last_error=last_error)

    def clear_local(self) -> None:
        """Drops every entry of this process (other servers are not told)."""
        with self._lock:
            self._entries.clear()
