//! Servers and roles, typed (service `coherence.v1.Servers`): which servers of the namespace
//! are alive, and whether this one should run scheduled and back-office work (Umbraco's
//! `SchedulingPublisher`).
//!
//! A role is never assumed: a sidecar that cannot prove its role (Redis unreachable, leader
//! lease possibly expired) reports [`Role::Unknown`], and an app should then run nothing that
//! only one server may run.

use std::pin::Pin;
use std::task::{Context, Poll};

use coherence_proto::v1 as pb;
use coherence_proto::v1::servers_client::ServersClient;
use futures::Stream;

use crate::call::{poll_events, Target};
use crate::error::Error;
use crate::transport::Transport;

/// The servers of one sidecar's namespace. From [`Client::servers`](crate::Client::servers);
/// cheap to clone.
#[derive(Debug, Clone)]
pub struct Servers {
    grpc: ServersClient<Transport>,
    target: Target,
}

/// A server's role, as in Umbraco's `ServerRole`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The only live server: does everything a scheduling publisher does.
    Single,
    /// Runs scheduled and back-office work.
    SchedulingPublisher,
    /// Another server is the scheduling publisher.
    Subscriber,
    /// No role can be proven now; run nothing that only one server may run.
    Unknown,
}

impl Role {
    /// Whether this server should run the work that one server of the fleet runs.
    pub fn runs_scheduled_work(self) -> bool {
        matches!(self, Role::Single | Role::SchedulingPublisher)
    }

    fn from_proto(role: i32) -> Role {
        match pb::Role::try_from(role) {
            Ok(pb::Role::Single) => Role::Single,
            Ok(pb::Role::SchedulingPublisher) => Role::SchedulingPublisher,
            Ok(pb::Role::Subscriber) => Role::Subscriber,
            _ => Role::Unknown,
        }
    }
}

/// How roles are chosen (the sidecar's `role` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleMode {
    /// Pinned by configuration.
    Static,
    /// Chosen by a leader lease in Redis.
    Elected,
    /// A mode this client does not know.
    Unknown,
}

/// This server's role and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleStatus {
    /// The role now.
    pub role: Role,
    /// How it was chosen.
    pub mode: RoleMode,
    /// This server.
    pub server_id: String,
    /// The leader as last seen in Redis (elected mode).
    pub leader_id: Option<String>,
    /// Live servers as last seen in Redis (0 when unknown).
    pub live_servers: u32,
    /// Why the role is what it is, for people.
    pub reason: String,
}

impl RoleStatus {
    fn from_proto(status: pb::RoleStatus) -> RoleStatus {
        RoleStatus {
            role: Role::from_proto(status.role),
            mode: match pb::RoleMode::try_from(status.mode) {
                Ok(pb::RoleMode::Static) => RoleMode::Static,
                Ok(pb::RoleMode::Elected) => RoleMode::Elected,
                _ => RoleMode::Unknown,
            },
            server_id: status.server_id,
            leader_id: Some(status.leader_id).filter(|l| !l.is_empty()),
            live_servers: status.live_servers,
            reason: status.reason,
        }
    }
}

/// One live server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Its server id.
    pub server_id: String,
    /// The address it advertises.
    pub address: String,
    /// Its sidecar's version.
    pub version: String,
    /// When its sidecar started (Redis clock).
    pub started_at_unix_ms: u64,
    /// Its last heartbeat (Redis clock).
    pub last_heartbeat_unix_ms: u64,
    /// The role it reported with that heartbeat.
    pub role: Role,
}

/// The live servers of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerList {
    /// Every server whose heartbeat is recent.
    pub servers: Vec<ServerInfo>,
    /// The holder of the leader lease (elected mode), if any.
    pub leader_id: Option<String>,
}

impl Servers {
    pub(crate) fn new(channel: Transport, target: Target) -> Servers {
        Servers {
            grpc: ServersClient::new(channel),
            target,
        }
    }

    /// This server's role now.
    ///
    /// ```no_run
    /// # async fn demo(client: coherence_client::Client) -> Result<(), coherence_client::Error> {
    /// if client.servers().role().await?.role.runs_scheduled_work() {
    ///     // ... send the newsletter ...
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn role(&self) -> Result<RoleStatus, Error> {
        let mut grpc = self.grpc.clone();
        let status = self
            .target
            .call(grpc.get_role(self.target.request(pb::GetRoleRequest {})))
            .await?;
        Ok(RoleStatus::from_proto(status))
    }

    /// The live servers of the namespace.
    pub async fn list(&self) -> Result<ServerList, Error> {
        let mut grpc = self.grpc.clone();
        let answer = self
            .target
            .call(grpc.list_servers(self.target.request(pb::ListServersRequest {})))
            .await?;
        Ok(ServerList {
            servers: answer
                .servers
                .into_iter()
                .map(|s| ServerInfo {
                    role: Role::from_proto(s.role),
                    server_id: s.server_id,
                    address: s.address,
                    version: s.version,
                    started_at_unix_ms: s.started_at_unix_ms,
                    last_heartbeat_unix_ms: s.last_heartbeat_unix_ms,
                })
                .collect(),
            leader_id: Some(answer.leader_id).filter(|l| !l.is_empty()),
        })
    }

    /// The role now, then every change, until the stream is dropped (or the sidecar ends it).
    ///
    /// ```no_run
    /// # async fn demo(client: coherence_client::Client) -> Result<(), coherence_client::Error> {
    /// use futures::StreamExt;
    /// let mut roles = client.servers().watch_role().await?;
    /// while let Some(status) = roles.next().await {
    ///     println!("now {:?}: {}", status?.role, "start or stop the scheduler here");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn watch_role(&self) -> Result<RoleStream, Error> {
        let mut grpc = self.grpc.clone();
        // No gRPC deadline: the local one covers opening the stream, not its lifetime.
        let opening = tonic::Request::new(pb::WatchRoleRequest {});
        let inner = self.target.call(grpc.watch_role(opening)).await?;
        Ok(RoleStream {
            inner,
            target: self.target.clone(),
        })
    }
}

/// The role changes of one `WatchRole` stream.
#[derive(Debug)]
pub struct RoleStream {
    inner: tonic::Streaming<pb::RoleStatus>,
    target: Target,
}

impl Stream for RoleStream {
    type Item = Result<RoleStatus, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        poll_events(&mut this.inner, cx, &this.target, |status| {
            Some(RoleStatus::from_proto(status))
        })
    }
}
