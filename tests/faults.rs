//! The fault-injection suite: a mixed workload of bumps, gets and checks (default and strong)
//! through three sidecars on one real Redis, while one fault is injected per test. The history
//! checker then asserts the design's guarantees over the whole run:
//!
//! (a) no check answered `current` for a token superseded by a bump that completed before the
//!     check began — beyond `max_staleness` for default checks, at all for strong ones;
//! (b) every check answered within `check_deadline` + a generous slack (it never hangs);
//! (c) the fleet was ready again — every sidecar ready, bumps working, mirrors answering —
//!     within [`RECOVERY_BOUND`] after the fault ended.
//!
//! Afterwards every token the run saw superseded is strong-checked once more: none may be
//! current (no ABA after restarts, rollbacks or flushes). Each test prints its figures; run
//! `cargo test --test faults -- --nocapture` to see them.

mod fault_support;

use std::time::{Duration, Instant};

use fault_support::{keys_of_one_shard, Fleet, Workload};

/// How long the fleet may take to recover after a fault ended (stated in docs/faults.md).
const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// Workload before and after the fault.
const PHASE: Duration = Duration::from_millis(1_500);
const KEYS: usize = 300;

enum Fault {
    RestartEmpty,
    RestoreSnapshot,
    Pause(Duration),
    KillPubsub,
    PubsubOverflow,
    FlushAll,
    /// Redis Cluster: SIGKILL the master of a hot key's shard; its replica takes over.
    ClusterMasterFailover,
    /// Redis Cluster: move a hot key's shard slot to another master mid-workload.
    ClusterSlotMigration,
}

impl Fault {
    fn on_cluster(&self) -> bool {
        matches!(
            self,
            Fault::ClusterMasterFailover | Fault::ClusterSlotMigration
        )
    }
}

/// The cluster slot of the shard that holds the workload's hottest key.
fn hot_slot(fleet: &Fleet) -> u16 {
    let keyspace = &fleet.sidecars[0].state.keyspace;
    coherence_testkit::cluster::key_slot(&keyspace.shard_keys(keyspace.shard_of("key:0")).seq)
}

/// Fleet-wide counters read before the fault, to show what the fault did.
#[derive(Debug, Clone, Copy)]
struct Metrics {
    sub_reconnects: f64,
    cmd_reconnects: f64,
    gaps: f64,
    repairs: f64,
    resyncs: f64,
    fail_closed: f64,
}

impl Metrics {
    fn read(fleet: &Fleet) -> Metrics {
        let reconnects = |connection: &'static str| -> f64 {
            fleet
                .sidecars
                .iter()
                .map(|s| {
                    s.state
                        .metrics
                        .redis_reconnects
                        .get_or_create(&[("connection", connection)])
                        .get() as f64
                })
                .sum()
        };
        Metrics {
            sub_reconnects: reconnects("subscription"),
            cmd_reconnects: reconnects("command"),
            gaps: fleet.metric("coherence_gaps_detected_total"),
            repairs: fleet.metric("coherence_repairs_from_log_total"),
            resyncs: fleet.metric("coherence_resyncs_total"),
            fail_closed: fleet
                .sidecars
                .iter()
                .map(|s| {
                    ["current", "stale"]
                        .iter()
                        .map(|r| {
                            s.state
                                .metrics
                                .checks
                                .get_or_create(&[("result", *r), ("source", "fail_closed")])
                                .get() as f64
                        })
                        .sum::<f64>()
                })
                .sum(),
        }
    }

    fn delta(self, before: Metrics) -> Metrics {
        Metrics {
            sub_reconnects: self.sub_reconnects - before.sub_reconnects,
            cmd_reconnects: self.cmd_reconnects - before.cmd_reconnects,
            gaps: self.gaps - before.gaps,
            repairs: self.repairs - before.repairs,
            resyncs: self.resyncs - before.resyncs,
            fail_closed: self.fail_closed - before.fail_closed,
        }
    }
}

/// Runs the workload, injects `fault`, waits for recovery, runs on, and judges the history.
async fn run(name: &str, fault: Fault) -> (Fleet, Metrics) {
    let mut fleet = if fault.on_cluster() {
        Fleet::start_cluster(3, 1, 3, |_| {}).await
    } else {
        Fleet::start(3, |_| {}).await
    };
    let workload = Workload::start(&fleet, KEYS).await;
    if matches!(fault, Fault::RestoreSnapshot) {
        tokio::time::sleep(PHASE / 2).await;
        tokio::task::block_in_place(|| fleet.redis_mut().snapshot("earlier"));
        tokio::time::sleep(PHASE / 2).await;
    } else {
        tokio::time::sleep(PHASE).await;
    }
    let before = Metrics::read(&fleet);
    let fault_started = Instant::now();
    inject(&mut fleet, &fault).await;
    let fault_took = fault_started.elapsed();
    let recovery = fleet.wait_recovered(RECOVERY_BOUND).await;
    tokio::time::sleep(PHASE).await;
    let history = workload.stop().await;
    let swept = fleet.sweep_superseded(&history).await;
    let report = history.analyse(&fleet.limits());
    let effect = Metrics::read(&fleet).delta(before);
    println!(
        "FAULT {name}: fault lasted {fault_took:?}, recovery {recovery:?} (bound {RECOVERY_BOUND:?}); {report}; superseded tokens swept {swept}; fleet deltas: {effect:?}"
    );
    report.assert_clean(name);
    assert!(
        recovery.is_some(),
        "{name}: the fleet did not recover within {RECOVERY_BOUND:?}"
    );
    assert!(
        report.checks() > 100 && report.bumps_ok > 50,
        "{name}: the workload barely ran: {report}"
    );
    assert!(swept > 0, "{name}: no superseded token to sweep");
    (fleet, effect)
}

async fn inject(fleet: &mut Fleet, fault: &Fault) {
    match fault {
        Fault::RestartEmpty => tokio::task::block_in_place(|| fleet.redis_mut().restart_empty()),
        Fault::RestoreSnapshot => {
            tokio::task::block_in_place(|| fleet.redis_mut().restore_snapshot("earlier"))
        }
        Fault::Pause(how_long) => {
            fleet.redis().pause();
            // The fault's duration, not a synchronisation.
            tokio::time::sleep(*how_long).await;
            fleet.redis().resume();
        }
        Fault::KillPubsub => {
            let killed: i64 = fleet
                .redis()
                .cmd(&["CLIENT", "KILL", "TYPE", "pubsub"])
                .expect("CLIENT KILL");
            assert!(
                killed >= 3,
                "expected every sidecar's subscription to be killed, got {killed}"
            );
        }
        Fault::PubsubOverflow => {
            // One bump of many keys of one shard: one script, one burst of publishes.
            let burst = keys_of_one_shard(&fleet.settings, 400);
            fleet.burst_with_tiny_pubsub_buffers(&burst).await;
        }
        Fault::FlushAll => {
            let _: () = fleet.redis().cmd(&["FLUSHALL"]).expect("FLUSHALL");
        }
        Fault::ClusterMasterFailover => {
            let slot = hot_slot(fleet);
            tokio::task::block_in_place(|| {
                fleet
                    .cluster_mut()
                    .fail_over_slot(slot, Duration::from_secs(30))
            });
        }
        Fault::ClusterSlotMigration => {
            let slot = hot_slot(fleet);
            let cluster = fleet.cluster_mut();
            let from = cluster.master_of_slot(slot).expect("the slot has a master");
            let to = (0..cluster.nodes().len())
                .find(|&i| {
                    i != from
                        && (0..16384u16)
                            .step_by(1024)
                            .any(|s| cluster.master_of_slot(s) == Some(i))
                })
                .expect("another master");
            tokio::task::block_in_place(|| cluster.move_slot(slot, to));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_empty() {
    let (fleet, effect) = run("sigkill+restart-empty", Fault::RestartEmpty).await;
    assert!(
        effect.cmd_reconnects >= 3.0,
        "every sidecar reconnects: {effect:?}"
    );
    assert!(
        effect.resyncs >= 3.0,
        "every sidecar drops its mirror (new epoch): {effect:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_from_an_older_snapshot() {
    let (fleet, effect) = run("sigkill+restore-snapshot", Fault::RestoreSnapshot).await;
    assert!(
        effect.cmd_reconnects >= 3.0,
        "every sidecar reconnects: {effect:?}"
    );
    assert!(
        effect.resyncs >= 3.0,
        "every sidecar drops its mirror (new epoch): {effect:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_for_two_seconds() {
    let (fleet, effect) = run("sigstop-2s", Fault::Pause(Duration::from_secs(2))).await;
    assert!(
        effect.fail_closed > 0.0,
        "checks failed closed while Redis was paused: {effect:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_longer_than_the_stall_limit() {
    // No error reaches the client library while Redis is stopped: only the heartbeat fences
    // that stop coming back tell the subscription it is dead (stall limit 2 s here).
    let (fleet, effect) = run("sigstop-4s", Fault::Pause(Duration::from_secs(4))).await;
    assert!(
        effect.fail_closed > 0.0,
        "checks failed closed while Redis was paused: {effect:?}"
    );
    assert!(
        effect.sub_reconnects >= 3.0,
        "every sidecar declared its silent subscription dead and resubscribed: {effect:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_type_pubsub() {
    let (fleet, effect) = run("client-kill-pubsub", Fault::KillPubsub).await;
    assert!(
        effect.sub_reconnects >= 3.0,
        "every subscription reconnects: {effect:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_output_buffer_overflow() {
    let (fleet, effect) = run("pubsub-buffer-overflow", Fault::PubsubOverflow).await;
    assert!(
        effect.sub_reconnects >= 1.0,
        "the burst cut subscriptions off: {effect:?}"
    );
    assert!(
        effect.gaps >= 1.0,
        "the lost invalidations were noticed: {effect:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall() {
    let (fleet, effect) = run("flushall", Fault::FlushAll).await;
    assert!(
        effect.resyncs >= 3.0,
        "every sidecar drops its mirror (new epoch): {effect:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_mid_workload() {
    let (fleet, effect) = run("cluster-master-failover", Fault::ClusterMasterFailover).await;
    assert!(
        effect.sub_reconnects >= 3.0,
        "every sidecar re-subscribed on the new topology: {effect:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_slot_migration_mid_workload() {
    let (fleet, effect) = run("cluster-slot-migration", Fault::ClusterSlotMigration).await;
    assert!(
        effect.sub_reconnects >= 3.0,
        "every sidecar noticed the moved slot and re-subscribed: {effect:?}"
    );
    fleet.shutdown().await;
}
