//! Prometheus metrics of one sidecar.
//!
//! Every metric the sidecar exports is declared here, with Prometheus naming (`coherence_`
//! prefix, `_total` counters, `_seconds` histograms) and never a cache key as a label, so that
//! cardinality stays fixed however many keys an application uses. [`exposition`] renders them
//! in the two text formats `/metrics` speaks.

pub mod audit;
pub mod exposition;
pub mod labels;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::metrics::audit::AuditMetrics;

pub use labels::{Labels1, Labels2, Labels3};

/// The sidecar's metrics; cheap to clone (every handle is shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub grpc_requests: Family<Labels3, Counter>,
    pub grpc_request_duration: Family<Labels2, Histogram>,
    /// Checks by `result` and `source` (the cache-version operations resolve their series
    /// once, see `versions::operations`).
    pub checks: Family<Labels2, Counter>,
    pub bumps: Counter,
    pub invalidations_received: Counter,
    pub propagation_delay: Histogram,
    pub mirror_keys: Gauge,
    pub mirror_evictions: Counter,
    pub fence_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub gaps_detected: Counter,
    pub repairs_from_log: Counter,
    pub resyncs: Family<Labels1, Counter>,
    pub reconcile_mismatches: Counter,
    pub redis_connected: Family<Labels1, Gauge>,
    pub redis_reconnects: Family<Labels1, Counter>,
    pub redis_command_duration: Family<Labels1, Histogram>,
    pub redis_errors: Family<Labels1, Counter>,
    pub watch_streams: Gauge,
    /// Open gRPC connections (at most `max_connections`).
    pub connections_open: Gauge,
    /// Errors accepting a gRPC connection (out of file descriptors …); each pauses accepting.
    pub accept_errors: Counter,
    /// Bytes held by each bounded buffer (see `crate::buffers`), by `buffer`.
    pub buffer_bytes: Family<Labels1, Gauge>,
    /// Calls refused because a limit was reached, by `limit`.
    pub limits_reached: Family<Labels1, Counter>,
    /// Calls dropped before their Redis batch was sent, their caller gone.
    pub calls_abandoned: Counter,
    pub ready: Gauge,
    pub read_leases_held: Gauge,
    /// Strong checks and gets by `source`: mirror (under a read lease) or redis.
    pub strong_answers: Family<Labels1, Counter>,
    pub bump_ack_wait: Histogram,
    pub bumps_waited_for_expiry: Counter,
    /// Client mirrors holding a lease from this sidecar (by its reckoning).
    pub mirror_leases_held: Gauge,
    /// How long acknowledgements to Redis waited for client mirrors to apply what they held.
    pub mirror_ack_wait: Histogram,
    pub mirror_leases_waited_out: Counter,
    pub load_balancing: LoadBalancingMetrics,
    pub audit: AuditMetrics,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 17))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("coherence");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            grpc_requests: Family::default(),
            grpc_request_duration: Family::new_with_constructor(latency_histogram),
            checks: Family::default(),
            bumps: Counter::default(),
            invalidations_received: Counter::default(),
            propagation_delay: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            mirror_keys: Gauge::default(),
            mirror_evictions: Counter::default(),
            fence_age: Gauge::default(),
            gaps_detected: Counter::default(),
            repairs_from_log: Counter::default(),
            resyncs: Family::default(),
            reconcile_mismatches: Counter::default(),
            redis_connected: Family::default(),
            redis_reconnects: Family::default(),
            redis_command_duration: Family::new_with_constructor(latency_histogram),
            redis_errors: Family::default(),
            watch_streams: Gauge::default(),
            connections_open: Gauge::default(),
            accept_errors: Counter::default(),
            buffer_bytes: Family::default(),
            limits_reached: Family::default(),
            calls_abandoned: Counter::default(),
            ready: Gauge::default(),
            read_leases_held: Gauge::default(),
            strong_answers: Family::default(),
            // 100 µs .. ~13 s: an acknowledgement takes a round trip, an expiry a lease period.
            bump_ack_wait: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            bumps_waited_for_expiry: Counter::default(),
            mirror_leases_held: Gauge::default(),
            // 10 µs .. ~10 s: usually a loopback call, at worst a lease period.
            mirror_ack_wait: Histogram::new(exponential_buckets(0.00001, 2.0, 21)),
            mirror_leases_waited_out: Counter::default(),
            load_balancing: LoadBalancingMetrics::default(),
            audit: AuditMetrics::default(),
        };
        let r = &mut registry;
        r.register(
            "build",
            "Build information of the sidecar",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "grpc_requests",
            "gRPC calls finished, by service, method and final status code",
            m.grpc_requests.clone(),
        );
        r.register(
            "grpc_request_duration_seconds",
            "Latency of unary gRPC calls (streams are not timed), by service and method",
            m.grpc_request_duration.clone(),
        );
        r.register(
            "checks",
            "Version checks answered, by result (current, stale) and source (mirror, redis, fail_closed)",
            m.checks.clone(),
        );
        r.register("bumps", "Keys bumped through this sidecar", m.bumps.clone());
        r.register(
            "invalidations_received",
            "Invalidations applied from the Redis subscription (and replay log)",
            m.invalidations_received.clone(),
        );
        r.register(
            "propagation_delay_seconds",
            "Time from a bump on Redis to its invalidation being applied here (Redis clock to local clock)",
            m.propagation_delay.clone(),
        );
        r.register(
            "mirror_keys",
            "Versions held in the in-memory mirror",
            m.mirror_keys.clone(),
        );
        r.register(
            "mirror_evictions",
            "Versions dropped from a full mirror (mirror_max_keys); they are read from Redis when next asked",
            m.mirror_evictions.clone(),
        );
        r.register(
            "fence_age_seconds",
            "Age of the oldest shard's last returned heartbeat fence; while a shard is unsynced, the time since every shard last was",
            m.fence_age.clone(),
        );
        r.register(
            "gaps_detected",
            "Sequence gaps detected in a shard's invalidations",
            m.gaps_detected.clone(),
        );
        r.register(
            "repairs_from_log",
            "Gaps repaired from the replay log without a resync",
            m.repairs_from_log.clone(),
        );
        r.register(
            "resyncs",
            "Shard mirrors dropped and watchers told to resync, by reason",
            m.resyncs.clone(),
        );
        r.register(
            "reconcile_mismatches",
            "Mirrored versions found different from Redis by periodic reconciliation",
            m.reconcile_mismatches.clone(),
        );
        r.register(
            "redis_connected",
            "1 when the Redis connection (command or subscription) is up and verified",
            m.redis_connected.clone(),
        );
        r.register(
            "redis_reconnects",
            "Redis connections re-established, by connection",
            m.redis_reconnects.clone(),
        );
        r.register(
            "redis_command_duration_seconds",
            "Redis round-trip latency, by operation",
            m.redis_command_duration.clone(),
        );
        r.register(
            "redis_errors",
            "Redis operations that failed or timed out, by operation",
            m.redis_errors.clone(),
        );
        r.register(
            "watch_streams",
            "Open Watch streams",
            m.watch_streams.clone(),
        );
        r.register(
            "connections_open",
            "Open connections to the gRPC port (TCP or Unix socket), at most max_connections",
            m.connections_open.clone(),
        );
        r.register(
            "accept_errors",
            "Errors accepting a connection to the gRPC port (out of file descriptors, ...); each error of the process as a whole pauses accepting, 10 ms doubling up to 1 s",
            m.accept_errors.clone(),
        );
        r.register(
            "buffer_bytes",
            "Bytes held by each bounded buffer (watch, notifications, push_invalidations, push_notifications, mirror, requests, batch_get, batch_read, batch_bump); each is capped by its setting",
            m.buffer_bytes.clone(),
        );
        r.register(
            "limits_reached",
            "Calls or streams refused, and buffers that overflowed, because a limit was reached, by limit",
            m.limits_reached.clone(),
        );
        r.register(
            "calls_abandoned",
            "Get, Check and Bump calls dropped before their Redis batch was sent because the caller had gone away (cancelled, or its deadline passed)",
            m.calls_abandoned.clone(),
        );
        r.register(
            "ready",
            "1 when the sidecar is ready to serve",
            m.ready.clone(),
        );
        r.register(
            "read_leases_held",
            "Shards on which this sidecar holds a valid read lease (read_lease_ms)",
            m.read_leases_held.clone(),
        );
        r.register(
            "strong_answers",
            "Strong checks and gets answered, by source: mirror (under a read lease) or redis",
            m.strong_answers.clone(),
        );
        r.register(
            "bump_ack_wait_seconds",
            "How long bumps (and gets that issued a version) waited for read-lease holders to acknowledge or expire, for calls that had holders to wait for",
            m.bump_ack_wait.clone(),
        );
        r.register(
            "bumps_waited_for_expiry",
            "Bump calls that waited for a read lease to run out (a holder that did not acknowledge, or the quarantine after a new epoch)",
            m.bumps_waited_for_expiry.clone(),
        );
        r.register(
            "mirror_leases_held",
            "Client mirrors holding a read lease from this sidecar (max_mirror_leases), by its reckoning",
            m.mirror_leases_held.clone(),
        );
        r.register(
            "mirror_ack_wait_seconds",
            "How long this sidecar's read-lease acknowledgements waited for client mirrors holding its leases to apply the invalidations",
            m.mirror_ack_wait.clone(),
        );
        r.register(
            "mirror_leases_waited_out",
            "Acknowledgements that waited for a client mirror's lease to run out (a mirror that did not read or acknowledge its stream)",
            m.mirror_leases_waited_out.clone(),
        );
        for source in ["mirror", "redis"] {
            let _ = m.strong_answers.get_or_create(&[("source", source)]);
        }
        // Series that alerts compare must exist before the first event (a Redis that was
        // never reachable is "down", not "no data").
        for connection in ["command", "subscription"] {
            m.set_connected(connection, false);
            let _ = m
                .redis_reconnects
                .get_or_create(&[("connection", connection)]);
        }
        // Counters start at 0 for the label values known here, so that `increase()` and
        // `rate()` see their first event (a series born at 1 hides it) and dashboards and
        // alerts find the family from the first scrape. Other values appear when first used.
        for reason in ["first_sync", "epoch_changed", "gap_beyond_log"] {
            let _ = m.resyncs.get_or_create(&[("reason", reason)]);
        }
        for op in ["read", "bump", "fence", "read_log"] {
            let _ = m.redis_errors.get_or_create(&[("op", op)]);
        }
        for buffer in BUFFERS {
            let _ = m.buffer_bytes.get_or_create(&[("buffer", buffer)]);
        }
        m.load_balancing.register(r);
        m.audit.register(r);
        Metrics {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn observe_redis(&self, op: &'static str, took: Duration, ok: bool) {
        self.redis_command_duration
            .get_or_create(&[("op", op)])
            .observe(took.as_secs_f64());
        if !ok {
            self.redis_errors.get_or_create(&[("op", op)]).inc();
        }
    }

    /// The gauge of one bounded buffer (one of [`BUFFERS`]).
    pub fn buffer(&self, buffer: &'static str) -> Gauge {
        self.buffer_bytes
            .get_or_create(&[("buffer", buffer)])
            .clone()
    }

    /// The counter of refusals and overflows at `limit`.
    pub fn limit_counter(&self, limit: &'static str) -> Counter {
        self.limits_reached
            .get_or_create(&[("limit", limit)])
            .clone()
    }

    /// Counts one refusal or overflow at `limit`.
    pub fn limit_reached(&self, limit: &'static str) {
        self.limit_counter(limit).inc();
    }

    pub fn set_connected(&self, connection: &'static str, up: bool) {
        self.redis_connected
            .get_or_create(&[("connection", connection)])
            .set(i64::from(up));
    }
}

/// The bounded buffers, as the label `buffer` of `coherence_buffer_bytes` names them.
pub const BUFFERS: &[&str] = &[
    "watch",
    "notifications",
    "push_invalidations",
    "push_notifications",
    "mirror",
    "requests",
    "batch_get",
    "batch_read",
    "batch_bump",
];

/// Metrics of the load-balancing services: roles, jobs and notifications.
#[derive(Clone, Default)]
pub struct LoadBalancingMetrics {
    pub role_changes: Counter,
    pub role: Family<Labels1, Gauge>,
    pub servers_live: Gauge,
    pub server_id_conflict: Gauge,
    pub job_grants: Family<Labels1, Counter>,
    pub job_refusals: Family<Labels1, Counter>,
    pub notifications_published: Counter,
    pub notifications_delivered: Counter,
    pub notifications_missed: Family<Labels1, Counter>,
}

impl LoadBalancingMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "role_changes",
            "Changes of this server's role",
            self.role_changes.clone(),
        );
        r.register(
            "role",
            "1 for this server's current role (single, scheduling_publisher, subscriber, unknown), 0 for the others",
            self.role.clone(),
        );
        r.register(
            "servers_live",
            "Live servers of the namespace as last seen in Redis",
            self.servers_live.clone(),
        );
        r.register(
            "server_id_conflict",
            "1 while another live process of the namespace has this server_id and this sidecar refuses to serve (not ready)",
            self.server_id_conflict.clone(),
        );
        r.register(
            "job_grants",
            "Job leases granted, renewed or released, by op (acquire, renew, release, claim_run)",
            self.job_grants.clone(),
        );
        r.register(
            "job_refusals",
            "Job calls refused (lease held, period done, stale fencing token), by op",
            self.job_refusals.clone(),
        );
        r.register(
            "notifications_published",
            "Notifications published through this sidecar",
            self.notifications_published.clone(),
        );
        r.register(
            "notifications_delivered",
            "Notifications written to Subscribe streams of this sidecar",
            self.notifications_delivered.clone(),
        );
        r.register(
            "notifications_missed",
            "MissedMessages events sent to subscribers, by reason (reconnect, lagged)",
            self.notifications_missed.clone(),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
