//! A thin, typed async client for the coherence sidecar.
//!
//! The sidecar runs beside your server and owns cache versions in Redis. Before serving a
//! cached value, ask whether the version you stamped it with is still current; after writing
//! to your source of truth, bump the keys you changed:
//!
//! ```no_run
//! # async fn demo() -> Result<(), coherence_client::Error> {
//! use coherence_client::{Client, Consistency};
//!
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! // Stamp before load: read the version first, then load from the source of truth.
//! let stamp = client.get_one("content").await?;
//! // ... load the data, cache it together with `stamp` ...
//! if !client.is_current("content", &stamp, Consistency::Bounded).await? {
//!     // drop the cached value and load again
//! }
//! // After a write to the source of truth has committed:
//! client.bump(&["content"]).await?;
//! # Ok(()) }
//! ```
//!
//! Every call has a deadline (default 1 s, see [`Client::with_timeout`]); a broken channel is
//! re-established by the next call.

mod cache;
mod client;
mod error;
mod mirror;

pub use cache::{BumpReport, CacheStats, CoherentCache, CoherentCacheBuilder};
pub use client::{
    CheckResult, CheckSource, Client, Consistency, Version, WatchEvent, WatchStream,
    DEFAULT_TIMEOUT,
};
pub use error::Error;
pub use mirror::{
    MirrorEvent, MirrorHook, MirrorOptions, MirrorStats, MirroredClient, DEFAULT_MAX_STALENESS,
};
