//! coherence on Redis Sentinel: the sidecars find the master through the sentinels, follow a
//! failover, and a failover to a replica that missed the last bump never makes the superseded
//! (or the lost) version current again.

mod common;

use std::time::{Duration, Instant};

use coherence_client::Client;
use coherence_sidecar::Sidecar;
use coherence_testkit::RedisSentinels;
use common::topology::{assert_never_current, seen_everywhere};
use common::{grpc_url, start_sidecar_with, WAIT};

/// How long the fleet may take to serve from its mirrors again after the failover completed.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_lagging_replica_keeps_superseded_versions_stale_and_recovers() {
    let mut set = RedisSentinels::start();
    let mut sidecars: Vec<Sidecar> = Vec::new();
    let mut clients = Vec::new();
    for i in 0..3 {
        let sidecar = start_sidecar_with(&set.url(), &format!("s{i}"), |s| {
            s.namespace = "sent".into();
            s.shards = 4;
        })
        .await;
        clients.push(
            Client::connect(grpc_url(&sidecar))
                .await
                .unwrap()
                .with_timeout(Duration::from_secs(5)),
        );
        sidecars.push(sidecar);
    }
    let key = "content";
    let old = clients[0].get_one(key).await.unwrap();
    assert!(
        coherence_testkit::eventually(WAIT, || async {
            set.replica
                .cmd::<Option<String>>(&[
                    "GET",
                    &sidecars[0]
                        .state
                        .keyspace
                        .version_key(sidecars[0].state.keyspace.shard_of(key), key),
                ])
                .is_ok_and(|v| v.as_deref() == Some(old.token()))
        })
        .await,
        "the replica copied the old version"
    );
    // The replica snapshots and goes down, so it misses the bump; then the master dies and the
    // replica returns from its snapshot, to be promoted without the bump.
    let _: String = set.replica.cmd(&["SAVE"]).unwrap();
    set.replica.kill();
    let new = clients[1].bump(&[key]).await.unwrap().remove(0);
    assert!(
        seen_everywhere(&clients, key, &old, &new).await,
        "the bump reached every sidecar"
    );
    set.master.kill();
    set.replica.restart();
    let failover_started = Instant::now();
    assert!(
        coherence_testkit::eventually(Duration::from_secs(30), || async {
            set.master_port() == Some(set.replica.port())
        })
        .await,
        "the sentinels promoted the replica"
    );
    let failover_took = failover_started.elapsed();
    let stored: Option<String> = set
        .replica
        .cmd(&[
            "GET",
            &sidecars[0]
                .state
                .keyspace
                .version_key(sidecars[0].state.keyspace.shard_of(key), key),
        ])
        .unwrap();
    assert_eq!(
        stored.as_deref(),
        Some(old.token()),
        "the new master really lost the bump"
    );

    let recovery_started = Instant::now();
    // Checks answered by the new master itself (not failed closed while reconnecting) are
    // what could go wrong: wait until every sidecar serves from it again.
    assert!(
        coherence_testkit::eventually(RECOVERY_BOUND, || async {
            sidecars.iter().all(|s| s.state.is_ready())
        })
        .await,
        "the sidecars reconnected to the new master"
    );
    for superseded in [&old, &new] {
        assert_never_current(&sidecars, &clients, key, superseded, "after the failover").await;
    }
    let recovered = coherence_testkit::eventually(RECOVERY_BOUND, || async {
        let Ok(v) = clients[2].bump(&[key]).await else {
            return false;
        };
        seen_everywhere(&clients, key, &old, &v[0]).await
    })
    .await;
    assert!(
        recovered,
        "the fleet did not recover within {RECOVERY_BOUND:?}"
    );
    println!(
        "sentinel failover: promoted after {failover_took:?}; fleet serving from mirrors {:?} later",
        recovery_started.elapsed()
    );
    for s in sidecars {
        s.shutdown().await;
    }
}
