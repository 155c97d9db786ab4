//! coherence on a real local Redis Cluster: shards spread over the masters, invalidations on
//! sharded channels, and the guarantees kept through a master failover (to a replica that
//! missed the last bump) and a slot migration; over TLS with a private CA, the masters the
//! cluster client discovers are checked against that CA too.
//!
//! Run only these: `cargo test --test redis_cluster --test redis_sentinel`.

mod common {
    pub mod topology;
}

use std::time::Duration;

use coherence_client::{CheckSource, Client, Consistency};
use coherence_testkit::cluster::key_slot;
use coherence_testkit::tls::TestCertificates;
use coherence_testkit::{RedisCluster, TestSidecar, WAIT};
use common::topology::{assert_never_current, seen_everywhere};

async fn fleet(cluster: &RedisCluster, n: usize) -> (Vec<TestSidecar>, Vec<Client>) {
    fleet_with(cluster, n, 0).await
}

/// [`fleet`], with `read_lease_ms` set on every sidecar.
async fn fleet_with(
    cluster: &RedisCluster,
    n: usize,
    read_lease_ms: u64,
) -> (Vec<TestSidecar>, Vec<Client>) {
    let mut sidecars = Vec::new();
    let mut clients = Vec::new();
    for i in 0..n {
        let sidecar = TestSidecar::builder(&cluster.url())
            .server_id(&format!("s{i}"))
            .settings(|s| {
                s.namespace = "cl".into();
                s.shards = 8;
                s.read_lease_ms = read_lease_ms;
                // No canary bumps: the lease test counts the bumps that waited for holders.
                s.canary_interval_ms = 0;
            })
            .start()
            .await;
        clients.push(
            Client::connect(sidecar.grpc_url())
                .await
                .unwrap()
                .with_timeout(Duration::from_secs(10)),
        );
        sidecars.push(sidecar);
    }
    (sidecars, clients)
}

/// One key per shard (by the sidecar's own shard function).
fn key_per_shard(sidecar: &TestSidecar) -> Vec<String> {
    let ks = &sidecar.state.keyspace;
    let mut keys: Vec<Option<String>> = vec![None; ks.shard_count() as usize];
    let mut i = 0;
    while keys.iter().any(Option::is_none) {
        let key = format!("item:{i}");
        let shard = ks.shard_of(&key) as usize;
        keys[shard].get_or_insert(key);
        i += 1;
    }
    keys.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bumps_on_every_shard_reach_every_sidecar_over_sharded_channels() {
    let cluster = RedisCluster::start(3, 0);
    let (sidecars, clients) = fleet(&cluster, 3).await;
    let keys = key_per_shard(&sidecars[0]);
    let masters: std::collections::BTreeSet<usize> = (0..8)
        .filter_map(|s| {
            cluster.master_of_slot(key_slot(&sidecars[0].state.keyspace.shard_keys(s).seq))
        })
        .collect();
    assert!(
        masters.len() > 1,
        "the shards spread over several masters: {masters:?}"
    );
    for key in &keys {
        let old = clients[0].get_one(key).await.unwrap();
        let new = clients[1].bump(&[key]).await.unwrap().remove(0);
        assert!(
            seen_everywhere(&clients, key, &old, &new).await,
            "bump of {key} not seen by every sidecar"
        );
    }
    // Sharded pub/sub only: the channel has 3 shard subscribers on its master and no classic one.
    let channel = sidecars[0].state.keyspace.shard_keys(0).channel;
    let owner = cluster.master_of_slot(key_slot(&channel)).unwrap();
    let node = &cluster.nodes()[owner];
    let shard_subs: Vec<redis::Value> = node.cmd(&["PUBSUB", "SHARDNUMSUB", &channel]).unwrap();
    assert_eq!(
        redis::from_redis_value::<i64>(shard_subs[1].clone()).unwrap(),
        3
    );
    let classic: Vec<redis::Value> = node.cmd(&["PUBSUB", "NUMSUB", &channel]).unwrap();
    assert_eq!(
        redis::from_redis_value::<i64>(classic[1].clone()).unwrap(),
        0
    );
    for s in sidecars {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_leases_on_a_cluster_answer_strong_locally_and_bumps_wait_for_the_holder() {
    // One grant, acknowledgement and prune script call per shard (one slot each), on the
    // shard's master, with sharded pub/sub carrying the acknowledgements.
    let cluster = RedisCluster::start(3, 0);
    let (sidecars, clients) = fleet_with(&cluster, 2, 1_000).await;
    for key in key_per_shard(&sidecars[0]) {
        let old = clients[0].get_one(&key).await.unwrap();
        let local = coherence_testkit::eventually(WAIT, || async {
            let r = clients[0]
                .check(&[(key.as_str(), &old)], Consistency::Strong)
                .await
                .unwrap()
                .remove(0);
            r.current && r.source == CheckSource::Mirror
        })
        .await;
        assert!(local, "{key}: never answered strong from the mirror");
        let new = clients[1].bump(&[&key]).await.unwrap().remove(0);
        let r = clients[0]
            .check(&[(key.as_str(), &old)], Consistency::Strong)
            .await
            .unwrap()
            .remove(0);
        assert!(!r.current, "{key}: a completed bump missed: {r:?}");
        assert_eq!(r.version.as_ref(), Some(&new), "{key}: {r:?}");
    }
    // Every bump ended on the holder's acknowledgement, none on its expiry.
    let metrics = sidecars[1].state.metrics.encode();
    assert_eq!(
        coherence_testkit::metric_sum(&metrics, "coherence_bumps_waited_for_expiry_total"),
        0.0
    );
    assert_eq!(
        coherence_testkit::metric_sum(&metrics, "coherence_bump_ack_wait_seconds_count"),
        8.0
    );
    for s in sidecars {
        s.shutdown().await;
    }
}

/// Only one node in the URL: the other masters are discovered from `CLUSTER SLOTS`, and their
/// certificates (signed by the private CA, not a web PKI root) must be checked against
/// `redis_ca_file` as the named node's is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_cluster_checks_the_masters_it_discovers_against_the_configured_ca() {
    let certs = TestCertificates::make();
    let cluster = RedisCluster::start_tls(3, 0, &certs);
    let url = format!("rediss+cluster://127.0.0.1:{}", cluster.client_port(0));
    let sidecar = TestSidecar::builder(&url)
        .server_id("tls-cluster")
        .settings(|s| {
            s.namespace = "tlscl".into();
            s.shards = 8;
            s.redis_ca_file = Some(certs.ca());
        })
        .start()
        .await;
    let masters: std::collections::BTreeSet<usize> = (0..8)
        .filter_map(|s| cluster.master_of_slot(key_slot(&sidecar.state.keyspace.shard_keys(s).seq)))
        .collect();
    assert!(
        masters.iter().any(|m| *m != 0),
        "some shards live on a master the URL does not name: {masters:?}"
    );
    let client = Client::connect(sidecar.grpc_url())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    for key in key_per_shard(&sidecar) {
        let bumped = client.bump(&[&key]).await.unwrap().remove(0);
        let read = client
            .get_with(&[&key], coherence_client::Consistency::Strong)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(read, bumped, "{key}");
    }
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_replica_that_missed_the_bump_keeps_the_old_version_stale() {
    let mut cluster = RedisCluster::start(3, 1);
    let (sidecars, clients) = fleet(&cluster, 3).await;
    let key = key_per_shard(&sidecars[0]).remove(0);
    let slot = key_slot(
        &sidecars[0]
            .state
            .keyspace
            .shard_keys(sidecars[0].state.keyspace.shard_of(&key))
            .seq,
    );
    let old = clients[0].get_one(&key).await.unwrap();
    // Let the replica copy `old`, then freeze it so that it misses the bump.
    let master = cluster.master_of_slot(slot).unwrap();
    let replica = (0..cluster.nodes().len())
        .find(|&i| {
            i != master
                && cluster.nodes()[i]
                    .cmd::<String>(&["INFO", "replication"])
                    .is_ok_and(|info| {
                        info.contains(&format!("master_port:{}", cluster.nodes()[master].port()))
                    })
        })
        .expect("the master has a replica");
    let offset_synced = coherence_testkit::eventually(WAIT, || async {
        let m: String = cluster.nodes()[master]
            .cmd(&["INFO", "replication"])
            .unwrap();
        let r: String = cluster.nodes()[replica]
            .cmd(&["INFO", "replication"])
            .unwrap();
        let off = |info: &str, field: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(field))
                .map(|v| v.trim().to_string())
        };
        off(&m, "master_repl_offset:") == off(&r, "slave_repl_offset:")
    })
    .await;
    assert!(
        offset_synced,
        "the replica caught up before the test froze it"
    );
    // The replica saves what it has and goes down: it misses the bump below. Then the master
    // dies and the replica comes back from its snapshot — and is promoted, missing the bump.
    let _: String = cluster.nodes()[replica].cmd(&["SAVE"]).unwrap();
    cluster.node_mut(replica).kill();
    let new = clients[1].bump(&[&key]).await.unwrap().remove(0);
    assert!(seen_everywhere(&clients, &key, &old, &new).await);

    cluster.node_mut(master).kill();
    cluster.node_mut(replica).restart();
    assert!(
        coherence_testkit::eventually(Duration::from_secs(30), || async {
            cluster.master_of_slot(slot) == Some(replica) && cluster.is_healthy()
        })
        .await,
        "the lagging replica was promoted"
    );
    let stored: Option<String> = cluster.nodes()[replica]
        .cmd(&[
            "GET",
            &sidecars[0]
                .state
                .keyspace
                .version_key(sidecars[0].state.keyspace.shard_of(&key), &key),
        ])
        .unwrap();
    assert_eq!(
        stored.as_deref(),
        Some(old.token()),
        "the promoted replica really went back to the old version"
    );

    assert_never_current(&sidecars, &clients, &key, &old, "after failover").await;
    assert_never_current(
        &sidecars,
        &clients,
        &key,
        &new,
        "after failover (lost bump)",
    )
    .await;
    // Recovery: bumps work again and reach every mirror.
    let recovered = coherence_testkit::eventually(Duration::from_secs(30), || async {
        let Ok(v) = clients[2].bump(&[&key]).await else {
            return false;
        };
        let newest = v[0].clone();
        seen_everywhere(&clients, &key, &old, &newest).await
    })
    .await;
    assert!(recovered, "the fleet recovered after the failover");
    for s in sidecars {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_migration_keeps_invalidations_flowing() {
    let cluster = RedisCluster::start(3, 0);
    let (sidecars, clients) = fleet(&cluster, 3).await;
    let ks = &sidecars[0].state.keyspace;
    let key = key_per_shard(&sidecars[0]).remove(0);
    let slot = key_slot(&ks.shard_keys(ks.shard_of(&key)).seq);
    let old = clients[0].get_one(&key).await.unwrap();
    let from = cluster.master_of_slot(slot).unwrap();
    let to = (0..3).find(|&i| i != from).unwrap();
    cluster.move_slot(slot, to);
    assert_eq!(cluster.master_of_slot(slot), Some(to));
    let new = clients[1].bump(&[&key]).await.unwrap().remove(0);
    assert!(
        seen_everywhere(&clients, &key, &old, &new).await,
        "a bump after the slot moved reaches every sidecar (re-subscribed on the new owner)"
    );
    assert_never_current(&sidecars, &clients, &key, &old, "after migration").await;
    let owner = &cluster.nodes()[to];
    let channel = ks.shard_keys(ks.shard_of(&key)).channel;
    let subs: Vec<redis::Value> = owner.cmd(&["PUBSUB", "SHARDNUMSUB", &channel]).unwrap();
    assert_eq!(
        redis::from_redis_value::<i64>(subs[1].clone()).unwrap(),
        3,
        "every sidecar re-subscribed on the new owner"
    );
    for s in sidecars {
        s.shutdown().await;
    }
}
