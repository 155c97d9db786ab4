//! Servers and roles: the registry of live servers, and which one is the scheduling publisher.
//!
//! Every sidecar registers its server in Redis (`load_balancing/servers.lua`, keys under the hash tag
//! `{<namespace>:servers}`) every `server_refresh_ms`; a server whose heartbeat is older than
//! `server_ttl_ms` drops out.
//!
//! A server id belongs to one process at a time. Each sidecar process draws a random
//! incarnation token; the registration and the leader lease carry it, so one process's
//! `leave` cannot remove another's registration or lease. A sidecar whose server_id is
//! registered by another live process (a copy-pasted `server_id`, two pods on one host name)
//! does not register, does not touch the lease, and refuses to serve: not ready
//! ([`Servers::is_registered`] false), an error log line, `coherence_server_id_conflict` 1,
//! role `UNKNOWN`. It takes the id over once the other process has left or its heartbeat is
//! older than `server_ttl_ms` — so a sidecar restarted after a crash waits that long. The role is either pinned by configuration (static mode, like
//! Umbraco's `StaticServerAccessor`) or elected: the same call renews a leader lease (SET NX PX,
//! extended only by its holder). The holder is `SCHEDULING_PUBLISHER` (`SINGLE` when it is the
//! only live server), the others `SUBSCRIBER`.
//!
//! Never a role the sidecar cannot prove: the lease is measured on our own monotonic clock from
//! an instant taken *before* the acquiring or renewing call was sent, minus a 1 % allowance for
//! clock-rate drift, so this sidecar stops claiming leadership before the lease can have
//! expired in Redis (which starts its own count later, when it runs the call). Without a
//! verified Redis connection, with a lease that could not be renewed in time, or with no
//! successful heartbeat for `server_ttl_ms`, the role is `UNKNOWN`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::invalid_setting::InvalidSetting;
use crate::load_balancing::ServiceHandle;
use crate::redis::link::LinkError;
use crate::redis::scripts::SERVERS;

/// Umbraco's server roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Single,
    SchedulingPublisher,
    Subscriber,
    Unknown,
}

impl Role {
    /// The metric label and the word stored in the registry.
    pub fn label(self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::SchedulingPublisher => "scheduling_publisher",
            Role::Subscriber => "subscriber",
            Role::Unknown => "unknown",
        }
    }

    fn from_label(label: &str) -> Role {
        match label {
            "single" => Role::Single,
            "scheduling_publisher" => Role::SchedulingPublisher,
            "subscriber" => Role::Subscriber,
            _ => Role::Unknown,
        }
    }

    const ALL: [Role; 4] = [
        Role::Single,
        Role::SchedulingPublisher,
        Role::Subscriber,
        Role::Unknown,
    ];
}

/// How the role is chosen (setting `role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleMode {
    Static(Role),
    Elected,
}

impl RoleMode {
    /// The `role` setting that means this mode (the inverse of [`RoleMode::parse`]).
    pub fn setting(self) -> &'static str {
        match self {
            RoleMode::Elected => "elected",
            RoleMode::Static(Role::Single) => "single",
            RoleMode::Static(Role::SchedulingPublisher) => "scheduling-publisher",
            RoleMode::Static(Role::Subscriber) => "subscriber",
            RoleMode::Static(Role::Unknown) => "unknown",
        }
    }

    /// Parses the `role` setting.
    pub fn parse(setting: &str) -> Result<RoleMode, String> {
        match setting {
            "elected" => Ok(RoleMode::Elected),
            "single" => Ok(RoleMode::Static(Role::Single)),
            "scheduling-publisher" => Ok(RoleMode::Static(Role::SchedulingPublisher)),
            "subscriber" => Ok(RoleMode::Static(Role::Subscriber)),
            other => Err(format!(
                "{other:?} is not one of elected, single, scheduling-publisher, subscriber"
            )),
        }
    }
}

/// The settings of the server registry and the role, checked once at start.
#[derive(Debug, Clone)]
pub struct ServersConfig {
    pub mode: RoleMode,
    /// The leader lease (elected role).
    pub lease: Duration,
    /// How often the server registers its heartbeat and renews the lease.
    pub refresh: Duration,
    /// A server whose last heartbeat is older drops out of the list.
    pub ttl: Duration,
}

impl ServersConfig {
    /// Parses `role` and checks the timings against each other; the error names the setting.
    pub fn new(
        role: &str,
        lease_ms: u64,
        server_refresh_ms: u64,
        server_ttl_ms: u64,
    ) -> Result<ServersConfig, InvalidSetting> {
        let mode = RoleMode::parse(role).map_err(|m| InvalidSetting::new("role", m))?;
        if lease_ms < 10 {
            return Err(InvalidSetting::new("lease_ms", "must be at least 10"));
        }
        if server_refresh_ms == 0 || server_refresh_ms.saturating_mul(3) > lease_ms {
            return Err(InvalidSetting::new(
                "server_refresh_ms",
                format!(
                    "must be greater than 0 and at most a third of lease_ms ({lease_ms}), so that a late renewal does not lose the lease"
                ),
            ));
        }
        if server_ttl_ms <= server_refresh_ms.saturating_mul(2) {
            return Err(InvalidSetting::new(
                "server_ttl_ms",
                format!(
                    "must be more than twice server_refresh_ms ({server_refresh_ms}), or live servers would drop out between heartbeats"
                ),
            ));
        }
        Ok(ServersConfig {
            mode,
            lease: Duration::from_millis(lease_ms),
            refresh: Duration::from_millis(server_refresh_ms),
            ttl: Duration::from_millis(server_ttl_ms),
        })
    }
}

/// Milliseconds, as the registry script takes them.
fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// This server's role and what it is based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleStatus {
    pub role: Role,
    pub mode: RoleMode,
    pub leader_id: String,
    pub live_servers: u32,
    pub reason: String,
}

/// One live server as registered in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    pub server_id: String,
    pub address: String,
    pub version: String,
    pub started_at_unix_ms: u64,
    pub last_heartbeat_unix_ms: u64,
    pub role: Role,
}

/// What the last successful heartbeat established.
#[derive(Debug, Clone)]
struct Observation {
    /// When the heartbeat call was sent (our monotonic clock).
    sent_at: Instant,
    /// While we hold the leader lease, the instant our claim on it ends.
    leading_until: Option<Instant>,
    leader_id: String,
    live_servers: u32,
}

/// The registry and role of one sidecar.
pub struct Servers {
    handle: ServiceHandle,
    config: ServersConfig,
    incarnation: String,
    address: String,
    observed: Mutex<Option<Observation>>,
    /// Another live process has registered our server_id (the last heartbeat said so).
    conflict: AtomicBool,
    /// Our server_id is registered as ours (the last heartbeat found no other process with it).
    registered: AtomicBool,
    changed: Notify,
    status_tx: watch::Sender<RoleStatus>,
}

impl Servers {
    /// The registry of the namespace `handle` works in, with this server at `address`.
    pub fn new(handle: ServiceHandle, config: ServersConfig, address: String) -> Servers {
        let initial = RoleStatus {
            role: Role::Unknown,
            mode: config.mode,
            leader_id: String::new(),
            live_servers: 0,
            reason: "not registered yet".into(),
        };
        let (status_tx, _) = watch::channel(initial);
        Servers {
            handle,
            config,
            incarnation: crate::token::random_token(),
            address,
            observed: Mutex::new(None),
            conflict: AtomicBool::new(false),
            registered: AtomicBool::new(false),
            changed: Notify::new(),
            status_tx,
        }
    }

    pub fn server_id(&self) -> &str {
        &self.handle.server_id
    }

    /// Whether this sidecar's server_id is registered as its own: no other live process has
    /// it. Until then the sidecar is not ready.
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::SeqCst)
    }

    fn keys(&self, server_id: &str) -> [String; 3] {
        let prefix = self.info_prefix();
        [
            format!("coh:{{{}:servers}}:live", self.handle.namespace),
            format!("{prefix}{server_id}"),
            format!("coh:{{{}:servers}}:leader", self.handle.namespace),
        ]
    }

    fn info_prefix(&self) -> String {
        format!("coh:{{{}:servers}}:s:", self.handle.namespace)
    }

    fn lease(&self) -> Duration {
        self.config.lease
    }

    fn observation(&self) -> Option<Observation> {
        match self.observed.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_observation(&self, value: Observation) {
        match self.observed.lock() {
            Ok(mut guard) => *guard = Some(value),
            Err(poisoned) => *poisoned.into_inner() = Some(value),
        }
        self.changed.notify_one();
    }

    /// This server's role now, computed at the instant of the call.
    pub fn status(&self) -> RoleStatus {
        self.status_at(Instant::now())
    }

    fn status_at(&self, now: Instant) -> RoleStatus {
        let observed = self.observation();
        let (leader_id, live_servers) = observed.as_ref().map_or((String::new(), 0), |o| {
            (o.leader_id.clone(), o.live_servers)
        });
        let status = |role: Role, reason: String| RoleStatus {
            role,
            mode: self.config.mode,
            leader_id: leader_id.clone(),
            live_servers,
            reason,
        };
        if self.conflict.load(Ordering::SeqCst) {
            return status(
                Role::Unknown,
                format!(
                    "server_id {} is registered by another live process; refusing to serve",
                    self.server_id()
                ),
            );
        }
        if let RoleMode::Static(role) = self.config.mode {
            return status(
                role,
                format!(
                    "pinned by configuration (role = {})",
                    self.config.mode.setting()
                ),
            );
        }
        if !self.handle.link.is_connected() {
            return status(Role::Unknown, "redis is unreachable".into());
        }
        let Some(observed) = observed else {
            return status(Role::Unknown, "not registered in redis yet".into());
        };
        match observed.leading_until {
            Some(until) if now < until => {
                if observed.live_servers <= 1 {
                    status(
                        Role::Single,
                        "holds the leader lease and is the only live server".into(),
                    )
                } else {
                    status(Role::SchedulingPublisher, "holds the leader lease".into())
                }
            }
            Some(_) => status(
                Role::Unknown,
                "the leader lease could not be renewed before it may have expired".into(),
            ),
            None if now.duration_since(observed.sent_at) > self.ttl() => status(
                Role::Unknown,
                "no heartbeat reached redis within server_ttl_ms".into(),
            ),
            None if observed.leader_id.is_empty() => status(
                Role::Subscriber,
                "no server holds the leader lease right now".into(),
            ),
            None => status(
                Role::Subscriber,
                format!("{} holds the leader lease", observed.leader_id),
            ),
        }
    }

    fn ttl(&self) -> Duration {
        self.config.ttl
    }

    /// The current status, then every change.
    pub fn watch(&self) -> watch::Receiver<RoleStatus> {
        self.status_tx.subscribe()
    }

    /// Recomputes the status and tells watchers and metrics when it changed.
    fn publish(&self) {
        let now = self.status();
        let metrics = &self.handle.metrics.load_balancing;
        metrics.servers_live.set(i64::from(now.live_servers));
        // Decided under the watch's lock, so two publishers never count one change twice.
        let mut role_changed = false;
        self.status_tx.send_if_modified(|current| {
            if *current == now {
                false
            } else {
                role_changed = current.role != now.role;
                *current = now.clone();
                true
            }
        });
        if role_changed {
            metrics.role_changes.inc();
            for role in Role::ALL {
                metrics
                    .role
                    .get_or_create(&[("role", role.label())])
                    .set(i64::from(role == now.role));
            }
            tracing::info!(role = now.role.label(), reason = %now.reason, "server role changed");
        }
    }

    /// The live servers of the namespace and the current leader.
    pub async fn list(&self) -> Result<(Vec<ServerEntry>, String), LinkError> {
        let [live, info, leader] = self.keys("");
        let mut call = SERVERS.call();
        call.key(live)
            .key(info)
            .key(leader)
            .arg("list")
            .arg(ms(self.config.ttl))
            .arg(self.info_prefix());
        let reply: Vec<String> = self
            .handle
            .link
            .run_script("servers_list", self.handle.request_timeout, call)
            .await?;
        let mut fields = reply.into_iter();
        let leader = fields.next().unwrap_or_default();
        let rest: Vec<String> = fields.collect();
        let servers = rest
            .chunks_exact(6)
            .map(|f| ServerEntry {
                server_id: f[0].clone(),
                address: f[1].clone(),
                version: f[2].clone(),
                started_at_unix_ms: f[3].parse().unwrap_or(0),
                last_heartbeat_unix_ms: f[4].parse().unwrap_or(0),
                role: Role::from_label(&f[5]),
            })
            .collect();
        Ok((servers, leader))
    }

    /// One heartbeat: registers this server and renews (or tries to take) the leader lease.
    async fn tick(&self) -> Result<(), LinkError> {
        let [live, info, leader] = self.keys(self.server_id());
        let mut call = SERVERS.call();
        call.key(live)
            .key(info)
            .key(leader)
            .arg("tick")
            .arg(self.server_id())
            .arg(&self.address)
            .arg(env!("CARGO_PKG_VERSION"))
            .arg(self.status().role.label())
            .arg(&self.incarnation)
            .arg(ms(self.config.ttl))
            .arg(ms(self.config.lease))
            .arg(u8::from(self.config.mode == RoleMode::Elected));
        // A reply later than the lease is useless: the claim it would make has already ended.
        let timeout = self.handle.request_timeout.min(self.lease() / 2);
        // Measured before the call is sent: the lease in Redis starts later than this.
        let sent_at = Instant::now();
        let (leading, leader_id, live_servers, conflict): (u8, String, u32, u8) = self
            .handle
            .link
            .run_script("servers_tick", timeout, call)
            .await?;
        self.set_conflict(conflict == 1);
        let lease = self.lease();
        let claim = lease - lease / 100;
        self.set_observation(Observation {
            sent_at,
            leading_until: (leading == 1).then(|| sent_at + claim),
            leader_id,
            live_servers,
        });
        Ok(())
    }

    /// Records whether another process has our server_id; readiness, metric and a log line
    /// follow it.
    fn set_conflict(&self, conflict: bool) {
        let was = self.conflict.swap(conflict, Ordering::SeqCst);
        self.registered.store(!conflict, Ordering::SeqCst);
        self.handle
            .metrics
            .load_balancing
            .server_id_conflict
            .set(i64::from(conflict));
        if conflict && !was {
            tracing::error!(
                server_id = %self.server_id(),
                namespace = %self.handle.namespace,
                "another live process has registered this server_id in the namespace; refusing to serve (not ready) until it leaves or its heartbeat is older than server_ttl_ms: give every sidecar its own server_id"
            );
        } else if was && !conflict {
            tracing::info!(server_id = %self.server_id(), "server_id registered as ours; serving");
        }
    }

    /// Leaves the registry and gives the lease up (graceful shutdown).
    async fn leave(&self) {
        let [live, info, leader] = self.keys(self.server_id());
        let mut call = SERVERS.call();
        call.key(live)
            .key(info)
            .key(leader)
            .arg("leave")
            .arg(self.server_id())
            .arg(&self.incarnation);
        let left: Result<u8, _> = self
            .handle
            .link
            .run_script("servers_leave", Duration::from_millis(500), call)
            .await;
        if let Err(err) = left {
            tracing::debug!(error = %err, "could not leave the server registry; it expires");
        }
    }

    /// Heartbeats until `shutdown`, then leaves the registry.
    pub async fn run_heartbeats(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let refresh = self.config.refresh;
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let unregistered =
                !self.registered.load(Ordering::SeqCst) && !self.conflict.load(Ordering::SeqCst);
            if unregistered && !self.handle.link.is_connected() {
                // Readiness waits for the first registration: make it as soon as Redis is
                // reachable rather than at the next beat.
                tokio::select! {
                    _ = self.handle.link.wait_connected(refresh) => {}
                    _ = shutdown.changed() => {}
                }
            } else {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => {}
                }
            }
            if *shutdown.borrow() {
                break;
            }
            if let Err(err) = self.tick().await {
                tracing::debug!(error = %err, "server heartbeat failed");
            }
            self.publish();
        }
        self.leave().await;
    }

    /// Keeps the published status (WatchRole, metrics) current as time passes: a lease or a
    /// heartbeat running out changes the role without any call completing.
    pub async fn run_status(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.publish();
            let now = Instant::now();
            let mut wake = now + Duration::from_millis(100);
            if let Some(observed) = self.observation() {
                for deadline in [observed.leading_until, Some(observed.sent_at + self.ttl())]
                    .into_iter()
                    .flatten()
                {
                    if deadline > now && deadline < wake {
                        wake = deadline;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = self.changed.notified() => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_setting_parses_and_names_the_setting() {
        assert_eq!(RoleMode::parse("elected"), Ok(RoleMode::Elected));
        assert_eq!(
            RoleMode::parse("scheduling-publisher"),
            Ok(RoleMode::Static(Role::SchedulingPublisher))
        );
        assert!(RoleMode::parse("leader").is_err());
        // The defaults: elected, lease 10 s, refresh 1 s, ttl 5 s.
        let config = |role: &str, lease_ms, refresh_ms, ttl_ms| {
            ServersConfig::new(role, lease_ms, refresh_ms, ttl_ms)
        };
        assert_eq!(
            config("boss", 10_000, 1_000, 5_000).unwrap_err().setting,
            "role"
        );
        assert_eq!(
            config("elected", 10_000, 10_000, 5_000)
                .unwrap_err()
                .setting,
            "server_refresh_ms"
        );
        assert_eq!(
            config("elected", 10_000, 1_000, 1_000).unwrap_err().setting,
            "server_ttl_ms"
        );
        assert!(config("elected", 10_000, 1_000, 5_000).is_ok());
        for setting in ["elected", "single", "scheduling-publisher", "subscriber"] {
            assert_eq!(RoleMode::parse(setting).map(RoleMode::setting), Ok(setting));
        }
    }
}
