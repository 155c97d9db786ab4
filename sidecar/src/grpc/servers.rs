//! The `coherence.v1.Servers` gRPC service: the live servers, this server's role, and a stream
//! of role changes (at most `max_role_streams` open at once: a stream whose client does not
//! read may hold HTTP/2 send buffers, see docs/operations.md, memory budget).

use std::sync::Arc;

use coherence_proto::v1 as pb;
use coherence_proto::v1::servers_server::Servers as ServersApi;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::grpc::admission::{Slotted, StreamSlots};
use crate::load_balancing::servers::{Role, RoleMode, RoleStatus, Servers};

/// The gRPC face of one sidecar's [`Servers`].
pub struct ServersService {
    servers: Arc<Servers>,
    /// `max_role_streams`.
    role_slots: StreamSlots,
    shutdown: watch::Receiver<bool>,
}

impl ServersService {
    pub fn new(
        servers: Arc<Servers>,
        role_slots: StreamSlots,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        ServersService {
            servers,
            role_slots,
            shutdown,
        }
    }
}

fn role(role: Role) -> pb::Role {
    match role {
        Role::Single => pb::Role::Single,
        Role::SchedulingPublisher => pb::Role::SchedulingPublisher,
        Role::Subscriber => pb::Role::Subscriber,
        Role::Unknown => pb::Role::Unknown,
    }
}

fn role_status(server_id: &str, status: RoleStatus) -> pb::RoleStatus {
    pb::RoleStatus {
        role: role(status.role) as i32,
        mode: match status.mode {
            RoleMode::Static(_) => pb::RoleMode::Static,
            RoleMode::Elected => pb::RoleMode::Elected,
        } as i32,
        server_id: server_id.to_string(),
        leader_id: status.leader_id,
        live_servers: status.live_servers,
        reason: status.reason,
    }
}

#[tonic::async_trait]
impl ServersApi for ServersService {
    async fn list_servers(
        &self,
        _request: Request<pb::ListServersRequest>,
    ) -> Result<Response<pb::ListServersResponse>, Status> {
        let (servers, leader_id) = self
            .servers
            .list()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::ListServersResponse {
            servers: servers
                .into_iter()
                .map(|s| pb::ServerInfo {
                    server_id: s.server_id,
                    address: s.address,
                    version: s.version,
                    started_at_unix_ms: s.started_at_unix_ms,
                    last_heartbeat_unix_ms: s.last_heartbeat_unix_ms,
                    role: role(s.role) as i32,
                })
                .collect(),
            leader_id,
        }))
    }

    async fn get_role(
        &self,
        _request: Request<pb::GetRoleRequest>,
    ) -> Result<Response<pb::RoleStatus>, Status> {
        Ok(Response::new(role_status(
            self.servers.server_id(),
            self.servers.status(),
        )))
    }

    type WatchRoleStream = Slotted<ReceiverStream<Result<pb::RoleStatus, Status>>>;

    async fn watch_role(
        &self,
        _request: Request<pb::WatchRoleRequest>,
    ) -> Result<Response<Self::WatchRoleStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let stream = self.role_slots.hold(ReceiverStream::new(rx))?;
        let mut changes = self.servers.watch();
        let mut shutdown = self.shutdown.clone();
        let server_id = self.servers.server_id().to_string();
        tokio::spawn(async move {
            loop {
                let current = role_status(&server_id, changes.borrow_and_update().clone());
                if tx.send(Ok(current)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = async { let _ = shutdown.wait_for(|down| *down).await; } => {
                        let _ = tx.send(Err(Status::unavailable("sidecar is shutting down"))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(stream))
    }
}
