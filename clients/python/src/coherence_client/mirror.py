"""The in-process mirror: most checks answered in this process's own memory.

A `Check` over loopback costs about 100 µs from Python; a dictionary lookup well under a
microsecond. `MirroredClient` keeps one `Watch` stream open to its sidecar and a map
key -> current version, filled from the sidecar's own answers (`Get`, `Check`, `Bump`) and
overwritten by every invalidation the stream delivers. It answers locally only while the
sidecar's heartbeats prove the map fresh; everything else goes to the sidecar, and a failed
call answers "not current". It follows docs/client-protocol.md to the letter; each numbered
MUST rule is cited where it is applied ("rule N").

Why a thread and not an asyncio task: this client is synchronous (grpcio's blocking stubs,
called from whatever threads the app runs), and so is `CoherentCache`; an asyncio task would
need an event loop the app may not have. One daemon thread reads the stream and applies its
events one at a time, in order (rule 6). A second one, the watchdog, ends a stream that stays
silent past the idle timeout (rule 5): a blocking read of a gRPC stream has no timeout of its
own. While the sidecar grants this mirror a read lease, strong checks are answered locally too
(rules 16-19): a third thread per stream renews the lease and acknowledges what the watch
thread applied (`mirror_lease.StreamLease`).

Local checks take no lock: an entry is an immutable tuple replaced whole, and `trusted_until`
a float replaced whole, so a reader sees either the old or the new one. Everything that
changes the map (fills, invalidations, resyncs, evictions) holds one lock, which makes the
generation and fill-floor bookkeeping of rules 7-9 exact.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

from . import watch
from .client import Client
from .errors import CoherenceError
from .mirror_lease import StreamLease, new_lease_id
from .versions import CheckSource, Consistency, Freshness, Position, Version

if TYPE_CHECKING:
    from ._call import Stream

log = logging.getLogger(__name__)

_monotonic = time.monotonic  # a module global: one lookup less on every local check

_BOUNDED = Consistency.BOUNDED  # likewise: an enum member's attribute lookup is slow

NEVER = -math.inf
"""`trusted_until` when local answers are not allowed."""

_DEDICATED_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
"""Channel arguments that give a channel a connection of its own (grpcio otherwise shares one
per target across channels)."""


@dataclass(frozen=True)
class MirrorOptions:
    """How a `MirroredClient` behaves. Durations in seconds."""

    max_staleness: float = 0.5
    """The client's own bound: local answers reflect every bump completed more than this long
    before the check (rule 10 takes the smaller of this and the sidecar's)."""
    prefixes: tuple[str, ...] = ()
    """Mirror only keys under these prefixes (default: every key); others always ask the
    sidecar."""
    idle_timeout: float = 3.0
    """A stream silent this long (not even a heartbeat) is dead and reopened (rule 5); at least
    three of the sidecar's heartbeat intervals are always allowed."""
    backoff_min: float = 0.05
    backoff_max: float = 2.0
    """Reconnect backoff: starts at `backoff_min`, doubles up to `backoff_max` (rule 4)."""
    max_entries: int = 1_000_000
    """Most keys held; a full mirror drops its oldest eighth (rule 9)."""
    clock_skew: float = 0.0
    """How far this host's wall clock may be from the sidecar's: 0 for a sidecar on the same
    host (the usual case). The time a heartbeat spent in transit is measured by the two
    clocks, so the bound is kept smaller by this much (rule 10)."""
    strong_leases: bool = True
    """Answer strong checks locally while the sidecar grants this mirror a read lease (rules
    16-19; a sidecar with `read_lease_ms` = 0 grants none, and they all go to it). Off, every
    strong check asks the sidecar and no bump ever waits for this mirror."""
    on_event: Callable[["MirrorEvent"], None] | None = None
    """Called on the watch thread on every connect, vouch, disconnect and resync (keep it
    short)."""

    def __post_init__(self) -> None:
        problems = []
        if not self.max_staleness > 0 or not math.isfinite(self.max_staleness):
            problems.append(f"max_staleness must be positive seconds, not {self.max_staleness!r}")
        # Rule 5: a mirror with no idle timeout would trust a dead stream's last word forever.
        if not self.idle_timeout > 0 or not math.isfinite(self.idle_timeout):
            problems.append(f"idle_timeout must be finite and positive, not {self.idle_timeout!r}")
        if not 0 < self.backoff_min <= self.backoff_max or not math.isfinite(self.backoff_max):
            problems.append("backoff_min and backoff_max must satisfy 0 < min <= max")
        if self.max_entries < 1:
            problems.append(f"max_entries must be at least 1, not {self.max_entries!r}")
        if not 0 <= self.clock_skew < self.max_staleness:
            problems.append("clock_skew must be at least 0 and less than max_staleness")
        if isinstance(self.prefixes, str):
            problems.append("prefixes must be a sequence of strings, not one string")
        if problems:
            raise ValueError("invalid mirror options: " + "; ".join(problems))


@dataclass(frozen=True)
class MirrorEvent:
    """Something that happened to the mirror's Watch stream, for `MirrorOptions.on_event`."""

    kind: str
    """"connected", "vouched" (first vouching heartbeat: fills accepted from now on),
    "disconnected" or "resync"."""
    reason: str = ""
    reconnect: bool = False
    """For "connected": whether an earlier stream had been open before."""


@dataclass(frozen=True)
class MirrorStats:
    """Counters of one mirror. Hits and misses are counted without a lock, so under heavy
    concurrency they may miss a few (they are for dashboards, not for proofs)."""

    reconnects: int = 0
    """Streams opened after the first."""
    resyncs: int = 0
    """Times the map was emptied (`Resync`, stream end)."""
    evictions: int = 0
    """Keys dropped because the map was full."""
    hits: int = 0
    """Checks and gets answered locally."""
    misses: int = 0
    """Checks and gets that asked the sidecar."""
    strong_hits: int = 0
    """Strong checks answered locally under a read lease (counted in `hits` too)."""
    fallback_failures: int = 0
    """Sidecar calls that failed (answered "not current")."""
    invalidations: int = 0
    """Invalidations applied from the stream."""
    fills_refused: int = 0
    """Answers not stored because something newer may have been learnt or dropped."""


class Entry(NamedTuple):
    """What the map knows of one key. `token` None is UNKNOWN: answered by the sidecar only,
    until the next invalidation or a fill asked after it (rule 8)."""

    token: str | None
    generation: int
    position: Position | None


class MirrorState:
    """The map and its trust state (docs/client-protocol.md, "State a mirror keeps"), shared by
    the app's threads and the watch thread. Each method is one step of the protocol."""

    def __init__(self, options: MirrorOptions):
        self.entries: dict[str, Entry] = {}
        self.trusted_until: float = NEVER
        self.generation = 1
        self.fill_floor = 1
        self.vouched = False
        self.lock = threading.Lock()
        self.max_staleness = options.max_staleness
        self.clock_skew = options.clock_skew
        self.max_entries = options.max_entries
        self.prefixes = tuple(options.prefixes)
        self.counts = {f.name: 0 for f in fields(MirrorStats) if f.name != "hits"}
        self.hits = 0  # an attribute: counted on the local path, where a dict item costs more

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def mirrors(self, key: str) -> bool:
        return not self.prefixes or key.startswith(self.prefixes)

    # The stream (rules 2-6, 10).

    def stream_opened(self) -> None:
        """Response headers arrived. Nothing is trusted or filled yet (rules 1, 2)."""

    def vouch(self) -> None:
        """The stream's first heartbeat with a finite fence age (rule 3), in this order: clear
        the map, raise the fill floor (both in `clear`), then accept fills. Fills asked before
        now are refused by rule 7."""
        with self.lock:
            self.clear()
            self.vouched = True

    def disconnected(self) -> None:
        """The stream ended, erred or went silent (rule 4): untrusted, not vouched, the map
        cleared and the floor raised — bumps made while no stream is open reach no one."""
        with self.lock:
            self.trusted_until = NEVER
            self.vouched = False
            self.clear()
            self.count("resyncs")

    def resync(self) -> None:
        """A `Resync` (rule 6): clear the map and raise the fill floor."""
        with self.lock:
            self.clear()
            self.count("resyncs")

    def invalidate(self, event: watch.Invalidated) -> None:
        """An `Invalidated` event (rule 6): a new generation, then the ordering rule 8 as a
        replacement. Never de-duplicated by (shard, sequence): reconciliation's corrections
        reuse the shard's current sequence."""
        if not self.mirrors(event.key):
            return
        with self.lock:
            self.generation += 1
            g = self.generation
            self.count("invalidations")
            self.make_room()
            known = self.entries.get(event.key)
            new = Entry(event.version.token, g, event.position)
            if known is not None:
                new = self.order(known, new, asked_at=g, invalidation=True)
            if new is not known:
                self.entries[event.key] = new

    def heartbeat(self, heartbeat: watch.Heartbeat) -> None:
        """The trust formula (rule 10), on the monotonic clock; the wall clock only measures
        the time in transit (`received_at_unix_us - sent_at_unix_us`, 0 when not sent)."""
        self.trusted_until = self.trusted_until_after(heartbeat)

    def trusted_until_after(self, heartbeat: watch.Heartbeat) -> float:
        if heartbeat.fence_age_ms is None or not self.vouched:
            return NEVER
        transit = 0.0
        if heartbeat.sent_at_unix_us:
            transit = max(0, heartbeat.received_at_unix_us - heartbeat.sent_at_unix_us) / 1e6
        age = heartbeat.fence_age_ms / 1000 + transit
        bound = self.max_staleness
        if heartbeat.max_staleness_ms:
            bound = min(bound, heartbeat.max_staleness_ms / 1000)
        bound -= self.clock_skew
        return heartbeat.received_at + (bound - age) if age < bound else NEVER

    # Answers (rules 7-9, 14).

    def fill(self, key: str, version: Version, position: Position | None, asked_at: int) -> None:
        """Stores an answer of the sidecar to a request sent after `asked_at` was read from
        `generation` (rule 7)."""
        if not self.mirrors(key):
            return
        with self.lock:
            if not self.vouched:  # rule 2
                return
            self.make_room()
            known = self.entries.get(key)
            if known is None:
                if self.fill_floor > asked_at:  # something newer may have been dropped
                    self.count("fills_refused")
                else:
                    self.entries[key] = Entry(version.token, asked_at, position)
                return
            new = self.order(known, Entry(version.token, asked_at, position), asked_at)
            if new is known or new.token is None:
                self.count("fills_refused")
            if new is not known:
                self.entries[key] = new

    def order(self, known: Entry, new: Entry, asked_at: int, invalidation: bool = False) -> Entry:
        """Rule 8: what one key's entry becomes when `new` is learnt (an invalidation's `new`
        has the event's generation, a fill's its `asked_at`)."""
        mine, theirs = known.position, new.position
        if mine is not None and theirs is not None:
            if mine.epoch == theirs.epoch:
                if theirs.sequence >= mine.sequence:
                    generation = new.generation if invalidation else max(known.generation, asked_at)
                    return Entry(new.token, generation, theirs)
                return known  # the entry knows something newer
            # Different epochs are not ordered: unknown until the next invalidation or a fill
            # asked after now.
            generation = new.generation if invalidation else max(known.generation, asked_at)
            return Entry(None, generation, None)
        # A position is missing (a sidecar of an earlier release): generations decide.
        if invalidation:
            return new
        if known.generation > asked_at:
            if known.token == new.token:
                return known
            return Entry(None, known.generation, known.position)
        return new

    def make_room(self) -> None:
        """Rule 9, under the lock: a full map drops its oldest eighth, raising the fill floor
        first, so that a fill older than a dropped entry is not stored in its place."""
        if len(self.entries) < self.max_entries:
            return
        self.raise_floor()
        victims = list(itertools.islice(self.entries, -(-self.max_entries // 8)))
        for key in victims:
            del self.entries[key]
        self.count("evictions", len(victims))

    def clear(self) -> None:
        """Under the lock: the floor raised first, then the map emptied (rules 3, 4, 6)."""
        self.raise_floor()
        self.entries = {}

    def raise_floor(self) -> None:
        self.generation += 1
        self.fill_floor = self.generation

    def stats(self) -> MirrorStats:
        return MirrorStats(hits=self.hits, **self.counts)


class MirroredClient:
    """A `Client` with an in-process mirror: `is_current` and `get_one` answered locally while
    the mirror is provably fresh, by the sidecar otherwise. A `VersionSource`, so
    `CoherentCache(mirrored, ...)` works as with a `Client`. Safe to share between threads;
    `close()` (or leaving a `with` block) stops its threads (the `Client` stays open).

    >>> mirrored = Client("127.0.0.1:50051").with_mirror()     # doctest: +SKIP
    >>> stamp = mirrored.get_one("content")                     # doctest: +SKIP
    >>> mirrored.is_current("content", stamp)                   # doctest: +SKIP
    True
    """

    State = MirrorState
    """The map's class (a subclass may change one step of the protocol, as the conformance
    suite's rule-breaking variants do)."""

    def __init__(self, client: Client, options: MirrorOptions | None = None):
        self._client = client
        self._options = options or MirrorOptions()
        self._state = self.State(self._options)
        self._closed = threading.Event()
        self._stream: Stream[watch.WatchEvent] | None = None
        self._lease: StreamLease | None = None
        """The read lease of the open stream, while it has one (rule 19)."""
        self._last_event = time.monotonic()
        self._idle_expired = False
        self._heartbeat_interval = 0.0
        self._reader = threading.Thread(target=self._run, name="coherence-mirror", daemon=True)
        self._watchdog = threading.Thread(
            target=self._guard, name="coherence-mirror-idle", daemon=True
        )
        self._reader.start()
        self._watchdog.start()

    @classmethod
    def connect(
        cls, address: str, options: MirrorOptions | None = None, *, timeout: float = 1.0
    ) -> "MirroredClient":
        """A mirror over a new `Client.connect(address)`."""
        return cls(Client.connect(address, timeout=timeout), options)

    @property
    def client(self) -> Client:
        """The client underneath (every call on it goes to the sidecar)."""
        return self._client

    @property
    def options(self) -> MirrorOptions:
        return self._options

    def __repr__(self) -> str:
        return (
            f"MirroredClient(client={self._client!r}, trusted={self.is_trusted}, "
            f"stats={self.stats()})"
        )

    def close(self) -> None:
        """Stops the Watch stream and the mirror's threads; later checks ask the sidecar."""
        self._closed.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        for thread in (self._reader, self._watchdog):
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def __enter__(self) -> "MirroredClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Answering (rules 11-14).

    def is_current_local(self, key: str, version: Version) -> bool | None:
        """The local answer only (rule 11): whether `version` is current while the mirror is
        trusted and knows `key`; None when only the sidecar can answer."""
        state = self._state
        if _monotonic() >= state.trusted_until:
            return None
        entry = state.entries.get(key)
        if entry is None or entry[0] is None:
            return None
        state.hits += 1
        return entry[0] == version.token

    def is_current(
        self, key: str, version: Version, consistency: Consistency = Consistency.BOUNDED
    ) -> bool:
        """Whether `version` is still `key`'s current version: locally when the mirror can
        vouch, else by the sidecar. Never raises; False when nothing can vouch (fail closed)."""
        if consistency is _BOUNDED:
            # `is_current_local`, inlined: this is the hot path.
            state = self._state
            if _monotonic() < state.trusted_until:
                entry = state.entries.get(key)
                if entry is not None and entry[0] is not None:
                    state.hits += 1
                    return entry[0] == version.token
        else:
            local = self._strong_local(key, version)
            if local is not None:
                return local
        return self._check_remote(key, version, consistency).is_current

    def freshness(
        self, key: str, version: Version, consistency: Consistency = Consistency.BOUNDED
    ) -> Freshness:
        """`is_current`, telling STALE (superseded) from UNVERIFIABLE (nothing could vouch)."""
        if consistency is Consistency.BOUNDED:
            local = self.is_current_local(key, version)
        else:
            local = self._strong_local(key, version)
        if local is not None:
            return Freshness.CURRENT if local else Freshness.STALE
        return self._check_remote(key, version, consistency)

    def _strong_local(self, key: str, version: Version) -> bool | None:
        """A strong check answered from the map under the stream's read lease (rule 19: the
        lease valid when the check starts, the map caught up with it, trusted, the key known),
        or None."""
        lease = self._lease
        if lease is None or not lease.allows(_monotonic()):
            return None
        local = self.is_current_local(key, version)
        if local is not None:
            self._state.count("strong_hits")
        return local

    def _check_remote(self, key: str, version: Version, consistency: Consistency) -> Freshness:
        """Rules 11-13: ask the sidecar (strong checks do, unless under a read lease), fill from
        its answer, and answer UNVERIFIABLE when it cannot vouch or cannot be asked."""
        state = self._state
        state.counts["misses"] += 1
        asked_at = state.generation  # rule 7: read before the request is sent
        try:
            [result] = self._client.check([(key, version)], consistency)
        except CoherenceError as error:
            state.count("fallback_failures")
            log.debug("check of %r failed; answering unverifiable: %s", key, error)
            return Freshness.UNVERIFIABLE
        if result.source is not CheckSource.FAIL_CLOSED and result.version is not None:
            state.fill(key, result.version, result.as_of, asked_at)
        return Freshness.of(result)

    def get_one(self, key: str, consistency: Consistency = Consistency.BOUNDED) -> Version:
        """The current version of `key` (read it before loading what it guards): from the
        mirror when it can vouch, else from the sidecar (and remembered)."""
        if consistency is Consistency.BOUNDED:
            state = self._state
            if _monotonic() < state.trusted_until:
                entry = state.entries.get(key)
                if entry is not None and entry.token is not None:
                    state.hits += 1
                    return Version(entry.token)
        return self.get([key], consistency)[0]

    def get(
        self, keys: Sequence[str], consistency: Consistency = Consistency.BOUNDED
    ) -> list[Version]:
        """Current versions of `keys` from the sidecar, remembered by the mirror (rule 7)."""
        state = self._state
        state.counts["misses"] += 1
        asked_at = state.generation
        answers = self._client.get_positioned(keys, consistency)
        return self._fill_all(keys, answers, asked_at)

    def bump(self, keys: Sequence[str]) -> list[Version]:
        """Moves `keys` to new versions (after your write committed). The mirror learns them at
        once with their positions (rule 14), so this process never again calls the old ones
        current."""
        asked_at = self._state.generation
        answers = self._client.bump_positioned(keys)
        return self._fill_all(keys, answers, asked_at)

    def _fill_all(
        self, keys: Sequence[str], answers: list[tuple[Version, Position | None]], asked_at: int
    ) -> list[Version]:
        for key, (version, position) in zip(keys, answers):
            self._state.fill(key, version, position, asked_at)
        return [version for version, _ in answers]

    # The rest of the kit, through the client underneath.

    def jobs(self, holder: str = ""):  # type: ignore[no-untyped-def]
        return self._client.jobs(holder)

    def servers(self):  # type: ignore[no-untyped-def]
        return self._client.servers()

    def notifications(self):  # type: ignore[no-untyped-def]
        return self._client.notifications()

    # State.

    @property
    def is_trusted(self) -> bool:
        """Whether local answers are allowed right now (stream vouched, heartbeat fresh)."""
        return time.monotonic() < self._state.trusted_until

    def holds_strong_lease(self) -> bool:
        """Whether strong checks are answered locally right now (a valid read lease, the map
        caught up with it, and trusted)."""
        lease = self._lease
        return lease is not None and lease.allows(time.monotonic()) and self.is_trusted

    def wait_trusted(self, timeout: float) -> bool:
        """Waits until the mirror is trusted or `timeout` seconds pass; whether it is."""
        deadline = time.monotonic() + timeout
        while not self.is_trusted:
            if time.monotonic() >= deadline or self._closed.is_set():
                return self.is_trusted
            time.sleep(0.005)
        return True

    def mirrored_keys(self) -> int:
        """Keys held (UNKNOWN entries included)."""
        return len(self._state.entries)

    def stats(self) -> MirrorStats:
        return self._state.stats()

    # The Watch stream (rules 1-6).

    def _notify(self, event: MirrorEvent) -> None:
        hook = self._options.on_event
        if hook is not None:
            try:
                hook(event)
            except Exception:  # noqa: BLE001 — an app's hook must not end the mirror
                log.exception("mirror on_event hook failed")

    def _run(self) -> None:
        """Keeps one stream open (rule 1), reopening with backoff (rule 4)."""
        options = self._options
        backoff = options.backoff_min
        opened = 0
        while not self._closed.is_set():
            # A channel of its own per stream: a stream that went silent may sit on a
            # connection that is dead although TCP says otherwise, and reopening it on that
            # same connection would only go silent again (rule 5).
            channel = Client(
                self._client.address, timeout=self._client.timeout, options=_DEDICATED_CONNECTION
            )
            # Rule 16: a lease id of this stream alone; the lease calls share its connection.
            lease = StreamLease(channel, new_lease_id()) if options.strong_leases else None
            try:
                stream = channel.watch(options.prefixes, lease.lease_id if lease else "")
            except CoherenceError as error:
                log.debug("cannot open the watch stream; retrying: %s", error)
            else:
                if opened:
                    self._state.count("reconnects")
                vouched = self._follow(stream, lease, reconnect=opened > 0)
                opened += 1
                if vouched:
                    backoff = options.backoff_min
            finally:
                channel.close()  # also cuts short a lease call in flight
                if lease is not None:
                    lease.join(timeout=self._client.timeout)
            if self._closed.wait(backoff * random.uniform(1.0, 1.25)):
                return
            backoff = min(backoff * 2, options.backoff_max)

    def _follow(
        self, stream: Stream[watch.WatchEvent], lease: StreamLease | None, reconnect: bool
    ) -> bool:
        """Applies one stream's events in order (rule 6) until it ends, reporting each applied
        position to the stream's `lease` (rules 16, 18); whether it vouched."""
        state = self._state
        self._last_event = time.monotonic()
        self._idle_expired = False
        self._stream = stream
        if self._closed.is_set():
            stream.cancel()
        state.stream_opened()
        if lease is not None:
            lease.start()
            self._lease = lease
        self._notify(MirrorEvent("connected", reconnect=reconnect))
        vouched = False
        reason = "stream ended"
        try:
            for event in stream:
                self._last_event = time.monotonic()
                if isinstance(event, watch.Invalidated):
                    state.invalidate(event)
                elif isinstance(event, watch.Heartbeat):
                    if event.heartbeat_interval_ms:
                        self._heartbeat_interval = event.heartbeat_interval_ms / 1000
                    if event.fence_age_ms is not None and not vouched:
                        vouched = True
                        state.vouch()  # rule 3
                        self._notify(MirrorEvent("vouched"))
                    state.heartbeat(event)  # rule 10
                elif isinstance(event, watch.Resync):
                    state.resync()
                    self._notify(MirrorEvent("resync", reason=event.reason))
                if lease is not None:
                    # The sidecar waits for invalidations and resyncs, not heartbeats.
                    lease.applied(
                        event.stream_position, not isinstance(event, watch.Heartbeat)
                    )
            if self._idle_expired:
                reason = f"no event for {self.idle_timeout} s"
        except CoherenceError as error:
            reason = str(error)
        except Exception as error:  # noqa: BLE001 — whatever it was, the mirror must not trust on
            log.exception("watch stream failed")
            reason = f"{type(error).__name__}: {error}"
        finally:
            # Rule 19: the lease ends with its stream, before the map is cleared.
            self._lease = None
            if lease is not None:
                lease.stop()
            self._stream = None
            state.disconnected()  # rule 4
            self._notify(MirrorEvent("disconnected", reason=reason))
            stream.cancel()
        return vouched

    @property
    def idle_timeout(self) -> float:
        """The idle timeout in force (rule 5): the option, but never less than three of the
        sidecar's heartbeat intervals."""
        return max(self._options.idle_timeout, 3 * self._heartbeat_interval)

    def _guard(self) -> None:
        """The watchdog: ends a stream that delivered nothing for the idle timeout (rule 5)."""
        while not self._closed.wait(min(self._options.idle_timeout / 4, 0.25)):
            stream = self._stream
            if stream is not None and time.monotonic() - self._last_event > self.idle_timeout:
                self._idle_expired = True
                stream.cancel()

