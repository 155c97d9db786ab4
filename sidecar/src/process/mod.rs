//! The sidecar process: its configuration (flags, environment, TOML file; [`config`]), where
//! the gRPC API listens ([`listen`]), starting and stopping everything ([`sidecar`]), whether it
//! is ready to serve ([`readiness`]), and the admin HTTP listener for metrics and health
//! ([`admin`]).

pub mod admin;
pub mod config;
pub mod listen;
pub mod readiness;
pub mod sidecar;
