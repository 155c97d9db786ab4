//! `coherencectl servers` (the live servers of the namespace) and `coherencectl role` (this
//! sidecar's role, or with `--watch` every change).

use coherence_proto::v1 as pb;
use coherence_proto::v1::servers_client::ServersClient;
use serde_json::json;
use tokio_stream::StreamExt;

use super::kit::{call_error, channel, role_name};
use super::output::{pad, width};
use super::{exit, GlobalOptions};

#[derive(Debug, clap::Args)]
pub struct ServersArgs {}

#[derive(Debug, clap::Args)]
pub struct RoleArgs {
    /// Keep printing the role every time it changes.
    #[arg(long)]
    pub watch: bool,
}

pub async fn servers(_args: ServersArgs, global: &GlobalOptions) -> anyhow::Result<u8> {
    let mut client = ServersClient::new(channel(global).await?);
    let list = client
        .list_servers(pb::ListServersRequest {})
        .await
        .map_err(|s| call_error(s, global))?
        .into_inner();
    let out = global.output();
    let w = width(list.servers.iter().map(|s| s.server_id.as_str()));
    let aw = width(list.servers.iter().map(|s| s.address.as_str()));
    for server in &list.servers {
        let leader = server.server_id == list.leader_id;
        out.line(
            || {
                format!(
                    "{}  {}  {:<20}  version {}  heartbeat at {} ms{}",
                    pad(&server.server_id, w),
                    pad(&server.address, aw),
                    role_name(server.role()),
                    server.version,
                    server.last_heartbeat_unix_ms,
                    if leader { "  (leader)" } else { "" }
                )
            },
            || {
                json!({
                    "server_id": server.server_id,
                    "address": server.address,
                    "role": role_name(server.role()),
                    "version": server.version,
                    "started_at_unix_ms": server.started_at_unix_ms,
                    "last_heartbeat_unix_ms": server.last_heartbeat_unix_ms,
                    "leader": leader,
                })
            },
        );
    }
    Ok(exit::OK)
}

fn print_role(global: &GlobalOptions, status: &pb::RoleStatus) {
    let mode = match status.mode() {
        pb::RoleMode::Static => "static",
        _ => "elected",
    };
    global.output().line(
        || {
            format!(
                "{}  {}  ({mode}; leader {}; {} live servers): {}",
                status.server_id,
                role_name(status.role()),
                if status.leader_id.is_empty() {
                    "none"
                } else {
                    &status.leader_id
                },
                status.live_servers,
                status.reason
            )
        },
        || {
            json!({
                "server_id": status.server_id,
                "role": role_name(status.role()),
                "mode": mode,
                "leader_id": status.leader_id,
                "live_servers": status.live_servers,
                "reason": status.reason,
            })
        },
    );
}

pub async fn role(args: RoleArgs, global: &GlobalOptions) -> anyhow::Result<u8> {
    let mut client = ServersClient::new(channel(global).await?);
    if !args.watch {
        let status = client
            .get_role(pb::GetRoleRequest {})
            .await
            .map_err(|s| call_error(s, global))?
            .into_inner();
        print_role(global, &status);
        return Ok(exit::OK);
    }
    let mut changes = client
        .watch_role(pb::WatchRoleRequest {})
        .await
        .map_err(|s| call_error(s, global))?
        .into_inner();
    while let Some(status) = changes.next().await {
        print_role(global, &status.map_err(|s| call_error(s, global))?);
    }
    Ok(exit::OK)
}
