//! Targeted fault tests: gap repair from the replay log, `Resync` when a gap is beyond it (and
//! that watchers hear it), and coalescing of concurrent strong checks and bumps into a few Redis
//! calls.
//!
//! Gaps are caused for real: the test Redis's pub/sub output-buffer limit is made tiny and one
//! bump of several hundred keys of one shard (one script, one burst of publishes) makes Redis
//! cut every subscriber off mid-burst. The invalidations that were never delivered are the gap.

mod fault_support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use coherence_client::{CheckSource, Consistency, Version, WatchEvent};
use coherence_testkit::RedisServer;
use fault_support::{keys_of_one_shard, metric_of, Backend, Fleet};
use futures::StreamExt;

/// Collects Watch events until every key in `expect` was seen invalidated to its version (or a
/// Resync arrives, or `limit` passes). Returns (invalidations seen, resync reasons).
async fn watch_until(
    stream: &mut coherence_client::WatchStream,
    expect: &HashMap<String, Version>,
    stop_at_resync: bool,
    limit: Duration,
) -> (usize, Vec<String>) {
    let mut seen = HashMap::new();
    let mut resyncs = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while let Some(event) = stream.next().await {
            match event.expect("watch event") {
                WatchEvent::Invalidated { key, version, .. } => {
                    if expect.get(&key) == Some(&version) {
                        seen.insert(key, version);
                    }
                }
                WatchEvent::Resync { reason } => {
                    resyncs.push(reason);
                    if stop_at_resync {
                        return;
                    }
                }
                WatchEvent::Heartbeat { .. } => {}
            }
            if seen.len() == expect.len() {
                return;
            }
        }
    })
    .await;
    (seen.len(), resyncs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_inside_the_replay_log_is_repaired_without_resync() {
    let fleet = Fleet::start(2, |_| {}).await;
    let b = &fleet.sidecars[1];
    let keys = keys_of_one_shard(&fleet.settings, 400);
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    // B mirrors the keys' current versions.
    let old = fleet.clients[1].get(&names).await.unwrap();
    let mut watch = fleet.clients[1].watch(&["burst:"]).await.unwrap();
    let before = (
        metric_of(b, "coherence_gaps_detected_total"),
        metric_of(b, "coherence_repairs_from_log_total"),
    );

    let new = fleet.burst_with_tiny_pubsub_buffers(&keys).await;
    let recovery = fleet.wait_recovered(Duration::from_secs(10)).await;
    assert!(recovery.is_some(), "the fleet did not recover");

    let expect: HashMap<String, Version> = keys.iter().cloned().zip(new.iter().cloned()).collect();
    let (delivered, resyncs) =
        watch_until(&mut watch, &expect, false, Duration::from_secs(10)).await;
    let gaps = metric_of(b, "coherence_gaps_detected_total") - before.0;
    let repairs = metric_of(b, "coherence_repairs_from_log_total") - before.1;
    println!(
        "GAP INSIDE LOG: recovery {recovery:?}, gaps {gaps}, repairs from log {repairs}, watch invalidations {delivered}/{}, resyncs {resyncs:?}",
        keys.len()
    );
    assert!(
        b.state
            .metrics
            .redis_reconnects
            .get_or_create(&[("connection", "subscription")])
            .get()
            >= 1,
        "the burst did not cut B's subscription off"
    );
    assert!(
        gaps >= 1.0 && repairs >= 1.0,
        "gaps {gaps}, repairs {repairs}"
    );
    // (One `first_sync` resync per sidecar start is expected; none for the gap.)
    for reason in ["gap_beyond_log", "epoch_changed"] {
        let resyncs = b
            .state
            .metrics
            .resyncs
            .get_or_create(&[("reason", reason)])
            .get();
        assert_eq!(resyncs, 0, "no resync ({reason})");
    }
    assert!(
        resyncs.is_empty(),
        "watchers were told to resync: {resyncs:?}"
    );
    assert_eq!(
        delivered,
        keys.len(),
        "every invalidation reached the watcher, repaired ones too"
    );

    // B's mirror was repaired, not dropped: it answers both ways itself.
    let entries: Vec<(&str, &Version)> = names.iter().copied().zip(new.iter()).collect();
    let results = fleet.clients[1]
        .check(&entries, Consistency::Bounded)
        .await
        .unwrap();
    assert!(
        results
            .iter()
            .all(|r| r.current && r.source == CheckSource::Mirror),
        "new versions current from the mirror"
    );
    let entries: Vec<(&str, &Version)> = names.iter().copied().zip(old.iter()).collect();
    let results = fleet.clients[1]
        .check(&entries, Consistency::Bounded)
        .await
        .unwrap();
    assert!(
        results
            .iter()
            .all(|r| !r.current && r.source == CheckSource::Mirror),
        "old versions stale from the mirror"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_beyond_the_replay_log_resyncs_and_watchers_hear_it() {
    let fleet = Fleet::start(2, |s| s.replay_log_len = 10).await;
    let b = &fleet.sidecars[1];
    // More than the capped stream can keep even with approximate trimming (whole nodes of 100).
    let keys = keys_of_one_shard(&fleet.settings, 600);
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let old = fleet.clients[1].get(&names).await.unwrap();
    let mut watch = fleet.clients[1].watch(&[]).await.unwrap();

    let new = fleet.burst_with_tiny_pubsub_buffers(&keys).await;
    let expect: HashMap<String, Version> = keys.iter().cloned().zip(new.iter().cloned()).collect();
    let (_, resyncs) = watch_until(&mut watch, &expect, true, Duration::from_secs(10)).await;
    let recovery = fleet.wait_recovered(Duration::from_secs(10)).await;
    let beyond_log = b
        .state
        .metrics
        .resyncs
        .get_or_create(&[("reason", "gap_beyond_log")])
        .get();
    println!("GAP BEYOND LOG: recovery {recovery:?}, resyncs(gap_beyond_log) {beyond_log}, watch resyncs {resyncs:?}");
    assert!(recovery.is_some(), "the fleet did not recover");
    assert!(
        beyond_log >= 1,
        "B dropped the shard because the log no longer held the gap"
    );
    assert_eq!(
        resyncs,
        vec!["gap_beyond_log".to_string()],
        "the watcher was told to resync"
    );

    // Whatever B answers now is right: old versions stale, new ones current.
    let entries: Vec<(&str, &Version)> = names.iter().copied().zip(old.iter()).collect();
    let results = fleet.clients[1]
        .check(&entries, Consistency::Bounded)
        .await
        .unwrap();
    assert!(
        results.iter().all(|r| !r.current),
        "no old version is current after the resync"
    );
    let entries: Vec<(&str, &Version)> = names.iter().copied().zip(new.iter()).collect();
    let results = fleet.clients[1]
        .check(&entries, Consistency::Bounded)
        .await
        .unwrap();
    assert!(
        results.iter().all(|r| r.current),
        "the new versions are current"
    );
    fleet.shutdown().await;
}

/// Whether, within `limit`, `client`'s sidecar answers from its mirror that `version` of `key`
/// is current (`current = true`) or not.
async fn mirror_answers(
    client: &coherence_client::Client,
    key: &str,
    version: &Version,
    current: bool,
    limit: Duration,
) -> bool {
    coherence_testkit::eventually(limit, || async {
        matches!(client.check(&[(key, version)], Consistency::Bounded).await,
            Ok(r) if r[0].current == current && r[0].source == CheckSource::Mirror)
    })
    .await
}

/// `calls` of EVALSHA and EVAL so far, from `INFO commandstats`.
fn script_calls(fleet: &Fleet) -> u64 {
    let info: String = fleet.redis().cmd(&["INFO", "commandstats"]).expect("INFO");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Settings under which the sidecar makes no script call of its own while a test counts them:
/// no heartbeat fence after the first, no reconciliation, no server-registry refresh, no canary
/// bump or audit read.
fn no_background_script_calls(s: &mut coherence_sidecar::process::config::Settings) {
    // The observer's canary bumps and audit reads are Redis calls of their own too.
    s.canary_interval_ms = 0;
    s.audit_sample_rate = 0.0;
    s.heartbeat_interval_ms = 600_000;
    s.max_staleness_ms = 1_200_000;
    s.reconcile_interval_ms = 600_000;
    s.server_refresh_ms = 600_000;
    s.lease_ms = 1_800_000;
    s.server_ttl_ms = 1_800_000;
}

/// Awaits `calls` — `n` calls into `batcher` — started as nearly at once as a test can: Redis is
/// paused (SIGSTOP) while they begin, so the first batch stays in flight until all `n` have
/// begun, and then resumed. Without the pause, how many batches a burst makes depends on how fast
/// this busy 2-core box starts the calls compared with one Redis round trip, which is noise, not
/// coalescing.
async fn with_all_begun<T>(
    fleet: &Fleet,
    batcher: &coherence_sidecar::versions::batcher::Batcher,
    n: u64,
    calls: impl std::future::Future<Output = T>,
) -> T {
    let before = batcher.calls_begun();
    fleet.redis().pause();
    let (out, all_begun) = tokio::join!(calls, async {
        // Well inside the sidecar's 2 s Redis response timeout.
        let all = coherence_testkit::eventually(Duration::from_secs(1), || async {
            batcher.calls_begun() - before >= n
        })
        .await;
        fleet.redis().resume();
        all
    });
    assert!(all_begun, "the {n} calls did not all begin within 1 s");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_strong_checks_cost_a_handful_of_redis_calls() {
    let fleet = Fleet::start(1, |s| {
        no_background_script_calls(s);
        // Latency is not the point here: no check may fail closed because the box is busy.
        s.check_deadline_ms = 10_000;
    })
    .await;
    let versions = &fleet.sidecars[0].versions;
    let hot = vec!["content".to_string()];
    let token = versions.get(&hot, true).await.unwrap()[0].to_string();
    let spread: Vec<String> = (0..200).map(|i| format!("entity:{i}")).collect();
    let spread_tokens = versions.get(&spread, true).await.unwrap();

    // 1,000 strong checks of one hot key (one cache version per entity type, as Umbraco does).
    let before = script_calls(&fleet);
    let checks = (0..1_000).map(|_| {
        let entry = [(hot[0].clone(), token.clone())];
        async move { versions.check(&entry, true).await }
    });
    let outcomes = with_all_begun(
        &fleet,
        versions.reader(),
        1_000,
        futures::future::join_all(checks),
    )
    .await;
    let hot_calls = script_calls(&fleet) - before;
    assert!(outcomes
        .iter()
        .all(|o| o[0].current && o[0].source == coherence_sidecar::versions::CheckSource::Redis));

    // 1,000 strong checks spread over 200 keys in every shard: still one script call per batch
    // (every shard of a standalone Redis in one call).
    let before = script_calls(&fleet);
    let checks = (0..1_000).map(|i| {
        let k = i % spread.len();
        let entry = [(spread[k].clone(), spread_tokens[k].to_string())];
        async move { versions.check(&entry, true).await }
    });
    let outcomes = with_all_begun(
        &fleet,
        versions.reader(),
        1_000,
        futures::future::join_all(checks),
    )
    .await;
    let spread_calls = script_calls(&fleet) - before;
    assert!(outcomes.iter().all(|o| o[0].current));

    // The same through gRPC: 1,000 calls in flight over 4 channels.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(
            coherence_client::Client::connect(format!("http://{}", fleet.sidecars[0].grpc_addr))
                .await
                .unwrap()
                .with_timeout(Duration::from_secs(10)),
        );
    }
    let version = Version::from_token(token.clone());
    let before = script_calls(&fleet);
    let checks = (0..1_000).map(|i| {
        let client = clients[i % clients.len()].clone();
        let version = version.clone();
        async move {
            client
                .check(&[("content", &version)], Consistency::Strong)
                .await
        }
    });
    let outcomes = with_all_begun(
        &fleet,
        versions.reader(),
        1_000,
        futures::future::join_all(checks),
    )
    .await;
    let grpc_calls = script_calls(&fleet) - before;
    let answered_current = outcomes
        .iter()
        .filter(|o| o.as_ref().is_ok_and(|r| r[0].current))
        .count();
    assert_eq!(
        answered_current, 1_000,
        "every gRPC strong check answered current"
    );

    let shards = u64::from(fleet.settings.shards);
    println!(
        "STRONG COALESCING: 1000 strong checks -> script calls: one hot key {hot_calls}, 200 keys over {shards} shards {spread_calls}, one hot key through gRPC {grpc_calls}"
    );
    // One call per batch, two batches: the first, in flight while the others began, and one
    // with all of those. Without coalescing: 1,000 calls; one call per shard: up to 2 x shards.
    assert!(hot_calls <= 2, "one hot key: {hot_calls} script calls");
    assert!(spread_calls <= 2, "200 keys: {spread_calls} script calls");
    assert!(grpc_calls <= 2, "through gRPC: {grpc_calls} script calls");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_bumps_share_script_calls_and_each_supersedes_the_past() {
    let fleet = Fleet::start(1, no_background_script_calls).await;
    let versions = &fleet.sidecars[0].versions;
    let keys: Vec<String> = (0..200).map(|i| format!("entity:{i}")).collect();
    let before_burst = versions.get(&keys, true).await.unwrap();

    let before = script_calls(&fleet);
    let bumps = (0..1_000).map(|i| {
        let key = vec![keys[i % keys.len()].clone()];
        async move { versions.bump(&key).await }
    });
    let results = with_all_begun(
        &fleet,
        versions.bumper(),
        1_000,
        futures::future::join_all(bumps),
    )
    .await;
    let calls = script_calls(&fleet) - before;

    let mut issued: HashMap<&str, HashSet<String>> = HashMap::new();
    for (i, result) in results.iter().enumerate() {
        let key = &keys[i % keys.len()];
        let version = &result.as_ref().expect("every bump succeeds")[0];
        assert_ne!(
            &*version.version,
            &*before_burst[i % keys.len()].version,
            "{key}: a bump returned the version from before it"
        );
        issued.entry(key).or_default().insert(version.to_string());
    }
    let stale: Vec<(String, String)> = keys
        .iter()
        .cloned()
        .zip(before_burst.iter().map(|v| v.to_string()))
        .collect();
    let outcomes = versions.check(&stale, true).await;
    assert!(
        outcomes.iter().all(|o| !o.current),
        "a version from before the burst is still current"
    );
    let now = versions.get(&keys, true).await.unwrap();
    for (key, current) in keys.iter().zip(&now) {
        assert!(
            issued[key.as_str()].contains(&*current.version),
            "{key}: the current version {current} was returned by none of its bumps"
        );
    }
    println!("BUMP COALESCING: 1000 concurrent bumps of 200 keys -> {calls} script calls");
    // One call per batch, two batches (see `with_all_begun`); 1,000 calls if bumps were not
    // coalesced, up to 2 x shards with one call per shard.
    assert!(calls <= 2, "{calls} script calls for 1,000 bumps");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_key_deleted_by_hand_means_everything_changed() {
    let fleet = Fleet::start(2, |_| {}).await;
    let (a, b) = (&fleet.clients[0], &fleet.clients[1]);
    let v1 = a.get_one("member:7").await.unwrap();
    let v2 = a.bump(&["member:7"]).await.unwrap().remove(0);
    // B mirrors v2.
    assert!(b
        .is_current("member:7", &v2, Consistency::Strong)
        .await
        .unwrap());
    let keyspace = coherence_sidecar::redis::keyspace::Keyspace::new(
        &fleet.settings.namespace,
        fleet.settings.shards,
    );
    let vkey = keyspace.version_key(keyspace.shard_of("member:7"), "member:7");
    let deleted: i64 = fleet.redis().cmd(&["DEL", &vkey]).unwrap();
    assert_eq!(deleted, 1);
    // Neither the superseded token nor the deleted one is current: a new version is issued.
    assert!(!a
        .is_current("member:7", &v1, Consistency::Strong)
        .await
        .unwrap());
    assert!(!a
        .is_current("member:7", &v2, Consistency::Strong)
        .await
        .unwrap());
    let v3 = a.get_one("member:7").await.unwrap();
    assert!(
        v3 != v1 && v3 != v2,
        "never version 0, never a reissue: {v3}"
    );
    // The new version was published like a bump: B's mirror learns it and drops v2.
    assert!(
        mirror_answers(b, "member:7", &v2, false, Duration::from_secs(5)).await,
        "B's mirror still vouches for the deleted version"
    );
    fleet.shutdown().await;
}

/// Guarantee 1 when Redis's data goes back in time inside the same process — a master demoted,
/// resynced from a replica that lacked its last writes and promoted again, or (as here) an RDB
/// reloaded in place with `DEBUG RELOAD`. The run id does not change, so only the sequence can
/// tell: a sidecar that has seen a higher one in the same epoch makes the script start a new
/// epoch, and the version the lost bump superseded is not current again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_rolled_back_in_the_same_redis_process_does_not_make_a_superseded_version_current() {
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let fleet = Fleet::start_on(Backend::Standalone(redis), 2, |_| {}).await;
    let (a, b) = (&fleet.clients[0], &fleet.clients[1]);
    let v1 = a.get_one("page:1").await.unwrap();
    let _: () = fleet.redis().cmd(&["SAVE"]).expect("SAVE");
    let v2 = b.bump(&["page:1"]).await.unwrap().remove(0);
    // A has seen the bump (its sequence) before the data goes back.
    assert!(
        mirror_answers(a, "page:1", &v1, false, Duration::from_secs(5)).await,
        "A never heard of the bump"
    );
    let _: () = fleet
        .redis()
        .cmd(&["DEBUG", "RELOAD", "NOSAVE"])
        .expect("DEBUG RELOAD");

    for (name, client) in [("A", a), ("B", b)] {
        let results = client
            .check(&[("page:1", &v1), ("page:1", &v2)], Consistency::Strong)
            .await
            .unwrap();
        assert!(
            !results[0].current,
            "{name}: the version the lost bump superseded is current again"
        );
        assert!(!results[1].current, "{name}: the lost version is current");
    }
    // Strong: a bounded Get may still answer from A's mirror, which learns of the new epoch with
    // its next fence (stamping with that version only costs a miss later).
    let v3 = a
        .get_with(&["page:1"], Consistency::Strong)
        .await
        .unwrap()
        .remove(0);
    assert!(
        v3 != v1 && v3 != v2,
        "a new version after the rollback: {v3}"
    );
    fleet.shutdown().await;
}

/// Reconciliation, the last line of defence: a version rewritten in Redis by hand changes no
/// sequence and publishes nothing, so heartbeats cannot notice it; only the periodic comparison
/// with Redis can. Without it the mirror would vouch for the old version forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_corrects_a_version_rewritten_by_hand() {
    let fleet = Fleet::start(1, |s| s.reconcile_interval_ms = 200).await;
    let client = &fleet.clients[0];
    let v1 = client.get_one("page:1").await.unwrap();
    assert!(
        mirror_answers(client, "page:1", &v1, true, Duration::from_secs(5)).await,
        "the mirror vouches for v1"
    );
    // Same epoch, so Redis itself now treats the rewritten token as the current version.
    let epoch = v1.token().split('.').next().unwrap().to_string();
    let rewritten = format!("{epoch}.999999.byhand");
    let keyspace = &fleet.sidecars[0].state.keyspace;
    let vkey = keyspace.version_key(keyspace.shard_of("page:1"), "page:1");
    let _: () = fleet.redis().cmd(&["SET", &vkey, &rewritten]).unwrap();
    assert!(
        mirror_answers(client, "page:1", &v1, false, Duration::from_secs(10)).await,
        "the mirror kept vouching for a version Redis no longer holds"
    );
    assert!(fleet.metric("coherence_reconcile_mismatches_total") >= 1.0);
    let current = Version::from_token(rewritten);
    let r = client
        .check(&[("page:1", &current)], Consistency::Bounded)
        .await
        .unwrap();
    assert!(
        r[0].current,
        "the mirror learnt the rewritten version: {r:?}"
    );
    fleet.shutdown().await;
}

/// Heartbeat fences scale with the fleet, not with fleet × shards × fleet: one script call
/// fences every shard of a standalone Redis, and it comes back only to its sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fence_covers_every_shard_and_reaches_only_its_sender() {
    let fleet = Fleet::start(3, no_background_script_calls).await;
    let state = fleet.sidecars[0].versions.state();
    // Every shard fenced by a fence sent after `asked_at`.
    let fence_round = |asked_at: std::time::Instant| async move {
        state.fences.fence_now();
        coherence_testkit::eventually(Duration::from_secs(5), || async {
            let now = std::time::Instant::now();
            state
                .mirror
                .oldest_fence_age(now)
                .is_some_and(|age| age <= now - asked_at)
        })
        .await
    };
    // A first round lets any fence still in flight from start-up land before counting.
    assert!(
        fence_round(std::time::Instant::now()).await,
        "no fence came back"
    );
    let before = script_calls(&fleet);
    assert!(
        fence_round(std::time::Instant::now()).await,
        "no fence came back"
    );
    let calls = script_calls(&fleet) - before;
    assert_eq!(calls, 1, "one fence round for all shards, one script call");

    for sidecar in &fleet.sidecars {
        let state = sidecar.versions.state();
        let groups = state.keyspace.fence_groups(&state.settings.server_id);
        assert_eq!(groups.len(), 1, "one fence group on a standalone Redis");
        let channel = &groups[0].channel;
        let subscribers: (String, u64) = fleet
            .redis()
            .cmd(&["PUBSUB", "NUMSUB", channel])
            .expect("PUBSUB NUMSUB");
        assert_eq!(subscribers.1, 1, "{channel}: only its sender listens");
    }
    fleet.shutdown().await;
}
