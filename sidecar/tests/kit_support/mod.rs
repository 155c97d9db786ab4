//! What the load-balancing tests (`kit_*`) share: their sidecars' settings (namespace `kit`).

use coherence_testkit::{Await, RedisServer, TestSidecar, TestSidecarBuilder};

/// A sidecar named `server_id` in namespace `kit` against `redis`; started, it waits only
/// for its Redis link (the load-balancing services need no shard fenced).
pub fn sidecar(redis: &RedisServer, server_id: &str) -> TestSidecarBuilder {
    TestSidecar::builder(&redis.url())
        .server_id(server_id)
        .namespace("kit")
        .wait(Await::Connected)
}
