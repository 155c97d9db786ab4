//! `rediss://` with a private CA (`redis_ca_file`), against a real redis-server serving TLS
//! with certificates made for the test by `openssl`.

mod ops;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use coherence_testkit::{free_port, RedisServer};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is not installed: `apt-get install openssl` (bash .ci/run installs it)");
    assert!(
        status.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=coherence test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_file_connects_and_without_it_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let tls_port = free_port();
    let path = |name: &str| certs.path().join(name).to_str().unwrap().to_string();
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path("server.crt"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");

    let mut s = ops::settings(&url);
    s.redis_ca_file = certs.path().join("ca.crt");
    let sidecar = ops::start(s).await;
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
    let untrusting = ops::start(ops::settings(&url)).await;
    assert!(
        !untrusting.wait_ready(Duration::from_secs(3)).await,
        "connected to a server whose certificate no configured root signs"
    );
    untrusting.shutdown().await;
}
