//! Who can call the gRPC API. Over a Unix socket (`listen = unix:///path`) no TCP port is
//! open at all and file permissions decide (0660); the client crate and `coherencectl` reach
//! it by `unix://` address. On a listener others can reach, `auth_token_file` makes every call
//! carry a bearer token: without it or with a wrong one the call is refused UNAUTHENTICATED
//! before any service runs, health checks excepted; the client crate and `coherencectl` send
//! it when configured.

mod common {
    pub mod ctl;
}

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use coherence_client::{AuthToken, Client, Consistency};
use coherence_sidecar::process::listen::ListenAddr;
use coherence_testkit::{RedisServer, TestSidecar};
use common::ctl::{coherencectl, stderr, stdout};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_listener_serves_the_client_and_coherencectl_and_is_removed_at_shutdown() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("grpc.sock");
    // A stale socket file, as a crashed sidecar leaves it: replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let addr = format!("unix://{}", socket.display());

    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("unix")
        .settings(|s| {
            s.listen = addr.parse().unwrap();
        })
        .start()
        .await;
    assert_eq!(sidecar.grpc_listen, ListenAddr::Unix(socket.clone()));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");

    let client = Client::connect(&addr)
        .await
        .expect("connect over the socket");
    let bumped = client.bump(&["content"]).await.unwrap().remove(0);
    let read = client
        .get_with(&["content"], Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(read[0], bumped);
    let lazy = Client::connect_lazy(&addr).unwrap();
    assert_eq!(lazy.get(&["content"]).await.unwrap()[0], bumped);
    // The servers registry advertises the socket.
    let role = client.servers().role().await.unwrap();
    assert_eq!(role.server_id, "unix");

    let got = coherencectl(&addr, &["get", "content"]).await;
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    assert!(stdout(&got).contains(bumped.token()), "{}", stdout(&got));
    let servers = coherencectl(&addr, &["--json", "servers"]).await;
    assert_eq!(servers.status.code(), Some(0), "{}", stderr(&servers));
    assert!(stdout(&servers).contains(&addr), "{}", stdout(&servers));

    // A second sidecar must not take a live socket over.
    let refused = TestSidecar::builder(&redis.url())
        .server_id("second")
        .listen(addr.parse::<ListenAddr>().unwrap())
        .try_start()
        .await;
    let err = refused
        .err()
        .expect("a live socket was taken over")
        .to_string();
    assert!(err.contains("another process listens"), "{err}");
    assert_eq!(client.get(&["content"]).await.unwrap()[0], bumped);

    sidecar.shutdown().await;
    assert!(!socket.exists(), "the socket file outlived the sidecar");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_token_file_every_call_needs_the_bearer_token_and_health_does_not() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let token = "0123456789abcdef-coherence-token";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let wrong_file = dir.path().join("wrong");
    std::fs::write(&wrong_file, "0123456789abcdef-something-else\n").unwrap();

    // Beyond loopback, as a shared network would reach it.
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("token")
        .settings(|s| {
            s.listen = "0.0.0.0:0".parse().unwrap();
            s.auth_token_file = Some(token_file.clone());
        })
        .start()
        .await;
    let addr = format!("http://127.0.0.1:{}", sidecar.grpc_addr.port());

    let anonymous = Client::connect(&addr).await.unwrap();
    let wrong = Client::connect(&addr)
        .await
        .unwrap()
        .with_auth_token(AuthToken::from_file(&wrong_file).unwrap());
    for client in [&anonymous, &wrong] {
        let refused = client.bump(&["content"]).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
        assert!(refused.to_string().contains("bearer token"), "{refused}");
        let refused = client.get(&["content"]).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
        let refused = client.servers().role().await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    }
    // Refusals are counted like any other final status.
    let metrics = sidecar.admin_get("/metrics").await.unwrap().body;
    let refused_bumps = metrics.lines().any(|l| {
        l.starts_with("coherence_grpc_requests_total{")
            && l.contains("method=\"Bump\"")
            && l.contains("code=\"UNAUTHENTICATED\"")
    });
    assert!(refused_bumps, "{metrics}");
    // Health answers anyone (probes cannot send headers).
    let channel = tonic::transport::Endpoint::from_shared(addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");

    let trusted = Client::connect(&addr)
        .await
        .unwrap()
        .with_auth_token(AuthToken::new(token).unwrap())
        .with_timeout(Duration::from_secs(5));
    let bumped = trusted.bump(&["content"]).await.unwrap().remove(0);
    assert_eq!(trusted.get_one("content").await.unwrap(), bumped);
    assert_eq!(trusted.servers().role().await.unwrap().server_id, "token");
    let lease = trusted
        .jobs()
        .try_acquire("nightly", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        matches!(lease, coherence_client::Acquired::Granted(_)),
        "the job lease was not granted: {lease:?}"
    );
    // The token never shows in the client's Debug.
    assert!(!format!("{trusted:?}").contains(token));

    let token_arg = token_file.to_str().unwrap();
    let refused = coherencectl(&addr, &["get", "content"]).await;
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        stderr(&refused).contains("bearer token"),
        "{}",
        stderr(&refused)
    );
    for args in [
        vec!["--auth-token-file", token_arg, "get", "content"],
        vec!["--auth-token-file", token_arg, "servers"],
    ] {
        let ok = coherencectl(&addr, &args).await;
        assert_eq!(ok.status.code(), Some(0), "{args:?}: {}", stderr(&ok));
    }
    sidecar.shutdown().await;

    // A token too short to resist guessing is a configuration error naming the setting.
    std::fs::write(&wrong_file, "short\n").unwrap();
    let mut s = coherence_sidecar::Config::defaults();
    s.auth_token_file = Some(wrong_file.clone());
    let err = coherence_sidecar::Config::validate(s)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("auth_token_file") && !err.contains("short\n"),
        "{err}"
    );
}
