//! The sidecar harness does what its docs promise: a ready sidecar on free ports whose gRPC and
//! admin addresses answer, settings that reach the sidecar, and a start that reports failure
//! instead of waiting forever.

use coherence_testkit::{Await, RedisServer, TestSidecar, TestSidecarError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_sidecar_is_ready_and_answers_on_both_addresses() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::start(&redis).await;
    assert!(sidecar.is_ready());
    assert_ne!(sidecar.grpc_addr().port(), 0);
    let readyz = sidecar.admin_get("/readyz").await.expect("admin answers");
    assert_eq!(readyz.status, 200, "{}", readyz.body);
    let client = sidecar.client().await;
    let versions = client.get(&["content"]).await.expect("Get answers");
    assert_eq!(versions.len(), 1);
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_settings_reach_the_sidecar() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("named")
        .namespace("harness")
        .start()
        .await;
    let seqs: Vec<String> = redis.cmd(&["KEYS", "coh:{harness:*:v:*"]).unwrap();
    let client = sidecar.client().await;
    client.bump(&["content"]).await.expect("Bump answers");
    let after: Vec<String> = redis.cmd(&["KEYS", "coh:{harness:*:v:*"]).unwrap();
    assert!(
        after.len() > seqs.len(),
        "a bump wrote under the namespace: {after:?}"
    );
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_cannot_become_ready_is_reported_not_awaited_forever() {
    let nobody = coherence_testkit::free_port();
    let started = TestSidecar::builder(&format!("redis://127.0.0.1:{nobody}"))
        .wait(Await::Started)
        .start()
        .await;
    assert!(!started.is_ready(), "no Redis, not ready");
    started.shutdown().await;
    let invalid = TestSidecar::builder("not a url").try_start().await;
    assert!(
        matches!(invalid, Err(TestSidecarError::Config(_))),
        "invalid settings are an error"
    );
}
