//! `grpc.health.v1.Health`: tonic-health's service, with its `Watch` streams counted against
//! `max_health_watch_streams`.
//!
//! Health calls need no bearer token (probes and tooling carry none), so on a listener others
//! can reach anyone could open `Watch` streams; each may hold HTTP/2 send buffers while its
//! client does not read. tonic-health bounds nothing, so this wrapper gives each stream a slot
//! ([`StreamSlots`]) and answers `RESOURCE_EXHAUSTED` past them; `Check` is passed through.
//! Its requests (a service name) are kept out of the request budget, which anyone could
//! otherwise fill without a token, and bounded instead by a decoder limit of their own
//! ([`MAX_REQUEST_BYTES`]).

use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService, WatchStream};

use crate::grpc::admission::{Slotted, StreamSlots};

/// The largest health request decoded: a service name (ours are `""` and
/// `coherence.v1.CacheVersions`), far below tonic's default of 4 MiB.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024;

/// tonic-health's service with bounded `Watch` streams.
pub struct BoundedHealth {
    inner: HealthService,
    /// `max_health_watch_streams`.
    watch_slots: StreamSlots,
}

impl BoundedHealth {
    /// The server for the statuses `reporter` sets.
    pub fn server(reporter: &HealthReporter, watch_slots: StreamSlots) -> HealthServer<Self> {
        HealthServer::new(BoundedHealth {
            inner: HealthService::from_health_reporter(reporter.clone()),
            watch_slots,
        })
        .max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl Health for BoundedHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = Slotted<WatchStream>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // The slot first: a refused stream costs no lookup.
        let slot = self.watch_slots.take()?;
        let stream = self.inner.watch(request).await?.into_inner();
        Ok(Response::new(Slotted::new(stream, slot)))
    }
}
