//! `coherencectl servers`, `role` and `jobs` against real sidecars and Redis.

mod common {
    pub mod ctl;
}

use coherence_testkit::{RedisServer, TestSidecar, WAIT};
use common::ctl::{coherencectl, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_role_and_jobs_subcommands_show_the_kit() {
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "ctl-a").await;
    let b = TestSidecar::start_named(&redis, "ctl-b").await;
    let (on_a, on_b) = (a.grpc_url(), b.grpc_url());

    // Both registered (default refresh 1 s): the list shows both and one leader.
    let listed = coherence_testkit::eventually(WAIT, || {
        let on_a = on_a.clone();
        async move {
            let out = stdout(&coherencectl(&on_a, &["servers"]).await);
            out.lines().count() == 2 && out.contains("ctl-b") && out.contains("(leader)")
        }
    })
    .await;
    assert!(
        listed,
        "{}",
        stdout(&coherencectl(&on_a, &["servers"]).await)
    );
    // B works its role out on its own refresh (every second), so it may still be SINGLE for a
    // moment after the list, read fresh from Redis, shows both servers.
    let role_of_b = || async {
        let role = coherencectl(&on_b, &["--json", "role"]).await;
        assert_eq!(role.status.code(), Some(0), "{}", stderr(&role));
        serde_json::from_str::<serde_json::Value>(stdout(&role).trim()).unwrap()
    };
    let two_servers = coherence_testkit::eventually(WAIT, || async {
        let parsed = role_of_b().await;
        ["SCHEDULING_PUBLISHER", "SUBSCRIBER"].contains(&parsed["role"].as_str().unwrap_or(""))
    })
    .await;
    let parsed = role_of_b().await;
    assert!(two_servers, "{parsed}");
    assert_eq!(parsed["server_id"], "ctl-b");

    let got = coherencectl(
        &on_a,
        &["--json", "jobs", "acquire", "nightly", "--ttl-ms", "60000"],
    )
    .await;
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    let lease: serde_json::Value = serde_json::from_str(stdout(&got).trim()).unwrap();
    assert_eq!(lease["holder"], "ctl-a");
    let token = lease["fencing_token"].as_u64().unwrap().to_string();
    let held = coherencectl(&on_b, &["jobs", "acquire", "nightly"]).await;
    assert_eq!(held.status.code(), Some(1), "held: exit 1");
    assert!(stdout(&held).contains("held by ctl-a"), "{}", stdout(&held));
    let renewed = coherencectl(&on_b, &["jobs", "renew", "nightly", &token]).await;
    assert_eq!(renewed.status.code(), Some(0), "{}", stderr(&renewed));
    let released = coherencectl(&on_a, &["jobs", "release", "nightly", &token]).await;
    assert_eq!(released.status.code(), Some(0), "{}", stderr(&released));
    let stale = coherencectl(&on_a, &["jobs", "renew", "nightly", &token]).await;
    assert_eq!(stale.status.code(), Some(1), "a stale token: exit 1");
    assert!(stdout(&stale).contains("stale"), "{}", stdout(&stale));

    let run = coherencectl(
        &on_a,
        &[
            "jobs",
            "claim",
            "report",
            "--period-ms",
            "60000",
            "--lease-ms",
            "100",
        ],
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", stdout(&run));
    assert!(stdout(&run).contains("run now"), "{}", stdout(&run));
    let again = coherencectl(&on_b, &["jobs", "claim", "report", "--period-ms", "60000"]).await;
    assert_eq!(again.status.code(), Some(1), "{}", stdout(&again));
    assert!(
        stdout(&again).contains("not now (running)"),
        "{}",
        stdout(&again)
    );
    a.shutdown().await;
    b.shutdown().await;
}
