//! The coherence sidecar: cache version counters in Redis, served over localhost gRPC.
//!
//! An application behind a load balancer asks its sidecar whether the version it stamped on a
//! cache entry is still current, and tells it when it changed data. The sidecar keeps the
//! versions in Redis, mirrors them in memory, and learns of other servers' changes through
//! Redis pub/sub — with the guarantees stated in docs/design.md (no false "current", bounded
//! staleness, strong reads on request, fail closed, no lost invalidation unnoticed).
//!
//! Start one with [`server::Sidecar::start`]; the binary `coherence-sidecar` does exactly that
//! from flags, environment and an optional TOML file ([`config`]).

pub mod admin;
pub mod batcher;
pub mod config;
pub mod exposition;
pub mod grpc;
pub mod grpc_auth;
pub mod grpc_metrics;
pub mod heartbeat;
pub mod jobs;
pub mod jobs_grpc;
pub mod keyspace;
pub mod kit_grpc;
pub mod limits;
pub mod listen;
pub mod message;
pub mod metrics;
pub mod mirror;
pub mod notifications;
pub mod notifications_grpc;
pub mod reconcile;
pub mod redis_access;
pub mod redis_link;
pub mod redis_target;
pub mod redis_url;
pub mod scripts;
pub mod secrets;
pub mod server;
pub mod servers;
pub mod servers_grpc;
pub mod state;
pub mod subscription;
pub mod versions;

pub use config::Config;
pub use server::Sidecar;
