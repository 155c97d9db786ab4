//! What a load-balanced fleet needs besides cache versions, as Umbraco's load balancing uses
//! it: the registry of live servers and which one is the scheduling publisher ([`servers`]),
//! distributed jobs with fencing tokens ([`jobs`]), and a notifications backplane between
//! servers ([`notifications`]). Each keeps its state in Redis under the namespace, through
//! its own Lua script.

pub mod jobs;
pub mod notifications;
pub mod servers;

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::redis::link::RedisLink;

/// What a load-balancing service needs of the sidecar, and nothing more: the verified Redis
/// link, the namespace its keys live under, how long one call may wait for Redis, this
/// server's id, and where to count.
#[derive(Clone)]
pub struct ServiceHandle {
    pub link: RedisLink,
    pub namespace: Arc<str>,
    pub request_timeout: Duration,
    pub server_id: Arc<str>,
    pub metrics: Metrics,
}
