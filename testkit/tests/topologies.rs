//! The test topologies really form, fail over and move slots.

use std::time::Duration;

use coherence_testkit::cluster::key_slot;
use coherence_testkit::{RedisCluster, RedisSentinels};

#[test]
fn key_slot_matches_redis() {
    let cluster = RedisCluster::start(3, 0);
    for key in ["content", "coh:{app:3}:seq", "{user1000}.following"] {
        let slot: u16 = cluster.nodes()[0]
            .cmd(&["CLUSTER", "KEYSLOT", key])
            .unwrap();
        assert_eq!(key_slot(key), slot, "{key}");
    }
    let slot = key_slot("coh:{app:3}:seq");
    let from = cluster.master_of_slot(slot).unwrap();
    let to = (0..3).find(|i| *i != from).unwrap();
    cluster.move_slot(slot, to);
    assert_eq!(cluster.master_of_slot(slot), Some(to));
}

#[test]
fn cluster_master_fails_over_to_its_replica() {
    let mut cluster = RedisCluster::start(3, 1);
    let slot = key_slot("x");
    let killed = cluster.fail_over_slot(slot, Duration::from_secs(30));
    assert_ne!(cluster.master_of_slot(slot), Some(killed));
}

#[test]
fn sentinels_promote_the_replica() {
    let mut set = RedisSentinels::start();
    assert_eq!(set.master_port(), Some(set.master.port()));
    set.kill_master_and_wait_failover(Duration::from_secs(30));
    assert_eq!(set.master_port(), Some(set.replica.port()));
}
