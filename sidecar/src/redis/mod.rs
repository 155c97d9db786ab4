//! Reaching Redis: which deployment `redis_url` names and how to find its master(s)
//! ([`target`]), the credentials and TLS roots ([`access`], [`url`]), the verified command
//! connection every operation runs on ([`link`]), and the names a namespace's state lives
//! under ([`keyspace`]).
//!
//! What is stored, and the scripts that store it, belong to the concepts that own it
//! ([`crate::versions`], [`crate::load_balancing`]).

pub mod access;
pub mod keyspace;
pub mod link;
pub mod target;
pub mod url;
