//! Which Redis deployment the sidecar uses, and how to reach its current master(s).
//!
//! - `redis://`, `rediss://`, `unix://`: one server.
//! - `redis+sentinel://[user:pass@]h1:p1,h2:p2/<master-name>` (`rediss+sentinel://`: TLS to
//!   the sentinels and the data nodes, both checked against `redis_ca_file`): the sentinels are
//!   asked for the master on *every* (re)connect, and the answer is checked with `ROLE` — a
//!   client that looks the master up once keeps talking to a demoted master after a failover.
//!   The URL's credentials are the data nodes'; the sentinels have their own
//!   (`sentinel_username`, `sentinel_password`).
//! - `redis+cluster://[user:pass@]h1:p1,h2:p2` (`rediss+cluster://`): Redis Cluster. Commands go
//!   through redis-rs's cluster client (slot routing, MOVED/ASK, topology refresh). Each
//!   shard's invalidations travel on a sharded channel (SPUBLISH); the subscription opens its
//!   own connection to each master that owns some of our channels and SSUBSCRIBEs there, on a
//!   connection that sends no other command. Any sign of a topology change (a connection lost,
//!   an SUNSUBSCRIBE from the server after a slot moved) ends the whole subscription session,
//!   which is rebuilt from a fresh `CLUSTER KEYSLOT`/`CLUSTER SLOTS` view and repaired.
//!
//! The URL's credentials are cut off before it is parsed ([`crate::redis::url`]): every URL
//! this module builds, connects to or quotes in an error is credential-free.
//!
//! Whatever the deployment, `versions/shard.lua` notices when a shard is served by a different Redis
//! process than before (failover to a replica that missed writes) and retires every earlier
//! version, so a failover never makes a superseded version current again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, ProtocolVersion, RedisError, RedisFuture,
    RedisResult, Value,
};

use crate::redis::access::RedisAccess;
use crate::redis::url::{split_credentials, Credentials};

/// The deployment named by `redis_url`, with the credentials to reach its nodes.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    kind: TargetKind,
    /// The credentials the URL carried (the settings' win over them).
    url_credentials: Credentials,
    access: RedisAccess,
}

#[derive(Debug, Clone)]
enum TargetKind {
    Standalone {
        url: String,
    },
    Sentinel {
        sentinels: Vec<String>,
        master_name: String,
        node: NodeTemplate,
    },
    Cluster {
        startup_nodes: Vec<String>,
    },
}

/// How to build the URL of a node found at run time: `redis` or `rediss`.
#[derive(Debug, Clone, Copy)]
struct NodeTemplate {
    scheme: &'static str,
}

impl NodeTemplate {
    fn url(&self, host: &str, port: u16) -> String {
        format!("{}://{}:{}", self.scheme, host, port)
    }
}

fn invalid(message: &'static str, detail: String) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, message, detail))
}

impl RedisTarget {
    /// Parses a `redis_url` of any supported form (credentials from the URL only; see
    /// [`RedisTarget::with_access`]).
    pub fn parse(url: &str) -> RedisResult<RedisTarget> {
        let (url, url_credentials) =
            split_credentials(url).map_err(|err| invalid("invalid redis_url", err.to_string()))?;
        let access = RedisAccess::default().with_url_credentials(url_credentials.clone());
        let kind = TargetKind::parse(&url, &access)?;
        Ok(RedisTarget {
            kind,
            url_credentials,
            access,
        })
    }

    /// Uses these credentials (completed by the URL's) and TLS roots for every connection.
    pub fn with_access(mut self, access: RedisAccess) -> RedisTarget {
        self.access = access.with_url_credentials(self.url_credentials.clone());
        self
    }

    /// A RESP3 client for one data node, with our credentials and TLS roots.
    pub fn client(&self, url: &str) -> RedisResult<redis::Client> {
        self.access.client(url)
    }

    /// Builds the clients the URL names (startup nodes, sentinels; data nodes found at run time
    /// excepted), so that a bad URL or TLS root is a configuration error at start rather than
    /// at connect time.
    pub fn check(&self) -> RedisResult<()> {
        match &self.kind {
            TargetKind::Standalone { url } => self.client(url).map(drop),
            TargetKind::Cluster { startup_nodes } => startup_nodes
                .iter()
                .try_for_each(|url| self.client(url).map(drop)),
            TargetKind::Sentinel { sentinels, .. } => sentinels
                .iter()
                .try_for_each(|url| self.access.sentinel_client(url).map(drop)),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, TargetKind::Cluster { .. })
    }

    pub fn is_sentinel(&self) -> bool {
        matches!(self.kind, TargetKind::Sentinel { .. })
    }

    /// Whether the data nodes (and sentinels) are reached over TLS (`rediss…` URLs).
    pub fn is_tls(&self) -> bool {
        match &self.kind {
            TargetKind::Standalone { url } => url.starts_with("rediss"),
            TargetKind::Sentinel { node, .. } => node.scheme == "rediss",
            TargetKind::Cluster { startup_nodes } => {
                startup_nodes.iter().any(|s| s.starts_with("rediss://"))
            }
        }
    }

    /// The credentials and TLS roots every connection uses.
    pub fn access(&self) -> &RedisAccess {
        &self.access
    }

    /// Opens a connection for ordinary commands (scripts, reads of the replay log).
    pub async fn connect_commands(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<CommandConnection> {
        match &self.kind {
            TargetKind::Standalone { url } => {
                let conn = self
                    .client(url)?
                    .get_multiplexed_async_connection_with_config(config)
                    .await?;
                CommandConnection::single(conn).await
            }
            TargetKind::Sentinel { .. } => {
                let url = self.current_master().await?;
                let mut conn = self
                    .client(&url)?
                    .get_multiplexed_async_connection_with_config(config)
                    .await?;
                let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
                let is_master = match role.first() {
                    Some(Value::BulkString(b)) => b == b"master",
                    Some(Value::SimpleString(s)) => s == "master",
                    _ => false,
                };
                if !is_master {
                    return Err(invalid(
                        "the sentinels named a server that is not a master",
                        url,
                    ));
                }
                CommandConnection::single(conn).await
            }
            TargetKind::Cluster { startup_nodes } => {
                let nodes = startup_nodes
                    .iter()
                    .map(|url| Ok(self.client(url)?.get_connection_info().clone()))
                    .collect::<RedisResult<Vec<_>>>()?;
                let mut builder = redis::cluster::ClusterClientBuilder::new(nodes);
                if startup_nodes.iter().any(|s| s.starts_with("rediss://")) {
                    // The startup nodes' connection infos carry our TLS roots, but the nodes the client
                    // discovers later are built from the builder's own: without this they are
                    // checked against the web PKI roots, not redis_ca_file.
                    builder = builder.certs(self.access.tls_certificates());
                }
                let client = builder
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(Duration::from_secs(1))
                    .response_timeout(Duration::from_secs(2))
                    .build()?;
                Ok(CommandConnection::Cluster(
                    client.get_async_connection().await?,
                ))
            }
        }
    }

    /// The current master's URL, as the first sentinel that answers names it.
    async fn current_master(&self) -> RedisResult<String> {
        let TargetKind::Sentinel {
            sentinels,
            master_name,
            node,
        } = &self.kind
        else {
            return Err(invalid("not a sentinel target", String::new()));
        };
        let mut last_error = invalid("no sentinel answered", String::new());
        for sentinel in sentinels {
            let answer = async {
                let client = self.access.sentinel_client(sentinel)?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_millis(500)))
                    .set_response_timeout(Some(Duration::from_millis(500)));
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master_name)
                    .query_async(&mut conn)
                    .await?;
                addr.ok_or_else(|| {
                    invalid("sentinel does not know the master", master_name.clone())
                })
            }
            .await;
            match answer {
                Ok((host, port)) => return Ok(node.url(&host, port)),
                Err(err) => last_error = err,
            }
        }
        Err(last_error)
    }

    /// Where to subscribe: each data node's URL with the channels it serves.
    pub async fn subscription_plan(
        &self,
        commands: &mut CommandConnection,
        channels: &[String],
    ) -> RedisResult<Vec<(String, Vec<String>)>> {
        match &self.kind {
            TargetKind::Standalone { url } => Ok(vec![(url.clone(), channels.to_vec())]),
            TargetKind::Sentinel { .. } => {
                Ok(vec![(self.current_master().await?, channels.to_vec())])
            }
            TargetKind::Cluster { startup_nodes } => {
                let scheme = if startup_nodes.iter().any(|s| s.starts_with("rediss://")) {
                    "rediss"
                } else {
                    "redis"
                };
                let owners = slot_owners(commands).await?;
                let mut plan: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for channel in channels {
                    let slot: u16 = redis::cmd("CLUSTER")
                        .arg("KEYSLOT")
                        .arg(channel)
                        .query_async(commands)
                        .await?;
                    let (host, port) = owners
                        .iter()
                        .find(|(start, end, _, _)| *start <= slot && slot <= *end)
                        .map(|(_, _, h, p)| (h.clone(), *p))
                        .ok_or_else(|| {
                            invalid("no master serves a channel's slot", channel.clone())
                        })?;
                    plan.entry(format!("{scheme}://{host}:{port}"))
                        .or_default()
                        .push(channel.clone());
                }
                Ok(plan.into_iter().collect())
            }
        }
    }
}

impl TargetKind {
    fn parse(url: &str, access: &RedisAccess) -> RedisResult<TargetKind> {
        let Some((scheme, rest)) = url.split_once("://") else {
            access.client(url)?;
            return Ok(TargetKind::Standalone {
                url: url.to_string(),
            });
        };
        let (data_scheme, kind) = match scheme {
            "redis+sentinel" => ("redis", "sentinel"),
            "rediss+sentinel" => ("rediss", "sentinel"),
            "redis+cluster" => ("redis", "cluster"),
            "rediss+cluster" => ("rediss", "cluster"),
            _ => {
                access.client(url)?;
                return Ok(TargetKind::Standalone {
                    url: url.to_string(),
                });
            }
        };
        // `url` carries no credentials (see RedisTarget::parse): any part may be quoted.
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut addrs = Vec::new();
        for host in hosts.split(',').filter(|h| !h.is_empty()) {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| invalid("host without port in redis_url", host.to_string()))?;
            let port: u16 = port
                .parse()
                .map_err(|_| invalid("bad port in redis_url", host.to_string()))?;
            if name.is_empty() {
                return Err(invalid(
                    "host without a name in redis_url",
                    host.to_string(),
                ));
            }
            addrs.push((name.to_string(), port));
        }
        if addrs.is_empty() {
            return Err(invalid("no host in redis_url", url.to_string()));
        }
        let node = NodeTemplate {
            scheme: data_scheme,
        };
        if kind == "sentinel" {
            let master_name = path.split('?').next().unwrap_or("").to_string();
            if master_name.is_empty() {
                return Err(invalid(
                    "redis+sentinel:// needs the master name as its path",
                    url.to_string(),
                ));
            }
            Ok(TargetKind::Sentinel {
                // The sentinels speak TLS when the data nodes do (rediss+sentinel://).
                sentinels: addrs.iter().map(|(h, p)| node.url(h, *p)).collect(),
                master_name,
                node,
            })
        } else {
            Ok(TargetKind::Cluster {
                startup_nodes: addrs.iter().map(|(h, p)| node.url(h, *p)).collect(),
            })
        }
    }
}

/// `(first slot, last slot, master host, master port)` from `CLUSTER SLOTS`.
async fn slot_owners(
    commands: &mut CommandConnection,
) -> RedisResult<Vec<(u16, u16, String, u16)>> {
    let slots: Vec<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(commands)
        .await?;
    let mut owners = Vec::new();
    for range in slots {
        let Value::Array(items) = range else { continue };
        let mut items = items.into_iter();
        let (Some(start), Some(end), Some(Value::Array(master))) =
            (items.next(), items.next(), items.next())
        else {
            continue;
        };
        let mut master = master.into_iter();
        let (Some(host), Some(port)) = (master.next(), master.next()) else {
            continue;
        };
        owners.push((
            redis::from_redis_value(start)?,
            redis::from_redis_value(end)?,
            redis::from_redis_value(host)?,
            redis::from_redis_value(port)?,
        ));
    }
    Ok(owners)
}

/// The command connection: one multiplexed connection, or redis-rs's cluster connection.
#[derive(Clone)]
pub enum CommandConnection {
    /// One connection to one Redis process, with that process's run id, read when the
    /// connection was opened (a connection cannot outlive its process; redis-rs's multiplexed
    /// connection never reconnects by itself).
    Single(MultiplexedConnection, Arc<str>),
    Cluster(ClusterConnection),
}

impl CommandConnection {
    async fn single(mut conn: MultiplexedConnection) -> RedisResult<CommandConnection> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        let run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                RedisError::from((
                    ErrorKind::UnexpectedReturnType,
                    "INFO server shows no run_id",
                ))
            })?;
        Ok(CommandConnection::Single(conn, Arc::from(run_id)))
    }

    /// The run id of the Redis process every command on this connection reaches; `None` for
    /// a cluster connection, which reaches several.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            CommandConnection::Single(_, run_id) => Some(run_id.as_ref()),
            CommandConnection::Cluster(_) => None,
        }
    }
}

impl ConnectionLike for CommandConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            CommandConnection::Single(c, _) => c.req_packed_command(cmd),
            CommandConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            CommandConnection::Single(c, _) => c.req_packed_commands(pipeline, offset, count),
            CommandConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            CommandConnection::Single(c, _) => c.get_db(),
            CommandConnection::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let t = RedisTarget::parse("redis://127.0.0.1:6379").unwrap();
        assert!(matches!(t.kind, TargetKind::Standalone { .. }));
        let t = RedisTarget::parse("redis+sentinel://u:p@127.0.0.1:26379,127.0.0.1:26380/mymaster")
            .unwrap();
        match t.kind {
            TargetKind::Sentinel {
                sentinels,
                master_name,
                node,
            } => {
                assert_eq!(sentinels.len(), 2);
                assert_eq!(master_name, "mymaster");
                assert_eq!(node.url("10.0.0.1", 6379), "redis://10.0.0.1:6379");
            }
            other => panic!("{other:?}"),
        }
        let t = RedisTarget::parse("rediss+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert!(t.is_cluster());
        match t.kind {
            TargetKind::Cluster { startup_nodes } => {
                assert_eq!(startup_nodes[1], "rediss://127.0.0.1:7001")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            RedisTarget::parse("redis+sentinel://127.0.0.1:26379").is_err(),
            "master name required"
        );
        assert!(RedisTarget::parse("redis+cluster://host-without-port").is_err());
        assert!(RedisTarget::parse("http://x").is_err());
    }
}
