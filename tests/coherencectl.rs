//! The real `coherencectl` binary against a sidecar: `bump content` then
//! `check content <old>` prints that the version is stale and exits 1; the other exit codes
//! and `--json` output are what the README promises.

mod common {
    pub mod ctl;
}

use std::time::Duration;

use coherence_testkit::{RedisServer, TestSidecar, WAIT};
use common::ctl::{coherencectl, stderr, stdout};

/// `coherencectl get KEY` prints `KEY  TOKEN`; the token.
fn token_of(line: &str, key: &str) -> String {
    let mut fields = line.split_whitespace();
    assert_eq!(fields.next(), Some(key), "{line:?}");
    fields.next().expect("a token after the key").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bump_then_check_of_the_old_version_prints_stale_and_exits_1() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::start_named(&redis, "ctl").await;
    let addr = sidecar.grpc_url();

    let got = coherencectl(&addr, &["get", "content"]).await;
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    let old = token_of(&stdout(&got), "content");

    let bumped = coherencectl(&addr, &["bump", "content"]).await;
    assert_eq!(bumped.status.code(), Some(0), "{}", stderr(&bumped));
    let bumped = stdout(&bumped);
    assert!(bumped.starts_with("bumped content"), "{bumped}");
    let new = bumped.split_whitespace().last().unwrap().to_string();
    assert_ne!(old, new);

    let stale = coherencectl(&addr, &["check", "content", &old]).await;
    let text = stdout(&stale);
    println!("{text}");
    assert_eq!(stale.status.code(), Some(1), "stale exits 1: {text}");
    assert!(text.contains("STALE"), "{text}");
    assert!(text.contains(&format!("{old} is not current")), "{text}");
    assert!(text.contains(&format!("current is {new}")), "{text}");

    let strong = coherencectl(&addr, &["check", "--strong", "content", &old]).await;
    assert_eq!(strong.status.code(), Some(1), "{}", stdout(&strong));
    assert!(stdout(&strong).contains("STALE"));

    let current = coherencectl(&addr, &["check", "content", &new]).await;
    assert_eq!(current.status.code(), Some(0), "{}", stdout(&current));
    assert!(stdout(&current).contains("current"), "{}", stdout(&current));

    // One stale entry among current ones is enough for exit 1.
    let mixed = coherencectl(&addr, &["check", "content", &new, "content", &old]).await;
    assert_eq!(mixed.status.code(), Some(1), "{}", stdout(&mixed));
    assert_eq!(stdout(&mixed).lines().count(), 2);

    let json = coherencectl(&addr, &["--json", "check", "content", &old]).await;
    assert_eq!(json.status.code(), Some(1));
    let parsed: serde_json::Value = serde_json::from_str(stdout(&json).trim()).unwrap();
    assert_eq!(parsed["key"], "content");
    assert_eq!(parsed["version"], old.as_str());
    assert_eq!(parsed["current"], false);
    assert_eq!(parsed["current_version"], new.as_str());

    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_for_rejected_input_unreachable_sidecar_and_bad_usage() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::start_named(&redis, "ctl-errors").await;
    let addr = sidecar.grpc_url();

    let rejected = coherencectl(&addr, &["get", "content", ""]).await;
    assert_eq!(rejected.status.code(), Some(2));
    assert!(
        stderr(&rejected).contains("keys[1]"),
        "{}",
        stderr(&rejected)
    );

    let odd = coherencectl(&addr, &["check", "content", "v1", "media"]).await;
    assert_eq!(odd.status.code(), Some(2), "{}", stderr(&odd));

    let usage = coherencectl(&addr, &["no-such-command"]).await;
    assert_eq!(usage.status.code(), Some(2));

    let port = coherence_testkit::free_port();
    let nobody = coherencectl(&format!("http://127.0.0.1:{port}"), &["get", "content"]).await;
    assert_eq!(nobody.status.code(), Some(3), "{}", stderr(&nobody));
    assert!(
        stderr(&nobody).contains("cannot connect"),
        "{}",
        stderr(&nobody)
    );

    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_one_json_object_per_invalidation() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::start_named(&redis, "ctl-watch").await;
    let addr = sidecar.grpc_url();
    let watcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_coherencectl"))
        .args([
            "--addr", &addr, "--json", "watch", "--count", "2", "content",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = coherence_client::Client::connect(&addr).await.unwrap();
    let wait_output = watcher.wait_with_output();
    tokio::pin!(wait_output);
    // The watcher subscribes at some point after it starts: bump (a key it ignores, then one
    // it follows) every 100 ms until it has seen two invalidations and exits.
    let output = tokio::time::timeout(WAIT, async {
        loop {
            client.bump(&["media", "content"]).await.unwrap();
            tokio::select! {
                done = &mut wait_output => return done.unwrap(),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    })
    .await
    .expect("watch --count 2 exits after two invalidations");
    assert_eq!(output.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["event"], "invalidated");
        assert_eq!(
            line["key"], "content",
            "the prefix filter lets only content through"
        );
        assert!(line["version"].as_str().is_some_and(|v| !v.is_empty()));
    }
    sidecar.shutdown().await;
}
