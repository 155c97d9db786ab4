//! Configuration: flags, `COHERENCE_*` environment variables and an optional TOML file.
//!
//! Every setting is declared once, in the `settings!` table below. The table generates the
//! command-line flags, the environment variable names, the TOML keys, the effective
//! [`Config`] and the reference table printed by `--print-config-reference` (which the README's
//! configuration section is checked against). Precedence: flag or environment variable, then the
//! TOML file, then the default. A bad value stops the sidecar at start with a message naming the
//! setting; the binary maps [`ConfigError`] to exit code 64 (`EX_USAGE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::grpc::request_budget::{MIN_REQUEST_BUFFER_BYTES, SMALL_REQUEST_BYTES};
use crate::grpc::transport::TransportLimits;
use crate::invalid_setting::InvalidSetting;
use crate::load_balancing::servers::ServersConfig;
pub use crate::process::listen::ListenAddr;
use crate::redis::access::AccessSettings;
use crate::redis::config::{RedisConfig, RedisSettings};
use crate::redis::scripts::ScriptMode;
use crate::redis::url::redact_url;
use crate::secrets::Secret;
use crate::versions::leases::{LeaseSettings, MAX_READ_LEASE_MS};
use crate::versions::state::VersionsSettings;

/// Exit code for a configuration the sidecar refuses (BSD `EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// Why a configuration was refused. The message always names the offending setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Flags(String),
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
}

/// One row of the configuration reference.
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    pub flag: &'static str,
    pub env: &'static str,
    pub toml: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

macro_rules! settings {
    ($( $(#[$attr:meta])* $name:ident : $ty:ty = $default:expr, $default_doc:literal, $env:literal, $meaning:literal; )*) => {
        /// Command-line flags and environment variables (each unset unless given).
        #[derive(Debug, Parser)]
        #[command(name = "coherence-sidecar", version, about = "coherence sidecar: cache version counters in Redis, served over localhost gRPC", after_help = "Also: coherence-sidecar functions load [Redis settings] installs the Redis Functions library that redis_scripts = functions calls (run it with an administrator's credential); coherence-sidecar functions print prints it. See docs/security.md.")]
        pub struct Flags {
            /// Optional TOML configuration file.
            #[arg(long, env = "COHERENCE_CONFIG")]
            pub config: Option<PathBuf>,
            /// Print the effective configuration (secrets redacted) and exit.
            #[arg(long)]
            pub print_config: bool,
            /// Print the configuration reference table (Markdown) and exit.
            #[arg(long)]
            pub print_config_reference: bool,
            $(
                #[doc = $meaning]
                // One value each (an optional setting would otherwise take zero or one).
                #[arg(long, env = $env, num_args = 1)]
                pub $name: Option<$ty>,
            )*
        }

        /// The same settings as read from the TOML file.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileSettings {
            $( $name: Option<$ty>, )*
        }

        /// The effective configuration, before validation.
        #[derive(Clone, serde::Serialize)]
        pub struct Settings {
            $( $(#[$attr])* pub $name: $ty, )*
        }

        impl Settings {
            fn merge(flags: &Flags, file: FileSettings) -> Self {
                Settings {
                    $( $name: flags.$name.clone().or(file.$name).unwrap_or_else(|| $default), )*
                }
            }
        }

        /// Every setting: flag, environment variable, TOML key, default and meaning.
        pub const SETTINGS: &[SettingDoc] = &[
            $( SettingDoc {
                flag: concat!("--", stringify!($name)),
                env: $env,
                toml: stringify!($name),
                default: $default_doc,
                meaning: $meaning,
            }, )*
        ];
    };
}

settings! {
    redis_url: String = "redis://127.0.0.1:6379".to_string(), "redis://127.0.0.1:6379", "COHERENCE_REDIS_URL",
        "Redis to keep versions in: redis://, rediss://, unix:///path, redis+sentinel://h:p,h:p/master or redis+cluster://h:p,h:p (rediss+… for TLS; docs/redis-deployments.md). A password in the URL is never printed.";
    listen: ListenAddr = ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 50051))), "127.0.0.1:50051", "COHERENCE_LISTEN",
        "gRPC listen address: host:port (loopback unless you mean otherwise) or unix:///path, a Unix socket (mode 0660) for containers that share a volume.";
    auth_token_file: Option<PathBuf> = None, "(none)", "COHERENCE_AUTH_TOKEN_FILE",
        "File holding a bearer token (at least 16 visible ASCII characters) every gRPC call must carry as the header authorization: Bearer TOKEN (health checks excepted); for a listener others can reach. Read at start, trailing newline ignored.";
    admin_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9464)), "127.0.0.1:9464", "COHERENCE_ADMIN_LISTEN",
        "HTTP listen address for /metrics, /livez and /readyz.";
    namespace: String = "default".to_string(), "default", "COHERENCE_NAMESPACE",
        "This application's share of Redis: every key and channel lives under it.";
    server_id: String = default_server_id(), "the host name", "COHERENCE_SERVER_ID",
        "Name of this server in logs, heartbeats and server lists.";
    shards: u32 = 16, "16", "COHERENCE_SHARDS",
        "Logical shards per namespace (must be equal on every sidecar of a namespace).";
    max_key_bytes: usize = 1024, "1024", "COHERENCE_MAX_KEY_BYTES",
        "Longest key accepted, in bytes.";
    max_batch_keys: usize = 10_000, "10000", "COHERENCE_MAX_BATCH_KEYS",
        "Most keys (or entries) accepted in one call.";
    max_staleness_ms: u64 = 500, "500", "COHERENCE_MAX_STALENESS_MS",
        "Oldest heartbeat fence the mirror may answer on; past it checks read Redis.";
    heartbeat_interval_ms: u64 = 100, "100", "COHERENCE_HEARTBEAT_INTERVAL_MS",
        "How often the sidecar sends a heartbeat fence through Redis (and to Watch streams).";
    check_deadline_ms: u64 = 250, "250", "COHERENCE_CHECK_DEADLINE_MS",
        "Longest a Check waits for Redis before answering current = false.";
    request_timeout_ms: u64 = 2_000, "2000", "COHERENCE_REQUEST_TIMEOUT_MS",
        "Longest Get and Bump wait for Redis before answering UNAVAILABLE.";
    mirror_max_keys: usize = 500_000, "500000", "COHERENCE_MIRROR_MAX_KEYS",
        "Most versions the in-memory mirror keeps (about 140 bytes each); past it an arbitrary eighth of a shard is dropped and read from Redis when next asked.";
    mirror_max_bytes: usize = 64 << 20, "67108864 (64 MiB)", "COHERENCE_MIRROR_MAX_BYTES",
        "Most bytes the mirror's versions may take (each counted as its key's length plus 112 bytes); past it an arbitrary eighth of a shard is dropped, as for mirror_max_keys.";
    replay_log_len: u64 = 10_000, "10000", "COHERENCE_REPLAY_LOG_LEN",
        "Invalidations kept per shard for gap repair (approximate, capped stream).";
    version_ttl_ms: u64 = 86_400_000, "86400000 (1 day)", "COHERENCE_VERSION_TTL_MS",
        "A key's version leaves Redis this long after its last Get or Bump that reached Redis (0: never). A key read again afterwards gets a version never issued before. See docs/design.md.";
    reconcile_interval_ms: u64 = 30_000, "30000", "COHERENCE_RECONCILE_INTERVAL_MS",
        "How often every mirrored version is compared with Redis.";
    read_lease_ms: u64 = 0, "0 (off)", "COHERENCE_READ_LEASE_MS",
        "Read leases: while this sidecar holds one (renewed every third of it), strong checks and gets are answered from its mirror, and every bump waits until each holder acknowledged it or its lease ran out (at most this long). 0 = off; 100 to 10000. Use the same value on every sidecar of a namespace; see docs/design.md, Read leases.";
    read_lease_margin_ms: u64 = 20, "20", "COHERENCE_READ_LEASE_MARGIN_MS",
        "Clock-drift margin of read leases: holders stop this much earlier, bumpers wait this much longer (beyond a 0.1 % rate error already allowed for). At most a quarter of read_lease_ms.";
    max_mirror_leases: usize = 32, "32", "COHERENCE_MAX_MIRROR_LEASES",
        "With read leases on: most client mirrors that may hold a lease from this sidecar and answer strong checks in their own memory (a Watch stream opened with a lease_id beyond it is served without). Bumps then also wait for these mirrors' acknowledgements or their leases' end. 0 = no mirror leases. See docs/client-protocol.md, rules 16-19.";
    redis_scripts: String = "eval".to_string(), "eval", "COHERENCE_REDIS_SCRIPTS",
        "How the sidecar runs its Lua scripts: eval (EVALSHA, and SCRIPT LOAD when Redis lacks one) or functions (FCALL of the versioned Redis Functions library that coherence-sidecar functions load installs; Redis 7+; its ACL user then needs no EVAL, EVALSHA, SCRIPT LOAD or FUNCTION LOAD). See docs/security.md.";
    allow_evicting_policy: bool = false, "false", "COHERENCE_ALLOW_EVICTING_POLICY",
        "Serve even when Redis's maxmemory-policy can evict keys that have no time to live (allkeys-*): shard state and job run records (see docs/design.md).";
    drain_timeout_ms: u64 = 5_000, "5000", "COHERENCE_DRAIN_TIMEOUT_MS",
        "Longest graceful shutdown waits for in-flight calls after SIGTERM.";
    redis_username: String = String::new(), "(none)", "COHERENCE_REDIS_USERNAME",
        "Redis ACL user (overrides one in redis_url); see docs/security.md for the rule that confines it to the namespace.";
    redis_password: String = String::new(), "(none)", "COHERENCE_REDIS_PASSWORD",
        "Redis password (overrides one in redis_url). Prefer the environment or redis_password_file to a flag; never logged, shown as *** by --print-config.";
    redis_password_file: Option<PathBuf> = None, "(none)", "COHERENCE_REDIS_PASSWORD_FILE",
        "File holding the Redis password (a mounted Kubernetes Secret); read at start, trailing newline ignored.";
    redis_ca_file: Option<PathBuf> = None, "(web PKI roots)", "COHERENCE_REDIS_CA_FILE",
        "PEM CA certificate(s) that sign the Redis server certificates (and the Sentinels' for rediss+sentinel://), for rediss URLs; replaces the built-in web PKI roots.";
    sentinel_username: String = String::new(), "(none)", "COHERENCE_SENTINEL_USERNAME",
        "Sentinel ACL user, for redis+sentinel:// URLs (the URL's credentials are the data nodes').";
    sentinel_password: String = String::new(), "(none)", "COHERENCE_SENTINEL_PASSWORD",
        "Sentinel password (Sentinel's requirepass or ACL user), for redis+sentinel:// URLs; never logged, shown as *** by --print-config.";
    sentinel_password_file: Option<PathBuf> = None, "(none)", "COHERENCE_SENTINEL_PASSWORD_FILE",
        "File holding the Sentinel password; read at start, trailing newline ignored.";
    role: String = "elected".to_string(), "elected", "COHERENCE_ROLE",
        "Server role: elected (a leader lease in Redis picks the scheduling publisher) or pinned: single, scheduling-publisher, subscriber. See docs/servers.md.";
    lease_ms: u64 = 10_000, "10000", "COHERENCE_LEASE_MS",
        "Leader lease (elected role): a dead scheduling publisher is replaced within about this long.";
    server_refresh_ms: u64 = 1_000, "1000", "COHERENCE_SERVER_REFRESH_MS",
        "How often the server registers its heartbeat and renews (or tries to take) the leader lease; at most a third of lease_ms.";
    server_ttl_ms: u64 = 5_000, "5000", "COHERENCE_SERVER_TTL_MS",
        "A server whose last heartbeat is older than this drops out of the server list (more than twice server_refresh_ms).";
    advertise_address: String = String::new(), "(the gRPC listen address)", "COHERENCE_ADVERTISE_ADDRESS",
        "Address shown for this server in server lists.";
    max_payload_bytes: usize = 65_536, "65536", "COHERENCE_MAX_PAYLOAD_BYTES",
        "Largest notification payload accepted by Publish, in bytes.";
    max_watch_prefixes: usize = 1_000, "1000", "COHERENCE_MAX_WATCH_PREFIXES",
        "Most key prefixes one Watch (or topics one Subscribe) may name; INVALID_ARGUMENT past it.";
    max_watch_prefix_bytes: usize = 65_536, "65536", "COHERENCE_MAX_WATCH_PREFIX_BYTES",
        "Most bytes the prefixes of one Watch (or topics of one Subscribe) may add up to; INVALID_ARGUMENT past it.";
    watch_buffer_bytes: usize = 8 << 20, "8388608 (8 MiB)", "COHERENCE_WATCH_BUFFER_BYTES",
        "Bytes of recent invalidations and heartbeats kept for Watch streams, shared by all of them; a stream further behind (its app does not read) gets a Resync and skips ahead. See docs/operations.md, memory budget.";
    max_watch_streams: usize = 32, "32", "COHERENCE_MAX_WATCH_STREAMS",
        "Most Watch streams open at once; one more is refused with RESOURCE_EXHAUSTED. Each may hold up to 576 KiB (HTTP/2 send buffers, its prefixes) while its app does not read.";
    notification_buffer_bytes: usize = 8 << 20, "8388608 (8 MiB)", "COHERENCE_NOTIFICATION_BUFFER_BYTES",
        "Bytes of recent notifications kept for Subscribe streams, shared by all of them; a stream further behind gets MissedMessages and skips ahead.";
    max_subscribe_streams: usize = 32, "32", "COHERENCE_MAX_SUBSCRIBE_STREAMS",
        "Most Subscribe streams open at once; one more is refused with RESOURCE_EXHAUSTED. Each may hold up to 576 KiB, as a Watch stream.";
    max_role_streams: usize = 16, "16", "COHERENCE_MAX_ROLE_STREAMS",
        "Most Servers.WatchRole streams open at once; one more is refused with RESOURCE_EXHAUSTED. Each may hold up to 576 KiB, as a Watch stream, while its app does not read (in practice a few KiB: it carries only role changes).";
    max_health_watch_streams: usize = 16, "16", "COHERENCE_MAX_HEALTH_WATCH_STREAMS",
        "Most grpc.health.v1 Health/Watch streams open at once (they need no bearer token); one more is refused with RESOURCE_EXHAUSTED. Health Check calls are not limited. Each may hold up to 576 KiB, as a Watch stream.";
    push_buffer_bytes: usize = 4 << 20, "4194304 (4 MiB)", "COHERENCE_PUSH_BUFFER_BYTES",
        "Bytes of pub/sub messages from Redis queued for each of the two subscriptions (invalidations, notifications); past it the subscription is re-established and what was missed is repaired or announced.";
    batch_queue_bytes: usize = 4 << 20, "4194304 (4 MiB)", "COHERENCE_BATCH_QUEUE_BYTES",
        "Most bytes of keys (each counted as its length + 64) waiting for or in a Redis round trip, for each of Get, Check and Bump; a call past it is refused at once: RESOURCE_EXHAUSTED for Get and Bump, current = false (fail closed) for Check. One call is always admitted when none waits.";
    request_buffer_bytes: usize = 16 << 20, "16777216 (16 MiB)", "COHERENCE_REQUEST_BUFFER_BYTES",
        "Most bytes of request messages the gRPC port holds at once, all connections together, each counted at the size its gRPC prefix announces plus 256 bytes per entry until its handler answered; a quarter is kept for messages counted at most 64 KiB. A message that does not fit its share while others hold it is refused at once with RESOURCE_EXHAUSTED (a large one alone is always admitted). At least 1 MiB. See docs/operations.md, Memory budget.";
    max_connections: usize = 256, "256", "COHERENCE_MAX_CONNECTIONS",
        "Most connections open at once to the gRPC port (TCP or Unix socket); one more is closed as soon as it is accepted (its client sees the connection reset) and counted as limit max_connections in coherence_limits_reached_total. See docs/operations.md, Transport limits.";
    max_concurrent_streams: u32 = 1_024, "1024", "COHERENCE_MAX_CONCURRENT_STREAMS",
        "Most gRPC calls and streams at once on one HTTP/2 connection (advertised as SETTINGS_MAX_CONCURRENT_STREAMS: a client waits or opens another connection).";
    max_header_list_bytes: u32 = 16_384, "16384", "COHERENCE_MAX_HEADER_LIST_BYTES",
        "Largest block of request headers (metadata) accepted on the gRPC port, in bytes; a larger one is refused.";
    http2_keepalive_ms: u64 = 30_000, "30000", "COHERENCE_HTTP2_KEEPALIVE_MS",
        "How often the gRPC server pings each HTTP/2 connection (0: never); see http2_keepalive_timeout_ms.";
    http2_keepalive_timeout_ms: u64 = 10_000, "10000", "COHERENCE_HTTP2_KEEPALIVE_TIMEOUT_MS",
        "A connection whose client does not answer a ping within this long is closed and its calls and streams end.";
    audit_sample_rate: f64 = 0.01, "0.01", "COHERENCE_AUDIT_SAMPLE_RATE",
        "Fraction (0 to 1) of the answers calling a version current that the consistency auditor samples and judges against the replay log (0: off). See docs/operations.md, The consistency SLO.";
    canary_interval_ms: u64 = 1_000, "1000", "COHERENCE_CANARY_INTERVAL_MS",
        "How often the propagation prober bumps this sidecar's canary key __coherence__/canary/<server_id> (0: never); every sidecar records how long its mirror took to apply each canary bump.";
    log_format: String = "text".to_string(), "text", "COHERENCE_LOG_FORMAT",
        "Log lines on stderr: text (coloured only when stderr is a terminal and NO_COLOR is unset) or json (one object per line, for log pipelines). RUST_LOG filters them.";
}

/// The values of `log_format`.
pub const LOG_FORMATS: &[&str] = &["text", "json"];

fn default_server_id() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "coherence-sidecar".to_string())
}

/// The validated configuration the sidecar runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    /// How to reach Redis: `redis_url` parsed, credentials and TLS roots resolved (files read).
    pub redis: RedisConfig,
    /// The server registry's settings, `role` parsed.
    pub servers: ServersConfig,
    /// The bearer token gRPC calls must carry (`auth_token_file`), if any.
    pub auth_token: Option<Secret>,
}

impl Config {
    /// Reads flags and environment (and the TOML file they name) and validates the result.
    pub fn from_args<I, T>(args: I) -> Result<ConfigOrAction, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let flags = match Flags::try_parse_from(args) {
            Ok(flags) => flags,
            Err(err) => {
                use clap::error::ErrorKind;
                return match err.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                        Ok(ConfigOrAction::Print(err.to_string()))
                    }
                    _ => Err(ConfigError::Flags(flag_error(&err))),
                };
            }
        };
        if flags.print_config_reference {
            return Ok(ConfigOrAction::Print(reference_table()));
        }
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let config = Config::validate(Settings::merge(&flags, file))?;
        if flags.print_config {
            return Ok(ConfigOrAction::Print(config.render()));
        }
        Ok(ConfigOrAction::Run(config))
    }

    /// The defaults, validated (used by tests, which then override what they need).
    pub fn defaults() -> Settings {
        Settings::merge(
            &Flags::parse_from(["coherence-sidecar"]),
            FileSettings::default(),
        )
    }

    /// Checks every setting and names the first bad one.
    pub fn validate(mut settings: Settings) -> Result<Config, ConfigError> {
        let invalid = |setting: &'static str, message: String| {
            ConfigError::Invalid(InvalidSetting::new(setting, message))
        };
        // An empty path means no file (as --print-config showed an unset one before these
        // settings were optional).
        for path in [
            &mut settings.auth_token_file,
            &mut settings.redis_password_file,
            &mut settings.redis_ca_file,
            &mut settings.sentinel_password_file,
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                *path = None;
            }
        }
        if ScriptMode::parse(&settings.redis_scripts).is_none() {
            return Err(invalid(
                "redis_scripts",
                format!(
                    "{:?} is not one of {}",
                    settings.redis_scripts,
                    ScriptMode::NAMES.join(", ")
                ),
            ));
        }
        let redis = RedisConfig::new(&settings.redis_settings())?;
        crate::redis::keyspace::validate_namespace(&settings.namespace)
            .map_err(|m| invalid("namespace", m))?;
        if settings.server_id.is_empty() || settings.server_id.contains('|') {
            return Err(invalid(
                "server_id",
                "must be non-empty and must not contain '|'".into(),
            ));
        }
        if settings.shards == 0 || settings.shards > 1024 {
            return Err(invalid("shards", "must be between 1 and 1024".into()));
        }
        if settings.max_key_bytes == 0 {
            return Err(invalid("max_key_bytes", "must be at least 1".into()));
        }
        if settings.max_batch_keys == 0 {
            return Err(invalid("max_batch_keys", "must be at least 1".into()));
        }
        for (name, value) in [
            ("mirror_max_keys", settings.mirror_max_keys),
            ("mirror_max_bytes", settings.mirror_max_bytes),
            ("max_watch_prefixes", settings.max_watch_prefixes),
            ("watch_buffer_bytes", settings.watch_buffer_bytes),
            ("max_watch_streams", settings.max_watch_streams),
            (
                "notification_buffer_bytes",
                settings.notification_buffer_bytes,
            ),
            ("max_subscribe_streams", settings.max_subscribe_streams),
            ("max_role_streams", settings.max_role_streams),
            (
                "max_health_watch_streams",
                settings.max_health_watch_streams,
            ),
            ("push_buffer_bytes", settings.push_buffer_bytes),
            ("batch_queue_bytes", settings.batch_queue_bytes),
            ("request_buffer_bytes", settings.request_buffer_bytes),
            ("max_connections", settings.max_connections),
            (
                "max_concurrent_streams",
                settings.max_concurrent_streams as usize,
            ),
            (
                "max_header_list_bytes",
                settings.max_header_list_bytes as usize,
            ),
        ] {
            if value == 0 {
                return Err(invalid(name, "must be at least 1".into()));
            }
        }
        if settings.request_buffer_bytes < MIN_REQUEST_BUFFER_BYTES {
            return Err(invalid(
                "request_buffer_bytes",
                format!(
                    "must be at least {MIN_REQUEST_BUFFER_BYTES} (1 MiB): a quarter of it is kept \
                     for requests of at most {SMALL_REQUEST_BYTES} bytes"
                ),
            ));
        }
        for (name, value) in [
            ("heartbeat_interval_ms", settings.heartbeat_interval_ms),
            ("max_staleness_ms", settings.max_staleness_ms),
            ("check_deadline_ms", settings.check_deadline_ms),
            ("request_timeout_ms", settings.request_timeout_ms),
            ("reconcile_interval_ms", settings.reconcile_interval_ms),
            ("replay_log_len", settings.replay_log_len),
            (
                "http2_keepalive_timeout_ms",
                settings.http2_keepalive_timeout_ms,
            ),
        ] {
            if value == 0 {
                return Err(invalid(name, "must be greater than 0".into()));
            }
        }
        let servers = ServersConfig::new(
            &settings.role,
            settings.lease_ms,
            settings.server_refresh_ms,
            settings.server_ttl_ms,
        )?;
        if settings.max_payload_bytes == 0 || settings.max_payload_bytes > 64 * 1024 * 1024 {
            return Err(invalid(
                "max_payload_bytes",
                "must be between 1 and 67108864".into(),
            ));
        }
        let auth_token = read_auth_token(settings.auth_token_file.as_deref())?;
        if !LOG_FORMATS.contains(&settings.log_format.as_str()) {
            return Err(invalid(
                "log_format",
                format!("{:?} is not one of text, json", settings.log_format),
            ));
        }
        validate_read_lease(&settings)?;
        if !(0.0..=1.0).contains(&settings.audit_sample_rate) {
            return Err(invalid(
                "audit_sample_rate",
                format!("{} is not between 0 and 1", settings.audit_sample_rate),
            ));
        }
        if settings.max_staleness_ms <= settings.heartbeat_interval_ms {
            return Err(invalid(
                "max_staleness_ms",
                format!(
                    "must be greater than heartbeat_interval_ms ({}), or the mirror could never be trusted",
                    settings.heartbeat_interval_ms
                ),
            ));
        }
        Ok(Config {
            settings,
            redis,
            servers,
            auth_token,
        })
    }

    pub fn max_staleness(&self) -> Duration {
        Duration::from_millis(self.settings.max_staleness_ms)
    }
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.settings.heartbeat_interval_ms)
    }
    pub fn check_deadline(&self) -> Duration {
        Duration::from_millis(self.settings.check_deadline_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.request_timeout_ms)
    }
    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_millis(self.settings.reconcile_interval_ms)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.drain_timeout_ms)
    }

    /// The gRPC server's transport limits. The server's own deadline for any call is a last
    /// resort, well past every deadline the operations apply themselves (`request_timeout`,
    /// `check_deadline`, and waits for read leases of at most 10 s).
    pub fn transport_limits(&self) -> TransportLimits {
        let s = &self.settings;
        TransportLimits {
            max_concurrent_streams: s.max_concurrent_streams,
            max_header_list_bytes: s.max_header_list_bytes,
            keepalive: (s.http2_keepalive_ms > 0)
                .then(|| Duration::from_millis(s.http2_keepalive_ms)),
            keepalive_timeout: Duration::from_millis(s.http2_keepalive_timeout_ms),
            call_timeout: self.request_timeout().max(self.check_deadline())
                + Duration::from_secs(30),
        }
    }

    /// The settings of the cache-version tasks.
    pub fn versions_settings(&self) -> VersionsSettings {
        let s = &self.settings;
        VersionsSettings {
            server_id: s.server_id.clone(),
            max_staleness: self.max_staleness(),
            heartbeat_interval: self.heartbeat_interval(),
            check_deadline: self.check_deadline(),
            request_timeout: self.request_timeout(),
            reconcile_interval: self.reconcile_interval(),
            replay_log_len: s.replay_log_len,
            version_ttl_ms: s.version_ttl_ms,
            mirror_max_keys: s.mirror_max_keys,
            leases: LeaseSettings {
                period: Duration::from_millis(s.read_lease_ms),
                margin: Duration::from_millis(s.read_lease_margin_ms),
            },
            max_mirror_leases: s.max_mirror_leases,
            mirror_max_bytes: s.mirror_max_bytes,
            watch_buffer_bytes: s.watch_buffer_bytes,
            push_buffer_bytes: s.push_buffer_bytes,
            batch_queue_bytes: s.batch_queue_bytes,
            audit_sample_rate: s.audit_sample_rate,
            canary_interval: Duration::from_millis(s.canary_interval_ms),
        }
    }

    /// Every secret this configuration holds (passwords from settings, files and the URL, the
    /// gRPC token), for the binary's last-line scrubbing of logs and panics
    /// ([`crate::secrets::Scrubber`]).
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = self.redis.secrets().to_vec();
        secrets.extend(self.auth_token.iter().map(|t| t.expose().to_string()));
        secrets
    }

    /// The effective configuration as TOML, every setting in table order, secrets redacted.
    pub fn render(&self) -> String {
        render_settings(&self.settings)
    }
}

/// `read_lease_ms`: 0 or 100..=10000; `read_lease_margin_ms`: at most a quarter of it.
fn validate_read_lease(settings: &Settings) -> Result<(), ConfigError> {
    let (period, margin) = (settings.read_lease_ms, settings.read_lease_margin_ms);
    if period != 0 && !(100..=MAX_READ_LEASE_MS).contains(&period) {
        return Err(ConfigError::Invalid(InvalidSetting::new(
            "read_lease_ms",
            format!("must be 0 (off) or between 100 and {MAX_READ_LEASE_MS}"),
        )));
    }
    if period != 0 && margin * 4 > period {
        return Err(ConfigError::Invalid(InvalidSetting::new(
            "read_lease_margin_ms",
            format!("must be at most a quarter of read_lease_ms ({period})"),
        )));
    }
    Ok(())
}

/// Settings whose values are never shown: `--print-config` and `Debug` print `***` when set.
const SECRET_SETTINGS: &[&str] = &["redis_password", "sentinel_password"];

/// TOML lines for every setting in [`SETTINGS`] order; secrets redacted, passwords in URLs
/// too, and a setting without a value (an empty optional one) shown as a comment.
fn render_settings(settings: &Settings) -> String {
    let table = match toml::Value::try_from(settings) {
        Ok(toml::Value::Table(table)) => table,
        // Every setting type serializes to TOML; this would be a bug in the table itself.
        other => return format!("# cannot render the configuration: {other:?}\n"),
    };
    let mut out = String::new();
    for doc in SETTINGS {
        let key = doc.toml;
        let value = match table.get(key) {
            None => {
                out.push_str(&format!("# {key} is not set\n"));
                continue;
            }
            Some(toml::Value::String(text)) if SECRET_SETTINGS.contains(&key) => {
                toml::Value::String(if text.is_empty() {
                    String::new()
                } else {
                    "***".into()
                })
            }
            Some(toml::Value::String(text)) if key.ends_with("_url") => {
                toml::Value::String(redact_url(text))
            }
            Some(value) => value.clone(),
        };
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

impl Settings {
    /// The settings about Redis, for [`RedisConfig::new`].
    fn redis_settings(&self) -> RedisSettings<'_> {
        RedisSettings {
            url: &self.redis_url,
            access: AccessSettings {
                username: &self.redis_username,
                password: &self.redis_password,
                password_file: self.redis_password_file.as_deref(),
                ca_file: self.redis_ca_file.as_deref(),
                sentinel_username: &self.sentinel_username,
                sentinel_password: &self.sentinel_password,
                sentinel_password_file: self.sentinel_password_file.as_deref(),
            },
            allow_evicting_policy: self.allow_evicting_policy,
            scripts: ScriptMode::parse(&self.redis_scripts).unwrap_or_default(),
        }
    }
}

impl std::fmt::Debug for Settings {
    /// Redacted like `--print-config`, so a logged `Settings` never shows a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&render_settings(self))
    }
}

/// What the command line asked for.
#[derive(Debug)]
// Built once per process: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum ConfigOrAction {
    /// Run the sidecar with this configuration.
    Run(Config),
    /// Print this text and exit successfully (help, version, --print-config).
    Print(String),
}

/// Shortest bearer token accepted: shorter ones can be guessed.
const MIN_TOKEN_LEN: usize = 16;

fn read_auth_token(path: Option<&Path>) -> Result<Option<Secret>, ConfigError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let token = crate::secrets::read_secret_file("auth_token_file", path)?;
    let text = token.expose();
    if text.len() < MIN_TOKEN_LEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::Invalid(InvalidSetting::new(
            "auth_token_file",
            format!(
                "{} must hold at least {MIN_TOKEN_LEN} visible ASCII characters and no spaces (e.g. `openssl rand -hex 32`)",
                path.display()
            ),
        )));
    }
    Ok(Some(token))
}

/// clap's message for a bad command line, unless it would quote a stray value: a password
/// given to a flag that takes none (`--print-config hunter2`) must not be echoed back.
fn flag_error(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if err.kind() == ErrorKind::UnknownArgument {
        if let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) {
            if !arg.starts_with('-') {
                return "error: unexpected value on the command line (not shown: it may be a \
                        secret); every setting is a --flag VALUE pair, see --help"
                    .to_string();
            }
        }
    }
    err.to_string()
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(path, &text)
}

/// The settings in a TOML file's `text`. A refusal names the line and the setting, never a
/// value: not `err.to_string()`, which quotes the offending line, nor toml's message when a
/// secret setting's value is refused (serde's "invalid type: integer `123456`" quotes it).
fn parse_file(path: &Path, text: &str) -> Result<FileSettings, ConfigError> {
    toml::from_str(text).map_err(|err: toml::de::Error| {
        let line = err
            .span()
            .and_then(|span| text.get(..span.start))
            .map_or(1, |before| before.matches('\n').count() + 1);
        // The key names the setting, when the line starts with one; anything else before an
        // '=' (a line inside a multi-line string, a stray `key: "pass=word"`) may be a
        // secret's piece.
        let setting = text
            .lines()
            .nth(line - 1)
            .and_then(|l| l.split_once('='))
            .map(|(key, _)| key.trim())
            .and_then(|key| SETTINGS.iter().find(|s| s.toml == key));
        let message = match setting {
            Some(s) if SECRET_SETTINGS.contains(&s.toml) || s.toml.ends_with("_url") => {
                format!(
                    "line {line} ({}): not a valid value (not shown: it may be a secret)",
                    s.toml
                )
            }
            Some(s) => format!("line {line} ({}): {}", s.toml, err.message().trim()),
            None => format!("line {line}: {}", err.message().trim()),
        };
        ConfigError::ParseFile {
            path: path.to_path_buf(),
            message,
        }
    })
}

/// The configuration reference as a Markdown table.
pub fn reference_table() -> String {
    let mut out = String::from(
        "| flag | environment variable | TOML key | default | meaning |\n|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "| `{}` | `{}` | `{}` | `{}` | {} |\n",
            s.flag.replace('_', "-"),
            s.env,
            s.toml,
            s.default,
            s.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ConfigOrAction, ConfigError> {
        Config::from_args(std::iter::once("coherence-sidecar").chain(args.iter().copied()))
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = parse(&["--namespace", "a{b"]).unwrap_err();
        assert!(err.to_string().contains("namespace"), "{err}");
        let err = parse(&["--shards", "0"]).unwrap_err();
        assert!(err.to_string().contains("shards"), "{err}");
        let err = parse(&["--listen", "not-an-address"]).unwrap_err();
        assert!(err.to_string().contains("--listen"), "{err}");
        let err = parse(&["--redis-url", "http://x"]).unwrap_err();
        assert!(err.to_string().contains("redis_url"), "{err}");
        let err = parse(&["--read-lease-ms", "50"]).unwrap_err();
        assert!(err.to_string().contains("read_lease_ms"), "{err}");
        let err = parse(&["--read-lease-ms", "200", "--read-lease-margin-ms", "60"]).unwrap_err();
        assert!(err.to_string().contains("read_lease_margin_ms"), "{err}");
        let err = parse(&["--audit-sample-rate", "1.5"]).unwrap_err();
        assert!(err.to_string().contains("audit_sample_rate"), "{err}");
        let err = parse(&["--audit-sample-rate", "NaN"]).unwrap_err();
        assert!(err.to_string().contains("audit_sample_rate"), "{err}");
        let err = parse(&["--max-staleness-ms", "50"]).unwrap_err();
        assert!(err.to_string().contains("max_staleness_ms"), "{err}");
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "namespace = \"fromfile\"\nshards = 8\n").unwrap();
        let cfg = match parse(&["--config", path.to_str().unwrap(), "--shards", "4"]).unwrap() {
            ConfigOrAction::Run(c) => c,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(cfg.settings.namespace, "fromfile");
        assert_eq!(cfg.settings.shards, 4);
        std::fs::write(&path, "no_such_setting = 1\n").unwrap();
        let err = parse(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("no_such_setting"), "{err}");
    }

    #[test]
    fn print_config_redacts_the_password() {
        match parse(&["--redis-url", "redis://u:hunter2@h:1", "--print-config"]).unwrap() {
            ConfigOrAction::Print(text) => {
                assert!(!text.contains("hunter2"), "{text}");
                assert!(text.contains("u:***@h:1"), "{text}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Found by fuzzing the file: a value refused for a secret setting was quoted by toml's
    /// message, and a stray `key: value` line had the start of its value taken for the key.
    #[test]
    fn a_refused_secret_is_not_quoted() {
        for text in [
            "redis_password = 12345678\n",
            "sentinel_password = [\"hunter2\"]\n",
            "redis_password: \"hunter2=x\"\n",
            "redis_url = 'redis://:hunter2@h' x\n",
        ] {
            let err = parse_file(Path::new("c.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("12345678") && !err.contains("hunter2"),
                "{err}"
            );
            assert!(err.contains("line 1"), "{err}");
        }
        let err = parse_file(Path::new("c.toml"), "shards = \"many\"\n").unwrap_err();
        assert!(err.to_string().contains("line 1 (shards)"), "{err}");
    }

    use coherence_testkit::fuzz;
    use proptest::prelude::*;

    /// A value for a setting that holds a secret, and the secret in it (a number, or text
    /// with the marker `SECRET` no other line can produce).
    fn secret_values() -> impl Strategy<Value = (String, String)> {
        let text = "[!-~]{0,6}SECRET[!-~]{0,6}";
        prop_oneof![
            (100_000u64..1_000_000_000).prop_map(|n| (n.to_string(), n.to_string())),
            text.prop_map(|t| (format!("{t:?}"), t)),
            text.prop_map(|t| (format!("'{t}'"), t)),
            text.prop_map(|t| (format!("\"{t}"), t)),
            text.prop_map(|t| (format!("[{t:?}]"), t)),
            text.prop_map(|t| (format!("\"\"\"\n{t}\n\"\"\""), t)),
            text.prop_map(|t| (format!("{t:?} trailing"), t)),
        ]
    }

    /// A `redis_url` value with a password (only that part of a URL is a secret).
    fn secret_urls() -> impl Strategy<Value = (String, String)> {
        let text = "[!-~]{0,6}SECRET[!-~]{0,6}";
        prop_oneof![
            text.prop_map(|t| (format!("\"redis://u:{t}@h:1\""), t)),
            text.prop_map(|t| (format!("'rediss+sentinel://:{t}@h:1,h:2/m'"), t)),
            // In a query a password cannot hold '&' or '#' unencoded.
            text.prop_map(|t| t.replace(['&', '#'], "_"))
                .prop_map(|t| (format!("\"unix:///s?pass={t}\""), t)),
            text.prop_map(|t| (format!("\"redis://u:{t}@h:1"), t)),
            text.prop_map(|t| (format!("\"redis://u:{t}@[::1]:99999\""), t)),
        ]
    }

    /// Any other value, well formed or not.
    fn values() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            "[a-z0-9:./_-]{0,12}".prop_map(|t| format!("{t:?}")),
            Just("true".to_string()),
            Just("1e400".to_string()),
            Just("inf".to_string()),
            "[0-9.:\\[\\]a-z]{0,24}".prop_map(|t| format!("{t:?}")),
            "\\PC{0,12}",
            "\\PC{0,8}".prop_map(|t| format!("[{t:?}, 1]")),
            "\\PC{0,8}".prop_map(|t| format!("{{ a = {t:?} }}")),
        ]
    }

    /// A config file: lines setting known keys (secret or not), unknown keys and junk; and
    /// every secret in it.
    fn config_files() -> impl Strategy<Value = (String, Vec<String>)> {
        let names: Vec<&'static str> = SETTINGS
            .iter()
            .map(|s| s.toml)
            .filter(|name| !name.ends_with("_file"))
            .collect();
        let line = prop_oneof![
            (
                prop::sample::select(vec!["redis_password", "sentinel_password"]),
                prop::sample::select(vec![" = ", "=", ": ", " "]),
                secret_values(),
            )
                .prop_map(|(key, eq, (value, secret))| (format!("{key}{eq}{value}"), Some(secret))),
            (prop::sample::select(vec![" = ", ": "]), secret_urls())
                .prop_map(|(eq, (value, secret))| (format!("redis_url{eq}{value}"), Some(secret))),
            (prop::sample::select(names), values())
                .prop_map(|(key, value)| (format!("{key} = {value}"), None)),
            "\\PC{0,24}".prop_map(|junk| (junk, None)),
            Just(("[section]".to_string(), None)),
        ];
        proptest::collection::vec(line, 0..6).prop_map(|lines| {
            let secrets = lines.iter().filter_map(|(_, s)| s.clone()).collect();
            let text = lines
                .into_iter()
                .map(|(l, _)| l)
                .collect::<Vec<_>>()
                .join("\n");
            (text, secrets)
        })
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        /// A config file as an operator may write it: no panic, and whether it is refused
        /// (by the TOML reader or by validation) or accepted, no secret in it is shown.
        #[test]
        fn fuzz_config_file((text, secrets) in config_files()) {
            let shown = match parse_file(Path::new("c.toml"), &text) {
                Err(err) => err.to_string(),
                Ok(file) => {
                    let flags = Flags::parse_from(["coherence-sidecar"]);
                    match Config::validate(Settings::merge(&flags, file)) {
                        Err(err) => err.to_string(),
                        Ok(config) => format!("{}\n{config:?}", config.render()),
                    }
                }
            };
            for secret in &secrets {
                prop_assert!(!shown.contains(secret.as_str()), "{text:?} showed {secret:?}: {shown}");
            }
        }

        /// Any bytes as a config file: no panic.
        #[test]
        fn fuzz_config_file_any_text(text in "\\PC{0,128}") {
            let _ = parse_file(Path::new("c.toml"), &text);
        }
    }
}
