//! What a load-balanced fleet needs besides cache versions, as Umbraco's load balancing uses
//! it: the registry of live servers and which one is the scheduling publisher ([`servers`]),
//! distributed jobs with fencing tokens ([`jobs`]), and a notifications backplane between
//! servers ([`notifications`]). Each keeps its state in Redis under the namespace, through
//! its own Lua script.

pub mod jobs;
pub mod notifications;
pub mod servers;
