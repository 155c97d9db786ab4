//! Whether the sidecar is ready to serve: the one answer `/readyz`, `grpc.health.v1` and the
//! `coherence_ready` gauge give.
//!
//! Ready means the sidecar can vouch for versions (Redis verified, subscription live, every
//! shard synced: [`VersionsState::is_synced`]; in functions mode, Redis has the library its
//! calls need: [`crate::redis::scripts::ScriptRunner::usable`]), its server_id is its own
//! ([`Servers::is_registered`]), and it is not shutting down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::load_balancing::servers::Servers;
use crate::versions::state::VersionsState;

/// The parts readiness is made of.
pub struct Readiness {
    versions: Arc<VersionsState>,
    servers: Arc<Servers>,
    shutting_down: AtomicBool,
}

impl Readiness {
    pub fn new(versions: Arc<VersionsState>, servers: Arc<Servers>) -> Readiness {
        Readiness {
            versions,
            servers,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Ready to serve: not draining, server_id registered as ours, Redis verified,
    /// subscription live, every shard synced.
    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down()
            && self.servers.is_registered()
            && self.versions.is_synced()
            && self.versions.link.scripts().usable()
    }

    /// Readiness drops for good: the sidecar is draining.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Whether this sidecar's server_id is registered as its own.
    pub fn is_registered(&self) -> bool {
        self.servers.is_registered()
    }

    /// The cache-version state (its Redis link, mirror and metrics).
    pub fn versions(&self) -> &Arc<VersionsState> {
        &self.versions
    }
}
