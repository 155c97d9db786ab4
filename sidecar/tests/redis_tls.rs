//! `rediss://` with a private CA (`redis_ca_file`), against a real redis-server serving TLS
//! with certificates made for the test by `openssl`.

use std::time::Duration;

use coherence_testkit::tls::TestCertificates;
use coherence_testkit::{free_port, Await, RedisServer, TestSidecar};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_file_connects_and_without_it_is_refused() {
    let certs = TestCertificates::make();
    let tls_port = free_port();
    let tls_args = certs.redis_args(tls_port);
    let redis = RedisServer::start_with(&tls_args.iter().map(String::as_str).collect::<Vec<_>>());
    let url = format!("rediss://127.0.0.1:{tls_port}");

    let sidecar = TestSidecar::builder(&url)
        .settings(|s| s.redis_ca_file = Some(certs.ca()))
        .wait(Await::Started)
        .start()
        .await;
    assert!(
        sidecar.wait_ready(Duration::from_secs(20)).await,
        "not ready over TLS"
    );
    let keys = vec!["content".to_string()];
    let bumped = sidecar.versions.bump(&keys).await.expect("bump over TLS");
    let got = sidecar
        .versions
        .get(&keys, true)
        .await
        .expect("get over TLS");
    assert_eq!(bumped, got);
    // The bump really is in the Redis behind the TLS port.
    let version_keys: Vec<String> = redis.cmd(&["KEYS", "coh:{default:*}:v:content"]).unwrap();
    assert_eq!(version_keys.len(), 1, "{version_keys:?}");
    sidecar.shutdown().await;

    // Without the CA the server's certificate is not trusted: the sidecar never gets ready.
    let untrusting = TestSidecar::builder(&url)
        .wait(Await::Started)
        .start()
        .await;
    assert!(
        !untrusting.wait_ready(Duration::from_secs(3)).await,
        "connected to a server whose certificate no configured root signs"
    );
    untrusting.shutdown().await;
}
