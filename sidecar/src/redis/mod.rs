//! Reaching Redis: the settings, parsed once ([`config`]), which deployment `redis_url` names
//! and how to find its master(s) ([`target`]), the credentials and TLS roots ([`access`], [`url`]), the verified command
//! connection every operation runs on ([`link`]), how scripts run on it (`EVALSHA` or `FCALL` of
//! the Functions library; [`scripts`]), and the names a namespace's state lives under
//! ([`keyspace`]).
//!
//! What is stored, and the scripts that store it, belong to the concepts that own it
//! ([`crate::versions`], [`crate::load_balancing`]).

pub mod access;
pub mod config;
pub mod keyspace;
pub mod link;
pub mod scripts;
pub mod target;
pub mod url;
