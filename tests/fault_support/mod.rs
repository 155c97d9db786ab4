//! Fault-injection support: a small fleet of in-process sidecars on one test Redis (some behind
//! a fault proxy), a mixed workload through sidecars, client mirrors and coherent caches that
//! records every operation in a [`history::History`], the checker that judges it, and the
//! probes that decide when the fleet has recovered from a fault.
//!
//! Everything is real: a `redis-server` the test starts, sidecars listening on port 0, and the
//! workload talking to them through the gRPC client.

#![allow(dead_code, unused_imports)] // each test binary uses its own part of the support code

pub mod fleet;
pub mod workload;

// The history checker lives in coherence-testkit, shared with coherence-bench's soak.
pub use coherence_testkit::fault_history::{history, order, report};

pub use fleet::{fault_settings, keys_of_one_shard, metric_of, Backend, Fleet};
pub use history::{Floors, Via};
pub use workload::{mirror_of, mirror_options, Workload, WorkloadOptions};
