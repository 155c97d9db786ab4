//! The Rust client for the coherence sidecar: cache coherence for apps that run on several
//! servers, each with its own in-process cache.
//!
//! The sidecar runs beside your server and keeps a *version* per cache key in Redis. A cached
//! value is served only while the version it was stamped with is still current; a write to
//! the source of truth is followed by a *bump* of the keys it changed, which moves them to new
//! versions on every server. The crate has three layers; most apps want the last one:
//!
//! | type | what it does | a check costs |
//! | --- | --- | --- |
//! | [`Client`] | one gRPC call per method, each with a deadline | a loopback round trip (tens of µs) |
//! | [`MirroredClient`] | [`Client`] plus an in-process mirror fed by one `Watch` stream | a local map lookup (tens of ns) while the mirror is provably fresh |
//! | [`CoherentCache`] | a bounded cache (moka) that stamps before load, loads once per key and serves only current values | same as the mirror |
//!
//! # Use it in your app
//!
//! The crate is not on crates.io: depend on it from a checkout of the coherence repository
//! (here next to your app), with Tokio, whose runtime it runs on. In your `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! coherence-client = { path = "../coherence/client" }
//! tokio = { version = "1.48", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! Add `futures = "0.3"` to read the streams ([`Client::watch`], [`Servers::watch_role`],
//! [`Notifications::subscribe`]). Rust 1.85 or newer.
//!
//! # How to stamp
//!
//! Read the key's version *before* loading, load from the source of truth, store the value
//! together with that version. A write whose bump lands while you load then makes your entry
//! stale at once, as it should. Load after stamping, never the other way round: a version
//! read after the load could be newer than the data. [`CoherentCache::get_or_load`] does
//! exactly this, with one load per key at a time (single flight). After a write has
//! committed, call [`CoherentCache::invalidate_after_write`] (or [`MirroredClient::bump`]):
//! it retries a failed bump a bounded number of times and reports keys it could not bump.
//!
//! ```no_run
//! # async fn load_row(id: i64) -> Result<String, std::io::Error> { Ok(format!("row {id}")) }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use coherence_client::{Client, CoherentCache, MirrorOptions};
//!
//! let mirrored = Client::connect("http://127.0.0.1:50051").await?.with_mirror(MirrorOptions::default());
//! let items: CoherentCache<i64, String> = CoherentCache::new(mirrored, |id: &i64| format!("item:{id}"));
//! // The loader runs at most once per call, and only on a miss (see `get_or_load`); its own
//! // error comes back as `Arc<io::Error>` here, which `?` turns into the app's error.
//! let name = items.get_or_load(42, move || load_row(42)).await?;
//! // ... UPDATE items SET ... WHERE id = 42; COMMIT ...
//! let report = items.invalidate_after_write(&[42]).await;
//! if !report.is_complete() {
//!     eprintln!("other servers may serve stale copies of {:?}", report.not_bumped);
//! }
//! # Ok(()) }
//! ```
//!
//! # How fresh an answer is
//!
//! By default a check has *bounded staleness*: it reflects every bump that completed more than
//! `max_staleness` (default 500 ms) before the check began. The mirror proves this with the
//! sidecar's Watch heartbeats: each carries the age `a` of the sidecar's oldest fence and the
//! time it was sent; a heartbeat received at local instant `t` after `d` in queues and in
//! transit lets the mirror answer locally while `now - t + a + d < max_staleness`. `d` comes
//! from the wall clock, which the sidecar beside the app shares (same host); a send time ahead
//! of the client's clock counts as zero, and a sidecar whose clock runs behind only makes the
//! mirror trust less and ask the sidecar more, never trust more. Everything else is the local
//! monotonic clock. Bumps made through the same [`MirroredClient`] are visible to it at once.
//!
//! Use a **strong** check ([`Consistency::Strong`], [`MirroredClient::is_current_with`],
//! [`CoherentCache::get_or_load_with`]) when a read must reflect every bump completed before it
//! began, typically reading back a write made through another server (a redirect after an
//! edit form, a workflow step that follows another service's write). It always asks the
//! sidecar, which fences through Redis; concurrent strong checks share one round trip.
//!
//! # When the sidecar or Redis is down
//!
//! Nothing is ever guessed. A check nobody can vouch for answers "not current" (fail closed):
//! the mirror stops answering locally once its heartbeats stop or grow old, the sidecar's
//! `Check` fails closed when Redis is unreachable, and a failed call is "not current" too. A
//! [`CoherentCache`] then calls your loader and returns its result *without caching it*, so
//! your app keeps working at the speed of its database. Bumps fail with
//! [`Error::Unavailable`] and are reported by `invalidate_after_write`. Recovery is automatic:
//! the mirror's Watch task reconnects with backoff, treats the gap as a resync (drops the
//! mirror) and counts it ([`MirrorStats`], [`MirrorOptions::on_event`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use coherence_client::{Client, CoherentCache, MirrorOptions, Version};
//!
//! // Nothing listens on port 1: every sidecar call fails at once.
//! let mirrored = Client::connect_lazy("127.0.0.1:1")
//!     .unwrap()
//!     .with_timeout(Duration::from_millis(200))
//!     .with_mirror(MirrorOptions::default());
//! // Fail closed: no sidecar, no vouching.
//! assert!(!mirrored.is_current("content", &Version::from_token("1.1.x")).await);
//!
//! let items: CoherentCache<u32, String> = CoherentCache::new(mirrored, |id: &u32| format!("item:{id}"));
//! for _ in 0..2 {
//!     let row = items.get_or_load(1, || async { Ok::<_, std::io::Error>("row 1".to_string()) }).await;
//!     assert_eq!(row.unwrap(), "row 1");
//! }
//! // Both reads went to the loader: nothing is cached without a version.
//! assert_eq!(items.stats().uncached_loads, 2);
//! assert_eq!(items.stats().loads, 0);
//! # }
//! ```
//!
//! Every call has a deadline (default 1 s, see [`Client::with_timeout`]); a broken channel is
//! re-established by the next call. Every network error names the sidecar's address, and its
//! cause ("connection refused") is its [`source`](std::error::Error::source): print errors
//! with their chain (anyhow's `{:#}`). [`CacheStats`] and [`MirroredClient::freshness`] tell
//! an entry superseded by a write ([`Freshness::Stale`]) from one nobody could vouch for
//! during an outage ([`Freshness::Unverifiable`]).
//!
//! # The rest of the load-balancing kit
//!
//! The same sidecar answers which servers are alive and which one runs scheduled work
//! ([`Client::servers`], [`Role::runs_scheduled_work`]), and hands out job leases with fencing
//! tokens and recurring runs granted to one server per period ([`Client::jobs`]). A lease can
//! be lost unnoticed, so every write a job makes carries its fencing token and the resource
//! refuses older tokens; a renew or release under a lost lease fails with
//! [`Error::LeaseLost`], and [`Jobs::keep_alive`] renews a lease every third of its TTL and
//! reports its loss ([`LeaseLoss`]). [`MirroredClient`] and [`CoherentCache`] offer the same
//! `jobs()`, `servers()` and `notifications()` as [`Client`]. [`Client::notifications`] fans small messages out to every server, at
//! most once (a subscriber is told when it may have missed some).

#![warn(missing_docs)]
#![warn(missing_debug_implementations)]

mod cache;
mod call;
mod client;
mod error;
mod freshness;
mod jobs;
mod keep_alive;
mod mirror;
mod notifications;
mod observer;
mod servers;
mod shortcuts;
mod transport;

pub use cache::{BumpReport, CacheStats, CoherentCache, CoherentCacheBuilder};
pub use client::{
    CheckResult, CheckSource, Client, Consistency, MirrorLeaseAnswer, Position, Version,
    WatchEvent, WatchStream, DEFAULT_TIMEOUT,
};
pub use error::{Error, SidecarStatus, Source};
pub use freshness::Freshness;
pub use jobs::{Acquired, Claimed, Jobs, Lease};
pub use keep_alive::{LeaseKeeper, LeaseLoss};
pub use mirror::{
    MirrorEvent, MirrorHook, MirrorOptions, MirrorStats, MirroredClient, DEFAULT_MAX_STALENESS,
};
pub use notifications::{NotificationEvent, NotificationStream, Notifications};
pub use observer::Observer;
pub use servers::{Role, RoleMode, RoleStatus, RoleStream, ServerInfo, ServerList, Servers};
pub use transport::{connect_channel, AuthToken, TokenError};
