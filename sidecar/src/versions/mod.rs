//! Cache versions, the core of coherence: Get, Check and Bump ([`Versions`]), the in-memory
//! mirror that answers most checks ([`mirror`]), and the tasks that keep it provably fresh —
//! the subscription that applies invalidations in order and repairs gaps ([`subscription`]),
//! the heartbeat fences that bound its staleness ([`fences`]) and periodic reconciliation
//! ([`reconcile`]) — and the read leases that let strong checks be answered from the mirror
//! ([`leases`]).
//!
//! The consistency observer ([`audit`]) samples the answers given and judges them against the
//! replay log, and probes propagation with canary bumps.
//!
//! A shard's state in Redis is read and written only by `shard.lua`, through
//! [`shard_script`]; reads and bumps are coalesced by [`batcher`].

pub mod audit;
pub mod batcher;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod fences;
pub mod leases;
pub mod messages;
pub mod mirror;
pub mod operations;
pub mod reconcile;
pub mod shard_script;
pub mod state;
pub mod subscription;
pub mod version;

pub use operations::{CheckOutcome, CheckSource, Versions};
