//! The coherence sidecar: cache version counters in Redis, served over localhost gRPC.
//!
//! An application behind a load balancer asks its sidecar whether the version it stamped on a
//! cache entry is still current, and tells it when it changed data. The sidecar keeps the
//! versions in Redis, mirrors them in memory, and learns of other servers' changes through
//! Redis pub/sub — with the guarantees stated in docs/design.md (no false "current", bounded
//! staleness, strong reads on request, fail closed, no lost invalidation unnoticed).
//!
//! Start one with [`Sidecar::start`]; the binary `coherence-sidecar` does exactly that from
//! flags, environment and an optional TOML file ([`process::config`]).
//!
//! ## Layout
//!
//! One folder per concept, listed top to bottom; a module uses only modules below it:
//!
//! - [`process`]: the running process — configuration, listeners, start and stop, the admin
//!   HTTP listener;
//! - [`grpc`]: the gRPC API, one module per service, and the layers around it;
//! - [`versions`]: cache versions — Get, Check, Bump, the mirror and what keeps it fresh;
//! - [`load_balancing`]: server roles, distributed jobs, the notifications backplane;
//! - [`redis`]: reaching Redis — deployments, credentials, the verified connection, key names;
//! - [`buffers`]: buffers slow or untrusted parties fill, bounded in bytes;
//! - [`metrics`], [`secrets`], [`token`], [`invalid_setting`]: what every layer records, what
//!   none may print, random tokens, and how a refused setting is named;
//! - [`fault_injection`]: test-only switches that turn a safety mechanism off (cargo feature
//!   `fault-injection`; without it, nothing).

pub mod buffers;
pub mod fault_injection;
pub mod grpc;
pub mod invalid_setting;
pub mod load_balancing;
pub mod metrics;
pub mod process;
pub mod redis;
pub mod secrets;
pub mod token;
pub mod versions;

pub use process::config::Config;
pub use process::sidecar::Sidecar;
