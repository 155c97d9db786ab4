//! Negative controls: each safety mechanism of the sidecar is turned off (the test-only switches
//! of `coherence_sidecar::fault_injection`, cargo feature `fault-injection`) and the fault it
//! exists for is driven exactly, so that the history checker of the fault suite
//! (`fault_support::history`) *must* report a violation; then the same scenario runs with the
//! mechanism on and the checker must report none. A mechanism whose control showed no violation
//! would be either untested or not needed (docs/faults.md, "Negative controls", says what each
//! control showed).
//!
//! Every scenario is deterministic: a version `v1` of one key is read, a completed bump supersedes
//! it (v2), the fault hides that bump from one sidecar (or rolls Redis back), and the test asks
//! that sidecar about `v1` once the answer may no longer be stale: strong checks at once,
//! bounded ones after `max_staleness` has passed since the bump. Each answer is recorded and
//! judged with the rest of the history.
//!
//! The switches are process-wide, so the controls run one at a time ([`SERIAL`]).

mod fault_support;

use std::future::Future;
use std::time::{Duration, Instant};

use coherence_client::{CheckSource, Client, Version, WatchEvent};
use coherence_sidecar::fault_injection::{disable, Mechanism};
use coherence_testkit::{eventually, Flow, Link, RedisProxy, RedisServer};
use fault_support::fleet::record_mirror_check;
use fault_support::history::{BumpRecord, Report};
use fault_support::{mirror_of, Backend, Fleet, Via};
use futures::StreamExt;

/// Bound on waits for something that must happen (a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(20);
/// Margin past `max_staleness` before a bounded answer is asked for: with it, a stale answer is
/// a violation however the checker rounds.
const PAST_BOUND: Duration = Duration::from_millis(100);
const KEY: &str = "page:1";

/// The controls share process-wide switches: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `scenario` with `mechanism` off, then on; the first must show violations, the second
/// none.
async fn control<F, Fut>(mechanism: Mechanism, scenario: F)
where
    F: Fn(bool) -> Fut,
    Fut: Future<Output = Report>,
{
    let _serial = SERIAL.lock().await;
    let off = {
        let _off = disable(mechanism);
        scenario(false).await
    };
    let on = scenario(true).await;
    println!(
        "CONTROL {mechanism:?}: off → {} violation(s), first {:?}; on → {}",
        off.violations.len(),
        off.violations.first(),
        on
    );
    assert!(
        !off.violations.is_empty(),
        "{mechanism:?} off: the checker saw no violation, so this control does not show the mechanism is needed ({off})"
    );
    on.assert_clean(&format!("{mechanism:?} on"));
}

/// Waits until sidecar `i` answers a bounded check of `version` "current" from its mirror
/// (recorded): the mirror knows the key and vouches for it.
async fn until_mirrored(fleet: &Fleet, i: usize, version: &Version) {
    let mirrored = eventually(WAIT, || async {
        matches!(
            fleet.check(i, &[(KEY, version)], false).await.as_deref(),
            Ok([r]) if r.current && r.source == CheckSource::Mirror
        )
    })
    .await;
    assert!(
        mirrored,
        "sidecar {i} never answered {version} from its mirror"
    );
}

/// Reads `KEY` through sidecar `i` (recorded) and returns its version.
async fn get(fleet: &Fleet, i: usize) -> Version {
    fleet.get(i, &[KEY], false).await.expect("get").remove(0)
}

/// Bumps `KEY` through sidecar `i` (recorded); returns the new version and when the bump
/// completed.
async fn bump(fleet: &Fleet, i: usize) -> (Version, Instant) {
    let version = fleet.bump(i, &[KEY]).await.expect("bump").remove(0);
    (version, Instant::now())
}

/// A bounded check of `version` through sidecar `i` once `max_staleness` has passed since
/// `superseded` (recorded); returns whether it answered current.
async fn bounded_check_after_the_bound(
    fleet: &Fleet,
    i: usize,
    version: &Version,
    superseded: Instant,
) -> bool {
    tokio::time::sleep_until((superseded + fleet.limits().max_staleness + PAST_BOUND).into()).await;
    let results = fleet.check(i, &[(KEY, version)], false).await;
    results.expect("bounded check")[0].current
}

/// Run-id rotation (Mechanism::Incarnation), fault: Redis restored from an older snapshot
/// while the fleet's only sidecar restarts, so that no sidecar that saw the lost bump's sequence
/// is left to notice that the sequence went back (the rollback check covers that case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_id_rotation() {
    control(Mechanism::Incarnation, |_| async {
        let mut fleet = Fleet::start(1, |_| {}).await;
        let v1 = get(&fleet, 0).await;
        tokio::task::block_in_place(|| fleet.redis().snapshot("earlier"));
        bump(&fleet, 0).await;
        fleet
            .restart_sidecar_with(0, Duration::ZERO, |backend| match backend {
                Backend::Standalone(redis) => redis.restore_snapshot("earlier"),
                Backend::Cluster(_) => unreachable!("a standalone fleet"),
            })
            .await;
        // Redis holds v1 again, with the epoch and sequence it had then.
        let strong = fleet.check(0, &[(KEY, &v1)], true).await.expect("check");
        let got = fleet.get(0, &[KEY], true).await.expect("get").remove(0);
        println!("  restored: strong check of v1 {strong:?}; strong get {got}");
        let report = fleet.history.analyse(&fleet.limits());
        fleet.shutdown().await;
        report
    })
    .await;
}

/// The rollback sequence check (Mechanism::RollbackCheck), fault: the data goes back in time
/// inside the same Redis process (`DEBUG RELOAD NOSAVE` of an older RDB), so the run id stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_sequence_check() {
    control(Mechanism::RollbackCheck, |_| async {
        let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
        let fleet = Fleet::start_on(Backend::Standalone(redis), 2, |_| {}).await;
        let v1 = get(&fleet, 0).await;
        let _: () = fleet.redis().cmd(&["SAVE"]).expect("SAVE");
        bump(&fleet, 1).await;
        let _: () = fleet
            .redis()
            .cmd(&["DEBUG", "RELOAD", "NOSAVE"])
            .expect("DEBUG RELOAD");
        // Sidecar 1 made the lost bump: it has seen its sequence.
        let strong = fleet.check(1, &[(KEY, &v1)], true).await.expect("check");
        println!("  rolled back: strong check of v1 through the bumper {strong:?}");
        let report = fleet.history.analyse(&fleet.limits());
        fleet.shutdown().await;
        report
    })
    .await;
}

/// How a bump is hidden from sidecar 1, which reaches Redis through a proxy.
#[derive(Debug, Clone, Copy)]
enum Hide {
    /// Its invalidation is dropped silently (no disconnect); fences keep coming back.
    DropInvalidation,
    /// The subscription is stalled (nothing comes back, fences included) for less than the
    /// stall limit, until the check.
    StallSubscription,
}

/// Sidecar 1 mirrors v1; a bump through sidecar 0 supersedes it, hidden from sidecar 1 as
/// `hide` says; once the bound has passed, a bounded check of v1 through sidecar 1.
async fn bump_hidden_from_a_sidecar(hide: Hide) -> Report {
    let fleet = Fleet::start_proxied(2, &[1], |_| {}).await;
    let v1 = get(&fleet, 1).await;
    until_mirrored(&fleet, 1, &v1).await;
    let proxy = fleet.proxy(1);
    let dropped = proxy.stats().invalidations_dropped;
    match hide {
        Hide::DropInvalidation => proxy.drop_invalidations(true),
        Hide::StallSubscription => proxy.set_flow(Link::Subscription, Flow::Stall),
    }
    let (_, superseded) = bump(&fleet, 0).await;
    if let Hide::DropInvalidation = hide {
        assert!(
            eventually(WAIT, || async {
                proxy.stats().invalidations_dropped > dropped
            })
            .await,
            "the bump's invalidation was not dropped"
        );
        proxy.drop_invalidations(false);
    }
    let current = bounded_check_after_the_bound(&fleet, 1, &v1, superseded).await;
    proxy.set_flow(Link::Subscription, Flow::Pass);
    println!("  {hide:?}: v1 current through sidecar 1 after the bound: {current}");
    let report = fleet.history.analyse(&fleet.limits());
    fleet.shutdown().await;
    report
}

/// Gap detection and repair (Mechanism::GapRepair), fault: one invalidation to sidecar 1 is
/// dropped silently by its proxy (no disconnect); its fences keep coming back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_detection_and_repair() {
    control(Mechanism::GapRepair, |_| {
        bump_hidden_from_a_sidecar(Hide::DropInvalidation)
    })
    .await;
}

/// The heartbeat fence's age limit (Mechanism::FenceAge), fault: sidecar 1's subscription is
/// stalled (nothing comes back, fences included) for less than the stall limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_fence() {
    control(Mechanism::FenceAge, |_| {
        bump_hidden_from_a_sidecar(Hide::StallSubscription)
    })
    .await;
}

/// Reconciliation (Mechanism::Reconciliation, every 200 ms here), fault: the key's version is
/// rewritten in Redis by hand — a change that takes no sequence and publishes nothing, recorded
/// as a bump that completed when the write did. Judged after five reconciliation intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation() {
    control(Mechanism::Reconciliation, |on| async move {
        let fleet = Fleet::start(1, |s| s.reconcile_interval_ms = 200).await;
        let v1 = get(&fleet, 0).await;
        until_mirrored(&fleet, 0, &v1).await;
        let epoch = v1.token().split('.').next().unwrap_or_default();
        let rewritten = format!("{epoch}.999999.00000000000000bb");
        let keyspace = &fleet.sidecars[0].state.keyspace;
        let vkey = keyspace.version_key(keyspace.shard_of(KEY), KEY);
        let start = Instant::now();
        let _: () = fleet.redis().cmd(&["SET", &vkey, &rewritten]).expect("SET");
        fleet.history.record_bump(BumpRecord {
            key: KEY.into(),
            start,
            end: Instant::now(),
            via: Vec::new(),
            outcome: Ok(Some(rewritten)),
        });
        if on {
            let corrected = eventually(WAIT, || async {
                fleet.metric("coherence_reconcile_mismatches_total") >= 1.0
            })
            .await;
            assert!(
                corrected,
                "reconciliation never corrected the rewritten key"
            );
        }
        // Five rounds of reconciliation (the length of the scenario).
        let window = Duration::from_millis(5 * fleet.settings.reconcile_interval_ms);
        tokio::time::sleep_until((start + window).into()).await;
        let current = bounded_check_after_the_bound(&fleet, 0, &v1, start).await;
        println!("  rewritten by hand: v1 current after five reconciliation intervals: {current}");
        let report = fleet.history.analyse(&fleet.limits());
        fleet.shutdown().await;
        report
    })
    .await;
}

/// The first-sync resync (Mechanism::FirstSyncResync), fault: a sidecar whose subscription
/// cannot come up yet serves `Get` and `Watch`; a client of its Watch stream fills `v1` from a
/// `Get`, another sidecar bumps the key (an invalidation nobody on this sidecar hears), then
/// the subscription comes up.
///
/// Two clients are judged: a `MirroredClient`, which refuses fills before the stream vouches
/// for itself, and a plain watch client that keeps every fill and follows the stream's events
/// (clear on `Resync`, replace on `Invalidated`) — what a client written against the watch
/// contract alone may do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_resync() {
    control(Mechanism::FirstSyncResync, |_| async {
        let mut fleet = Fleet::start(1, |_| {}).await;
        let proxy = RedisProxy::start(fleet.redis().port()).await;
        proxy.set_flow(Link::Subscription, Flow::Blackhole);
        let late = fleet.add_sidecar(Some(proxy)).await;
        let client: &Client = &fleet.clients[late];
        let mut stream = client.watch(&[]).await.expect("Watch is served early");
        let mirror = mirror_of(client, fleet.limits().max_staleness);
        let v1 = loop {
            // The late sidecar's command connection may still be coming up.
            if let Ok(mut versions) = fleet.get(late, &[KEY], false).await {
                break versions.remove(0);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut watched = Some(v1.clone());
        let filled = mirror.get_one(KEY).await.expect("get through the mirror");
        assert_eq!(filled, v1);
        assert!(!fleet.sidecars[late].is_ready(), "ready too early");
        let (_, superseded) = bump(&fleet, 0).await;
        fleet.proxy(late).set_flow(Link::Subscription, Flow::Pass);
        assert!(fleet.wait_ready(WAIT).await, "the late sidecar never got ready");

        // The watch client follows its stream until past the bound, and at least up to the
        // first heartbeat that vouches.
        let judge_at = superseded + fleet.limits().max_staleness + PAST_BOUND;
        let mut vouched = false;
        while !vouched || Instant::now() < judge_at {
            let event = tokio::time::timeout(WAIT, stream.next())
                .await
                .expect("a watch event")
                .expect("the stream stays open")
                .expect("a good event");
            match event {
                WatchEvent::Resync { .. } => watched = None,
                WatchEvent::Invalidated { key, version, .. } if key == KEY => {
                    watched = Some(version)
                }
                WatchEvent::Heartbeat {
                    fence_age: Some(_), ..
                } => vouched = true,
                _ => {}
            }
        }
        let start = Instant::now();
        let current = watched.as_ref() == Some(&v1);
        record_mirror_check(
            &fleet.history,
            Via::Mirror(late + 1),
            false,
            KEY,
            v1.token(),
            start,
            current,
        );
        let start = Instant::now();
        let mirror_current = mirror.is_current(KEY, &v1).await;
        record_mirror_check(
            &fleet.history,
            Via::Mirror(late),
            false,
            KEY,
            v1.token(),
            start,
            mirror_current,
        );
        println!(
            "  first sync: the watch client calls v1 current {current}, the MirroredClient {mirror_current}"
        );
        let report = fleet.history.analyse(&fleet.limits());
        fleet.shutdown().await;
        report
    })
    .await;
}

/// Acknowledgements that wait for client mirrors (Mechanism::MirrorAckWait), fault: none needed
/// — a client mirror holding a read lease from sidecar 0 is asked, at once, about the version a
/// bump through sidecar 1 just superseded. Off, sidecar 0 acknowledges the bump before its
/// mirror applied it, the bump completes, and the mirror answers the old version current from
/// its own memory under its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_lease_acknowledgement_wait() {
    // Off, about one round in thirty showed the old version (the mirror applies the
    // invalidation within microseconds of the bump's completion): off, rounds go on until one
    // did (at most 5,000); on, 200 rounds must show none.
    control(Mechanism::MirrorAckWait, |on| async move {
        let fleet = Fleet::start(2, |s| s.read_lease_ms = 500).await;
        fleet.settle_lease_quarantines().await;
        let mirror = mirror_of(&fleet.clients[0], fleet.limits().max_staleness);
        let mut current = get(&fleet, 0).await;
        let leased = eventually(WAIT, || async {
            let hits = mirror.stats().strong_hits;
            mirror
                .is_current_with(KEY, &current, coherence_client::Consistency::Strong)
                .await
                && mirror.stats().strong_hits > hits
        })
        .await;
        assert!(leased, "the mirror never answered strong under a lease");
        let rounds = if on { 200 } else { 5_000 };
        for round in 1..=rounds {
            if !on
                && round % 50 == 0
                && !fleet.history.analyse(&fleet.limits()).violations.is_empty()
            {
                break;
            }
            let (next, _) = bump(&fleet, 1).await;
            let start = Instant::now();
            let answer = mirror
                .is_current_with(KEY, &current, coherence_client::Consistency::Strong)
                .await;
            record_mirror_check(
                &fleet.history,
                Via::Mirror(0),
                true,
                KEY,
                current.token(),
                start,
                answer,
            );
            current = next;
            // Filled, so that the next round's old version is known to the mirror.
            mirror
                .is_current_with(KEY, &current, coherence_client::Consistency::Strong)
                .await;
        }
        let report = fleet.history.analyse(&fleet.limits());
        fleet.shutdown().await;
        report
    })
    .await;
}
