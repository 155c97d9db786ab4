//! The in-process mirror: most `is_current` checks answered in the app's own memory.
//!
//! A gRPC `Check` over loopback costs tens of microseconds; a lookup in a local map costs tens
//! of nanoseconds. [`MirroredClient`] keeps one `Watch` stream open to its sidecar and a map
//! key → current version, filled from the sidecar's own answers (`Get`, `Check`, `Bump`) and
//! overwritten by every invalidation the stream delivers. Everything the map cannot answer
//! (unknown keys, untrusted periods, strong checks) goes to the sidecar, and a failed sidecar
//! call answers "not current" (fail closed). Events and heartbeats travel on one ordered
//! stream, so a heartbeat never overtakes an invalidation sent before it.
//!
//! # How long the map is trusted
//!
//! The map answers only while it can prove itself fresh. Each Watch heartbeat carries the age
//! `a` of the sidecar's oldest shard fence (its own mirror reflects every bump completed before
//! `a` ago) and the sidecar's wall-clock send time. The sidecar-to-client hop is not assumed
//! free: on receipt the client adds the time since that send time (the heartbeat's queueing in
//! the sidecar, the transit, and its wait in this process's stream), `d`, read off this
//! process's wall clock, so the heartbeat proves the map reflects every bump completed before
//! `now - d - a`. The map is then trusted until `max_staleness - (d + a)` has passed on the
//! monotonic clock, and not at all when `d + a >= max_staleness` (the smaller of this client's
//! bound and the one the sidecar sends). `d` is measured with two wall clocks; the sidecar runs
//! on the app's host, so they are the same clock. A send time in the future (a clock stepped
//! back) or none at all (a sidecar of an earlier release) adds nothing: only then is the hop
//! left out. See `fence_age_on_receipt` in `client.rs` and `MirrorState::heartbeat` in `state.rs`.
//!
//! # Vouching, and fills racing invalidations
//!
//! A stream counts only once the sidecar vouches for it with its first heartbeat that carries
//! a fence age: a sidecar that is not yet subscribed to Redis serves `Watch` and `Get` but
//! cannot announce bumps it never heard of. Fills are refused until then, and fills asked
//! before then are refused after (docs/client-protocol.md, rules on connecting).
//!
//! The one race that matters is between filling the map from a sidecar answer and an
//! invalidation arriving on the stream while that answer was in flight: the answer may predate
//! the invalidation. Every invalidation and every resync takes a new *generation*; a fill
//! remembers the generation before it asked, and is refused if the key (or the whole map) has
//! changed since. When a fill and a newer entry disagree the key is marked unknown (a
//! tombstone), so it can only be answered by the sidecar until the next invalidation.
//!
//! # Files
//!
//! `options.rs`: what an app sets and reads ([`MirrorOptions`], [`MirrorEvent`],
//! [`MirrorStats`]); `state.rs`: the map and its trust state (`MirrorState`); `lease.rs`: the
//! read lease under which strong checks are answered locally;
//! `mirrored_client.rs`: [`MirroredClient`], the app's handle, and the Watch loop that keeps
//! the map up to date.

mod lease;
mod mirrored_client;
mod options;
mod state;

pub use mirrored_client::MirroredClient;
pub use options::{MirrorEvent, MirrorHook, MirrorOptions, MirrorStats, DEFAULT_MAX_STALENESS};
