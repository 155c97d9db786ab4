//! A sidecar whose Redis user may do everything but subscribe, for the watch contract's "not
//! yet subscribed" (tests/watch_contract.rs, and the conformance scenario of the same name).

use coherence_testkit::{Await, RedisServer, TestSidecar};

/// A sidecar named `early` on `redis` that answers `Get` and serves `Watch` but cannot
/// subscribe (so it never becomes ready), until [`allow_subscribe`].
pub async fn sidecar_that_cannot_subscribe(redis: &RedisServer) -> TestSidecar {
    TestSidecar::builder(&user_without_subscribe(redis))
        .server_id("early")
        .wait(Await::Started)
        .start()
        .await
}

/// A Redis user that may do everything the sidecar needs except subscribe: a sidecar started
/// with it answers `Get` and serves `Watch` but cannot subscribe (the watch contract's "not yet
/// subscribed"), until [`allow_subscribe`].
fn user_without_subscribe(redis: &RedisServer) -> String {
    let _: String = redis
        .cmd(&[
            "ACL",
            "SETUSER",
            "early",
            "on",
            ">early-password",
            "~*",
            "&*",
            "+@all",
            "-subscribe",
            "-ssubscribe",
            "-psubscribe",
        ])
        .expect("ACL SETUSER");
    format!("redis://early:early-password@127.0.0.1:{}", redis.port())
}

pub fn allow_subscribe(redis: &RedisServer) {
    let _: String = redis
        .cmd(&["ACL", "SETUSER", "early", "+subscribe", "+ssubscribe"])
        .expect("ACL SETUSER +subscribe");
}
