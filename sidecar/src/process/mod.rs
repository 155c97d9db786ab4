//! The sidecar process: its configuration (flags, environment, TOML file; [`config`]), where
//! the gRPC API listens ([`listen`]), starting and stopping everything ([`sidecar`]), and the
//! admin HTTP listener for metrics and health ([`admin`]).

pub mod admin;
pub mod config;
pub mod listen;
pub mod sidecar;
