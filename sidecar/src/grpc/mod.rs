//! The gRPC API: one module per `coherence.v1` service, translating protobuf messages into
//! the operations of [`crate::versions`] and [`crate::load_balancing`]; the request checks
//! they share ([`validation`]), the admission of streams ([`admission`]), `grpc.health.v1` with bounded
//! `Watch` streams ([`health`]), the Watch stream
//! ([`watch`], [`prefix_set`]); the HTTP/2 transport's limits ([`transport`]) and the bound on connections
//! ([`connections`]); and the layers around the whole server: bearer-token
//! authentication ([`auth`]), call metrics ([`metrics`]) and the bound on the bytes of requests
//! held at once ([`request_budget`]).

pub mod admission;
pub mod auth;
pub mod cache_versions;
pub mod connections;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod notifications;
pub mod observer;
pub mod prefix_set;
pub mod request_budget;
pub mod servers;
pub mod transport;
pub mod validation;
pub mod watch;
