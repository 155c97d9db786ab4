//! The fault-injection suite: a mixed workload through three sidecars on one real Redis —
//! gRPC bumps, gets and checks (bounded and strong, single- and multi-key), racers, a client
//! mirror per sidecar and two coherent caches over a simulated source of truth — while one
//! fault is injected per test. The history checker (`fault_support::history`) then judges the
//! whole run:
//!
//! (a) no read called a version current that a completed bump had superseded before the read
//!     began — beyond `max_staleness` for bounded reads, at all for strong ones, and at all
//!     through the source that made the bump itself (own writes); supersession by time and by
//!     version order; checks' answers, the current versions they report, gets' versions and
//!     the values caches serve are all judged;
//! (b) every check through a sidecar answered within `check_deadline` + a generous slack, and
//!     none failed unless its sidecar was down;
//! (c) the fleet was ready again — every sidecar ready, bumps working, mirrors answering —
//!     within [`RECOVERY_BOUND`] after the fault ended;
//! (d) the run was not vacuous: before and after the fault, current answers, answers on
//!     superseded tokens and answers from every source met their floors, and no worker died.
//!
//! Afterwards every token the run saw superseded is strong-checked once more (judged with the
//! rest). Faults on Redis itself (kill, restore, pause, flush, cut connections) hit every
//! sidecar; the asymmetric ones go through a proxy in front of sidecar 2 only, while bumps
//! elsewhere keep succeeding: invalidations delayed, dropped silently, or the subscription
//! stalled. Each test prints its figures; run
//! `cargo test -p coherence --test faults -- --nocapture` to see them.

mod fault_support;

use std::time::{Duration, Instant};

use coherence_client::Version;
use coherence_sidecar::process::config::Settings;
use coherence_testkit::{Flow, Link, TestSidecar};
use fault_support::history::Report;
use fault_support::{keys_of_one_shard, Fleet, Floors, Via, Workload};

/// How long the fleet may take to recover after a fault ended (stated in docs/faults.md).
const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// Workload before and after the fault.
const PHASE: Duration = Duration::from_millis(1_500);
const KEYS: usize = 300;
/// The sidecar behind the fault proxy in the asymmetric faults.
const PROXIED: usize = 2;

/// What each of the phases before and after a fault must contain at least. Far below what a
/// run does (hundreds of each; a third of that with the 2-core box at a load of 9) so that a
/// loaded machine does not trip them; a sidecar that answers nothing, or "not current" to
/// everything, does.
const FLOORS: Floors = Floors {
    current_answers: 30,
    superseded_answers: 10,
    answers_per_source: 5,
    bumps: 10,
};

enum Fault {
    RestartEmpty,
    RestoreSnapshot,
    Pause(Duration),
    KillPubsub,
    PubsubOverflow,
    FlushAll,
    /// Sidecar 1 shut down, and started again on the same port after this long.
    RestartSidecar(Duration),
    /// Through the proxy of sidecar [`PROXIED`]: this flow on one kind of its connections, for
    /// this long.
    Proxy(Link, Flow, Duration),
    /// Through the proxy of sidecar [`PROXIED`]: both its links (subscription and commands)
    /// stalled for this long — to Redis and its peers it is stopped, while it goes on answering
    /// its own clients (a paused read-lease holder, at its most dangerous).
    FreezeLinks(Duration),
    /// Through the proxy of sidecar [`PROXIED`]: its invalidation pushes dropped for this long.
    DropInvalidations(Duration),
    /// Through the proxy of sidecar [`PROXIED`]: its subscription stalled until the sidecar has
    /// declared it dead (no fence back within the stall limit).
    StallSubscriptionUntilDeclaredDead,
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

    fn proxied(&self) -> bool {
        matches!(
            self,
            Fault::Proxy(..)
                | Fault::FreezeLinks(_)
                | Fault::DropInvalidations(_)
                | Fault::StallSubscriptionUntilDeclaredDead
        )
    }
}

/// The cluster slot of the shard that holds the workload's hottest key.
fn hot_slot(fleet: &Fleet) -> u16 {
    let keyspace = &fleet.sidecars[0].state.keyspace;
    coherence_testkit::cluster::key_slot(&keyspace.shard_keys(keyspace.shard_of("key:0")).seq)
}

/// Counters read before the fault, to show what the fault did.
#[derive(Debug, Clone, Copy)]
struct Metrics {
    sub_reconnects: f64,
    cmd_reconnects: f64,
    gaps: f64,
    repairs: f64,
    resyncs: f64,
    fail_closed: f64,
    from_redis: f64,
}

impl Metrics {
    fn read(sidecars: &[TestSidecar]) -> Metrics {
        let reconnects = |connection: &'static str| -> f64 {
            sidecars
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
        let checks = |source: &'static str| -> f64 {
            sidecars
                .iter()
                .flat_map(|s| {
                    ["current", "stale"].map(|r| {
                        s.state
                            .metrics
                            .checks
                            .get_or_create(&[("result", r), ("source", source)])
                            .get() as f64
                    })
                })
                .sum()
        };
        let metric = |name: &str| -> f64 {
            sidecars
                .iter()
                .map(|s| fault_support::metric_of(s, name))
                .sum()
        };
        Metrics {
            sub_reconnects: reconnects("subscription"),
            cmd_reconnects: reconnects("command"),
            gaps: metric("coherence_gaps_detected_total"),
            repairs: metric("coherence_repairs_from_log_total"),
            resyncs: metric("coherence_resyncs_total"),
            fail_closed: checks("fail_closed"),
            from_redis: checks("redis"),
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
            from_redis: self.from_redis - before.from_redis,
        }
    }
}

/// What a run measured: the checker's report, and the counters' change over the fault for
/// the whole fleet and for the proxied sidecar alone.
struct Outcome {
    fleet: Fleet,
    report: Report,
    /// Strong checks client mirrors answered in their own memory under a read lease.
    mirror_strong_local: u64,
    effect: Metrics,
    proxied_effect: Option<Metrics>,
}

/// Runs the workload, injects `fault`, waits for recovery, runs on, and judges the history.
async fn run(name: &str, fault: Fault) -> Outcome {
    run_with(name, fault, |_| {}).await
}

/// [`run`], with the fleet's settings adjusted by `tune`.
async fn run_with(name: &str, fault: Fault, tune: impl Fn(&mut Settings)) -> Outcome {
    let mut fleet = if fault.on_cluster() {
        Fleet::start_cluster(3, 1, 3, tune).await
    } else if fault.proxied() {
        Fleet::start_proxied(3, &[PROXIED], tune).await
    } else {
        Fleet::start(3, tune).await
    };
    fleet.settle_lease_quarantines().await;
    // With read leases every bump (and every cache fill that issues a version) also waits for
    // the other holders' acknowledgements, so the workload does less per second; on this
    // shared 2-core machine a 1.5 s phase then fell short of its floors (caches, mirrors).
    let phase = if fleet.settings.read_lease_ms > 0 {
        PHASE * 2
    } else {
        PHASE
    };
    let history = std::sync::Arc::clone(&fleet.history);
    history.begin_phase("before");
    let workload = Workload::start(&fleet, KEYS).await;
    if matches!(fault, Fault::RestoreSnapshot) {
        tokio::time::sleep(phase / 2).await;
        tokio::task::block_in_place(|| fleet.redis_mut().snapshot("earlier"));
        tokio::time::sleep(phase / 2).await;
    } else {
        tokio::time::sleep(phase).await;
    }
    let before = Metrics::read(&fleet.sidecars);
    let proxied_before = fault
        .proxied()
        .then(|| Metrics::read(&fleet.sidecars[PROXIED..=PROXIED]));
    history.begin_phase("fault");
    let fault_started = Instant::now();
    let lost = inject(&mut fleet, &fault).await;
    let fault_took = fault_started.elapsed();
    let recovery = fleet.wait_recovered(RECOVERY_BOUND).await;
    check_lost(&fleet, lost).await;
    history.begin_phase("after");
    tokio::time::sleep(phase).await;
    let judged = workload.judge(&fleet).await;
    let (report, swept, clients) = (judged.report, judged.swept, judged.client_stats);
    let mirror_strong_local = judged.mirror_strong_local;
    let effect = Metrics::read(&fleet.sidecars).delta(before);
    let proxied_effect =
        proxied_before.map(|b| Metrics::read(&fleet.sidecars[PROXIED..=PROXIED]).delta(b));
    let proxy = fleet
        .proxies
        .iter()
        .flatten()
        .map(|p| format!("; proxy {:?}", p.stats()))
        .collect::<String>();
    println!(
        "FAULT {name}: fault lasted {fault_took:?}, recovery {recovery:?} (bound {RECOVERY_BOUND:?}); {report}; superseded tokens swept {swept}; {clients}; fleet deltas: {effect:?}; proxied sidecar deltas: {proxied_effect:?}{proxy}"
    );
    report.assert_clean(name);
    assert!(
        recovery.is_some(),
        "{name}: the fleet did not recover within {RECOVERY_BOUND:?}"
    );
    for phase in ["before", "after"] {
        report.assert_not_vacuous(name, phase, &FLOORS, &judged.sources);
    }
    assert!(swept > 0, "{name}: no superseded token to sweep");
    Outcome {
        fleet,
        report,
        mirror_strong_local,
        effect,
        proxied_effect,
    }
}

/// Versions whose invalidations a fault made Redis lose, and when the bump that superseded them
/// completed.
struct Lost {
    entries: Vec<(String, Version)>,
    superseded: Instant,
}

/// Injects `fault`; returns the versions whose invalidations it lost, if it knows them.
async fn inject(fleet: &mut Fleet, fault: &Fault) -> Option<Lost> {
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
            // Every sidecar mirrors the keys, then one bump of them all (one script, one burst
            // of publishes) loses invalidations on the way to every subscriber.
            let burst = keys_of_one_shard(&fleet.settings, 400);
            let names: Vec<&str> = burst.iter().map(String::as_str).collect();
            let mut old = Vec::new();
            for i in 0..fleet.clients.len() {
                old = fleet
                    .get(i, &names, false)
                    .await
                    .expect("get the burst's keys");
            }
            fleet.burst_with_tiny_pubsub_buffers(&burst).await;
            return Some(Lost {
                entries: burst.into_iter().zip(old).collect(),
                superseded: Instant::now(),
            });
        }
        Fault::FlushAll => {
            let _: () = fleet.redis().cmd(&["FLUSHALL"]).expect("FLUSHALL");
        }
        Fault::RestartSidecar(down) => fleet.restart_sidecar(1, *down).await,
        Fault::Proxy(link, flow, how_long) => {
            fleet.proxy(PROXIED).set_flow(*link, *flow);
            tokio::time::sleep(*how_long).await;
            fleet.proxy(PROXIED).set_flow(*link, Flow::Pass);
        }
        Fault::StallSubscriptionUntilDeclaredDead => {
            let proxy = fleet.proxy(PROXIED);
            proxy.set_flow(Link::Subscription, Flow::Stall);
            let state = &fleet.sidecars[PROXIED].state;
            let declared_dead = coherence_testkit::eventually(Duration::from_secs(10), || async {
                !state
                    .subscription_live
                    .load(std::sync::atomic::Ordering::SeqCst)
            })
            .await;
            proxy.set_flow(Link::Subscription, Flow::Pass);
            assert!(
                declared_dead,
                "the stalled subscription was not declared dead within 10 s"
            );
        }
        Fault::FreezeLinks(how_long) => {
            let proxy = fleet.proxy(PROXIED);
            proxy.set_flow(Link::Subscription, Flow::Stall);
            proxy.set_flow(Link::Command, Flow::Stall);
            tokio::time::sleep(*how_long).await;
            proxy.set_flow(Link::Command, Flow::Pass);
            proxy.set_flow(Link::Subscription, Flow::Pass);
        }
        Fault::DropInvalidations(how_long) => {
            fleet.proxy(PROXIED).drop_invalidations(true);
            tokio::time::sleep(*how_long).await;
            fleet.proxy(PROXIED).drop_invalidations(false);
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
    None
}

/// Once the bound has passed since they were superseded, every sidecar answers the lost
/// versions stale (the checker judges these answers with the rest; this says which).
async fn check_lost(fleet: &Fleet, lost: Option<Lost>) {
    let Some(lost) = lost else {
        return;
    };
    tokio::time::sleep_until((lost.superseded + fleet.limits().max_staleness).into()).await;
    let entries: Vec<(&str, &Version)> =
        lost.entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
    for i in 0..fleet.clients.len() {
        let results = fleet
            .check(i, &entries, false)
            .await
            .expect("check the lost versions");
        let current = results.iter().filter(|r| r.current).count();
        assert_eq!(
            current, 0,
            "sidecar {i} calls {current} versions current whose invalidations were lost"
        );
    }
}

/// The largest staleness a bounded answer through the proxied sidecar or its client mirror
/// showed (zero when none called a superseded version current).
fn proxied_staleness(report: &Report) -> Duration {
    [Via::Sidecar(PROXIED), Via::Mirror(PROXIED)]
        .iter()
        .filter_map(|via| report.max_staleness_by_source.get(via))
        .copied()
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_empty() {
    let o = run("sigkill+restart-empty", Fault::RestartEmpty).await;
    assert!(
        o.effect.cmd_reconnects >= 3.0,
        "every sidecar reconnects: {:?}",
        o.effect
    );
    assert!(
        o.effect.resyncs >= 3.0,
        "every sidecar drops its mirror (new epoch): {:?}",
        o.effect
    );
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_from_an_older_snapshot() {
    let o = run("sigkill+restore-snapshot", Fault::RestoreSnapshot).await;
    assert!(
        o.effect.cmd_reconnects >= 3.0,
        "every sidecar reconnects: {:?}",
        o.effect
    );
    assert!(
        o.effect.resyncs >= 3.0,
        "every sidecar drops its mirror (new epoch): {:?}",
        o.effect
    );
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_for_two_seconds() {
    let o = run("sigstop-2s", Fault::Pause(Duration::from_secs(2))).await;
    assert!(
        o.effect.fail_closed > 0.0,
        "checks failed closed while Redis was paused: {:?}",
        o.effect
    );
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_longer_than_the_stall_limit() {
    // No error reaches the client library while Redis is stopped: only the heartbeat fences
    // that stop coming back tell the subscription it is dead (stall limit 2 s here).
    let o = run("sigstop-4s", Fault::Pause(Duration::from_secs(4))).await;
    assert!(
        o.effect.fail_closed > 0.0,
        "checks failed closed while Redis was paused: {:?}",
        o.effect
    );
    assert!(
        o.effect.sub_reconnects >= 3.0,
        "every sidecar declared its silent subscription dead and resubscribed: {:?}",
        o.effect
    );
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_type_pubsub() {
    let o = run("client-kill-pubsub", Fault::KillPubsub).await;
    assert!(
        o.effect.sub_reconnects >= 3.0,
        "every subscription reconnects: {:?}",
        o.effect
    );
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_output_buffer_overflow() {
    let o = run("pubsub-buffer-overflow", Fault::PubsubOverflow).await;
    assert!(
        o.effect.sub_reconnects >= 1.0,
        "the burst cut subscriptions off: {:?}",
        o.effect
    );
    assert!(
        o.effect.gaps >= 1.0,
        "the lost invalidations were noticed: {:?}",
        o.effect
    );
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall() {
    let o = run("flushall", Fault::FlushAll).await;
    assert!(
        o.effect.resyncs >= 3.0,
        "every sidecar drops its mirror (new epoch): {:?}",
        o.effect
    );
    o.fleet.shutdown().await;
}

/// A sidecar shut down and started again on the same port mid-workload: its clients and its
/// client mirror reconnect by themselves. May fail on issue 11's first-sync bug: the mirror's
/// Watch stream reopens before the restarted sidecar is subscribed, and a bump made in that
/// window never reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_restarted_on_the_same_port() {
    let o = run(
        "sidecar-restart",
        Fault::RestartSidecar(Duration::from_millis(500)),
    )
    .await;
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_delayed_within_the_staleness_bound() {
    // Half of max_staleness (300 ms): the delayed fences still vouch for a mirror that has not
    // yet heard of recent bumps, so its answers are stale, within the bound.
    let delay = Duration::from_millis(150);
    let o = run(
        "subscription-delayed-150ms",
        Fault::Proxy(
            Link::Subscription,
            Flow::Delay(delay),
            Duration::from_secs(2),
        ),
    )
    .await;
    let stale = proxied_staleness(&o.report);
    assert!(
        !stale.is_zero(),
        "no answer through the delayed sidecar was stale: the bounded path was not exercised"
    );
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_delayed_beyond_the_staleness_bound() {
    // Twice max_staleness: the fences come back too old to vouch for the mirror, so the
    // delayed sidecar must stop answering from it and read Redis.
    let o = run(
        "subscription-delayed-600ms",
        Fault::Proxy(
            Link::Subscription,
            Flow::Delay(Duration::from_millis(600)),
            Duration::from_secs(2),
        ),
    )
    .await;
    let effect = o.proxied_effect.expect("proxied");
    assert!(
        effect.from_redis > 0.0,
        "the delayed sidecar went on answering from its mirror: {effect:?}"
    );
    o.fleet.shutdown().await;
}

/// No disconnect, no error: the invalidations to one sidecar just never arrive. Its own
/// fences still do, show the shard behind, and the gap is repaired from the replay log.
///
/// Fails now and then on this branch (2 of 4 runs), on a client mirror bug that
/// `lifecycle::a_mirror_never_goes_back_behind_its_own_bump` pins down: the client mirror of
/// that sidecar bumps a key, and the repair then delivers an older bump's invalidation of the
/// key, which the mirror takes as current ("bounded read … through m2 returned …, after a bump
/// through m2 itself superseded it").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_dropped_silently() {
    let o = run(
        "invalidations-dropped",
        Fault::DropInvalidations(Duration::from_secs(2)),
    )
    .await;
    let effect = o.proxied_effect.expect("proxied");
    let dropped = o.fleet.proxy(PROXIED).stats().invalidations_dropped;
    assert!(dropped > 0, "the proxy dropped no invalidation");
    assert!(
        effect.gaps > 0.0 && effect.repairs > 0.0,
        "the dropped invalidations were not noticed and repaired: {effect:?}"
    );
    assert_eq!(
        effect.sub_reconnects, 0.0,
        "the fault was meant to be silent: {effect:?}"
    );
    assert!(
        !proxied_staleness(&o.report).is_zero(),
        "no answer through the sidecar that lost invalidations was stale"
    );
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_stalled_while_fences_fail() {
    // Nothing comes back on the subscription (fences included) until the sidecar declares it
    // dead (no fence back for the 2 s stall limit): the mirror stops vouching after
    // max_staleness, and the subscription is made again once the stall ends.
    let o = run(
        "subscription-stalled",
        Fault::StallSubscriptionUntilDeclaredDead,
    )
    .await;
    let effect = o.proxied_effect.expect("proxied");
    assert!(
        effect.sub_reconnects >= 1.0,
        "the stalled subscription was not replaced: {effect:?}"
    );
    assert!(
        effect.from_redis + effect.fail_closed > 0.0,
        "the stalled sidecar went on answering from its mirror: {effect:?}"
    );
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_link_stalled() {
    // Replies to every command of one sidecar stall while its subscription flows: its bumps
    // time out (whether they happened is unknown: the scripts did reach Redis), checks its
    // mirror cannot answer fail closed, and nothing it says may be wrong meanwhile.
    let o = run(
        "command-link-stalled-2s",
        Fault::Proxy(Link::Command, Flow::Stall, Duration::from_secs(2)),
    )
    .await;
    let effect = o.proxied_effect.expect("proxied");
    assert!(
        effect.fail_closed > 0.0,
        "no check through the stalled sidecar failed closed: {effect:?}"
    );
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_mid_workload() {
    let o = run("cluster-master-failover", Fault::ClusterMasterFailover).await;
    assert!(
        o.effect.sub_reconnects >= 3.0,
        "every sidecar re-subscribed on the new topology: {:?}",
        o.effect
    );
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_slot_migration_mid_workload() {
    let o = run("cluster-slot-migration", Fault::ClusterSlotMigration).await;
    assert!(
        o.effect.sub_reconnects >= 3.0,
        "every sidecar noticed the moved slot and re-subscribed: {:?}",
        o.effect
    );
    o.fleet.shutdown().await;
}

/// Read leases on every sidecar (issue 18), short so that a holder that stops acknowledging
/// delays bumps briefly: strong checks through every sidecar are then answered from mirrors.
fn leased(s: &mut Settings) {
    s.read_lease_ms = 500;
}

/// Runs `fault` with read leases on every sidecar (the history checker judges every strong
/// answer, from sidecars' mirrors and client mirrors alike), asserts that both kinds of mirror
/// answered strong checks under a lease, prints the figures, and returns the run with the
/// number of bump calls that waited for a lease to run out.
async fn run_leased(name: &str, fault: Fault) -> (Outcome, f64) {
    let o = run_with(name, fault, leased).await;
    let sum = |metric: &str| -> f64 {
        o.fleet
            .sidecars
            .iter()
            .map(|s| fault_support::metric_of(s, metric))
            .sum()
    };
    let local = sum("coherence_strong_answers_total{source=\"mirror\"}");
    let waited = sum("coherence_bumps_waited_for_expiry_total");
    println!(
        "LEASES {name}: strong answers from sidecar mirrors {local}, from client mirrors {}, bumps that waited for an expiry {waited}",
        o.mirror_strong_local
    );
    assert!(local > 0.0, "no strong check was answered under a lease");
    assert!(
        o.mirror_strong_local > 0,
        "no client mirror answered a strong check under its lease"
    );
    (o, waited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_leases_with_a_holder_frozen() {
    // Sidecar 2 holds leases and keeps answering its clients while nothing it sends or receives
    // moves: bumps elsewhere must outwait its lease, and its strong answers must stop being
    // local when its lease runs out by its own clock — zero strong answers may miss a
    // completed bump (checked with everything else by the history checker).
    let (o, waited) = run_leased(
        "leases-holder-frozen-2s",
        Fault::FreezeLinks(Duration::from_secs(2)),
    )
    .await;
    assert!(
        waited >= 1.0,
        "no bump waited for the frozen holder's lease"
    );
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_leases_with_redis_paused() {
    // No holder can renew or acknowledge while Redis is stopped: grants run out by each
    // holder's own clock, client mirrors' with them, and strong checks fail closed or go to
    // Redis until the leases are taken again.
    let (o, _) = run_leased(
        "leases-redis-paused-2s",
        Fault::Pause(Duration::from_secs(2)),
    )
    .await;
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_leases_with_subscriptions_killed() {
    // Every holder's subscription is cut (CLIENT KILL TYPE pubsub): none can acknowledge until
    // it re-subscribed and resynced; bumps meanwhile wait for acknowledgements or expiries.
    let (o, _) = run_leased("leases-kill-pubsub", Fault::KillPubsub).await;
    o.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_leases_with_redis_restarted_empty() {
    // The lease tables are lost with the data: the new epoch's bumps wait out the quarantine.
    let (o, waited) = run_leased("leases-restart-empty", Fault::RestartEmpty).await;
    assert!(waited >= 1.0, "no bump waited out the quarantine");
    o.fleet.shutdown().await;
}
