//! The real `coherence-sidecar` binary: a bad configuration (flag, TOML file, environment
//! variable) exits 64 naming the setting; a Redis password never reaches its output — not for
//! any form of `redis_url` with any parse error, nor in the log lines of failing connections;
//! logs carry no colour escapes off a terminal and come as JSON lines on request; SIGTERM
//! drops readiness, ends open Watch streams with a final status and exits within the drain
//! bound even while a client holds a stream open; out of file descriptors it pauses accepting
//! instead of spinning, and serves again once they are free.

use std::process::Output;
use std::time::{Duration, Instant};

use coherence_testkit::sentinel::SentinelOptions;
use coherence_testkit::{
    eventually, http_get, metric_sum, RedisCluster, RedisSentinels, RedisServer, SidecarProcess,
    SidecarProcessBuilder,
};
use futures::StreamExt;
use tokio::process::Command;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const WAIT: Duration = Duration::from_secs(20);
const PASSWORD: &str = "hunter2";

const BINARY: &str = env!("CARGO_BIN_EXE_coherence-sidecar");

/// The sidecar binary with no `COHERENCE_*` variable inherited from the test's environment.
fn sidecar_command() -> Command {
    let mut command = Command::from(coherence_testkit::process::sidecar_command(BINARY));
    command.kill_on_drop(true);
    command
}

/// Runs the binary to completion (within [`WAIT`]).
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = sidecar_command();
    // Port 0 (flags and the given variables win over these): a configuration accepted by
    // mistake serves on free ports, not the defaults, until the timeout fails the test.
    command
        .env("COHERENCE_LISTEN", "127.0.0.1:0")
        .env("COHERENCE_ADMIN_LISTEN", "127.0.0.1:0")
        .args(args)
        .envs(env.iter().copied());
    tokio::time::timeout(WAIT, command.output())
        .await
        .expect("the sidecar exits in time")
        .expect("the sidecar binary runs")
}

#[track_caller]
fn assert_config_error(output: &Output, names: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("configuration error"), "{stderr}");
    assert!(stderr.contains(names), "{stderr:?} does not name {names:?}");
    assert!(!stderr.contains(PASSWORD), "the password leaked: {stderr}");
}

#[tokio::test]
async fn bad_configuration_exits_64_naming_the_setting() {
    assert_config_error(&run(&["--no-such-flag"], &[]).await, "--no-such-flag");
    assert_config_error(&run(&["--shards", "0"], &[]).await, "shards");
    assert_config_error(&run(&["--listen", "nowhere"], &[]).await, "--listen");
    assert_config_error(
        &run(&["--redis-url", "redis//:hunter2@127.0.0.1:1"], &[]).await,
        "redis_url",
    );

    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let unquoted = file(
        "unquoted.toml",
        "redis_url = redis://:hunter2@127.0.0.1:1\n",
    );
    assert_config_error(&run(&["--config", &unquoted], &[]).await, "redis_url");
    let wrong_type = file("type.toml", "namespace = \"app\"\nshards = \"many\"\n");
    let output = run(&["--config", &wrong_type], &[]).await;
    assert_config_error(&output, "line 2 (shards)");
    let unknown = file("unknown.toml", "shard = 4\n");
    assert_config_error(&run(&["--config", &unknown], &[]).await, "shard");
    let missing = dir.path().join("missing.toml");
    assert_config_error(
        &run(&["--config", missing.to_str().unwrap()], &[]).await,
        "missing.toml",
    );

    assert_config_error(&run(&[], &[("COHERENCE_SHARDS", "many")]).await, "--shards");
    assert_config_error(
        &run(&[], &[("COHERENCE_MAX_KEY_BYTES", "0")]).await,
        "max_key_bytes",
    );
    assert_config_error(
        &run(&[], &[("COHERENCE_MAX_STALENESS_MS", "50")]).await,
        "max_staleness_ms",
    );
    assert_config_error(
        &run(&["--redis-scripts", "lua"], &[]).await,
        "redis_scripts",
    );
    // Below 1 MiB the quarter kept for small requests would not hold four of them.
    assert_config_error(
        &run(&[], &[("COHERENCE_REQUEST_BUFFER_BYTES", "1048575")]).await,
        "request_buffer_bytes",
    );
}

/// `functions load` takes the sidecar's Redis settings: a bad one exits 64 naming it, an
/// unreachable Redis exits 1 naming the library and the Redis (never its password), a bad
/// action is a usage error (64); `functions print` prints the library.
#[tokio::test]
async fn functions_load_exits_64_on_bad_settings_and_1_when_redis_cannot_be_reached() {
    assert_config_error(
        &run(
            &["functions", "load", "--redis-url", "redis//:hunter2@h:1"],
            &[],
        )
        .await,
        "redis_url",
    );
    let usage = run(&["functions", "unload"], &[]).await;
    assert_eq!(usage.status.code(), Some(64), "{usage:?}");
    let unreachable = run(
        &[
            "functions",
            "load",
            "--redis-url",
            &format!("redis://:{PASSWORD}@127.0.0.1:1"),
        ],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(1), "{stderr}");
    let library = coherence_sidecar::redis::scripts::library_name();
    assert!(stderr.contains(&library), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "the password leaked: {stderr}");
    let printed = run(&["functions", "print"], &[]).await;
    assert!(printed.status.success());
    assert!(
        String::from_utf8_lossy(&printed.stdout).starts_with(&format!("#!lua name={library}\n"))
    );
}

/// A marker password: it must appear nowhere in any output.
const MARKER: &str = "Mark3r-Pw";

/// Every `redis_url` form, well-formed or broken in each way its parser can refuse, each with
/// the marker as its password, and whether the sidecar accepts it (`--print-config` prints it).
fn url_forms() -> Vec<(String, bool)> {
    let m = MARKER;
    let mut forms = vec![
        // The two reported leaks: an unencoded '/' in the password.
        (format!("redis+sentinel://u:{m}/ss@127.0.0.1:26379/m"), true),
        (format!("redis+cluster://u:{m}/x@h:1,h:2"), true),
        (format!("redis://u:{m}/x@127.0.0.1:1"), true),
        (format!("redis://:{m}@127.0.0.1:1/0"), true),
        (format!("redis://u:{m}%40x@127.0.0.1:1"), true),
        (format!("unix:///tmp/redis.sock?user=u&pass={m}&db=1"), true),
        (format!("redis//:{m}@127.0.0.1:1"), false),
        (format!("http://u:{m}@127.0.0.1:1"), false),
        (format!("redis+foo://u:{m}@127.0.0.1:1"), false),
        (format!("redis://u:{m}%ff@127.0.0.1:1"), false),
        (format!("redis://u:{m}@127.0.0.1:port"), false),
        (format!("redis://u:{m}@127.0.0.1:1/db"), false),
        (format!("redis://u:{m}@0.0.0.0:1"), false),
        (format!("redis://u:{m}@127.0.0.1:1/?protocol=9"), false),
        (format!("redis://u:{m}@/0"), false),
        (format!("unix:///tmp/redis.sock?pass={m}&db=x"), false),
        (format!("unix://?pass={m}"), false),
    ];
    for scheme in ["redis+sentinel", "rediss+sentinel"] {
        forms.extend([
            (
                format!("{scheme}://u:{m}@127.0.0.1:1,127.0.0.1:2/master"),
                true,
            ),
            (format!("{scheme}://u:{m}@127.0.0.1:x/master"), false),
            (format!("{scheme}://u:{m}@127.0.0.1/master"), false),
            (format!("{scheme}://u:{m}@127.0.0.1:1"), false),
            (format!("{scheme}://u:{m}@/master"), false),
            (format!("{scheme}://u:{m}@:1,/master"), false),
            (format!("{scheme}://u:{m}%ff@127.0.0.1:1/master"), false),
        ]);
    }
    for scheme in ["redis+cluster", "rediss+cluster"] {
        forms.extend([
            (format!("{scheme}://u:{m}@127.0.0.1:1,127.0.0.1:2"), true),
            (format!("{scheme}://u:{m}@127.0.0.1:1,127.0.0.1:x"), false),
            (format!("{scheme}://u:{m}@127.0.0.1"), false),
            (format!("{scheme}://u:{m}@"), false),
            (format!("{scheme}://u:{m}@,"), false),
            (format!("{scheme}://u:{m}@0.0.0.0:1"), false),
        ]);
    }
    forms.extend([
        (format!("rediss://u:{m}@127.0.0.1:1"), true),
        (format!("rediss://u:{m}@127.0.0.1:1/#bad"), false),
        (format!("rediss://u:{m}/x@127.0.0.1:port"), false),
    ]);
    forms
}

#[track_caller]
fn assert_no_marker(what: &str, output: &Output) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !text.contains(MARKER),
        "{what}: the password leaked: {text}"
    );
    assert!(
        !text.contains("panicked"),
        "{what}: the sidecar panicked: {text}"
    );
}

#[tokio::test]
async fn no_form_of_redis_url_prints_its_password_whatever_is_wrong_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "no certificate here\n").unwrap();
    let not_pem = not_pem.to_str().unwrap();
    for (url, accepted) in url_forms() {
        let printed = run(&["--redis-url", &url, "--print-config"], &[]).await;
        assert_no_marker(&url, &printed);
        let stderr = String::from_utf8_lossy(&printed.stderr);
        if accepted {
            assert_eq!(printed.status.code(), Some(0), "{url} refused: {stderr}");
            let stdout = String::from_utf8_lossy(&printed.stdout);
            assert!(stdout.contains("***"), "{url}: {stdout}");
        } else {
            assert_config_error(&printed, "redis_url");
        }
        // The same URL from the environment and from a TOML file.
        let env = run(&["--print-config"], &[("COHERENCE_REDIS_URL", &url)]).await;
        assert_no_marker(&url, &env);
        assert_eq!(env.status.code(), printed.status.code(), "{url}");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, format!("redis_url = {:?}\n", url)).unwrap();
        let from_file = run(&["--config", file.to_str().unwrap(), "--print-config"], &[]).await;
        assert_no_marker(&url, &from_file);
        assert_eq!(from_file.status.code(), printed.status.code(), "{url}");
        // A CA file that is no PEM fails the TLS set-up: its message must not quote the URL.
        if url.starts_with("rediss") && accepted {
            let bad_ca = run(&["--redis-url", &url, "--redis-ca-file", not_pem], &[]).await;
            assert_no_marker(&url, &bad_ca);
            assert_config_error(&bad_ca, "redis_ca_file");
        }
    }
    // A gRPC token file too short to accept, and one accepted: the token shows nowhere.
    let short_token = dir.path().join("short-token");
    std::fs::write(&short_token, format!("{MARKER}\n")).unwrap();
    let long_token = dir.path().join("long-token");
    std::fs::write(&long_token, format!("{MARKER}{MARKER}\n")).unwrap();
    let short = run(&["--auth-token-file", short_token.to_str().unwrap()], &[]).await;
    assert_no_marker("a short token", &short);
    assert_config_error(&short, "auth_token_file");
    let long = run(
        &[
            "--auth-token-file",
            long_token.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    )
    .await;
    assert_no_marker("a token", &long);
    assert_eq!(long.status.code(), Some(0));
    // Passwords given as settings, and a stray value clap would otherwise quote.
    for args in [
        vec!["--redis-password", MARKER, "--print-config"],
        vec!["--sentinel-password", MARKER, "--print-config"],
        vec!["--print-config", MARKER],
        vec!["--redis-password", MARKER, "--shards", "0"],
    ] {
        let output = run(&args, &[]).await;
        assert_no_marker(&format!("{args:?}"), &output);
    }
}

/// Runs the binary until its output shows `lines` lines containing `needle` (or [`WAIT`]
/// passes), then kills it; returns everything it printed.
async fn output_after(url: &str, extra: &[&str], needle: &str, lines: usize) -> String {
    let mut sidecar = spawn(url, extra).spawn();
    let seen = eventually(WAIT, || async {
        sidecar.output().matches(needle).count() >= lines
    })
    .await;
    sidecar.signal("-KILL");
    let _ = sidecar.wait_exit(WAIT).await;
    let output = sidecar.output();
    assert!(seen, "never saw {lines} x {needle:?}: {output}");
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_connections_never_log_the_password() {
    // Every server requires another password than the marker the sidecar brings.
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("redis.sock");
    let redis = RedisServer::start_with(&["--unixsocket", socket.to_str().unwrap()]);
    let _: () = redis
        .cmd(&["CONFIG", "SET", "requirepass", "other"])
        .unwrap();
    let cluster = RedisCluster::start(3, 0);
    for node in cluster.nodes() {
        let _: () = node
            .cmd(&["CONFIG", "SET", "requirepass", "other"])
            .unwrap();
    }
    let port = redis.port();
    let cluster_url = cluster.url().replace("redis+cluster://", "");
    let sentinels = RedisSentinels::start_with(&SentinelOptions {
        sentinel_user: Some(("sidecar", "other")),
        ..SentinelOptions::default()
    });
    let sentinel_url = sentinels.url().replace(
        "redis+sentinel://",
        &format!("redis+sentinel://u:{MARKER}/x@"),
    );
    let sentinel_password = format!("{MARKER}-sentinel");
    let output = output_after(
        &sentinel_url,
        &[
            "--sentinel-username",
            "sidecar",
            "--sentinel-password",
            &sentinel_password,
        ],
        "cannot use redis",
        2,
    )
    .await;
    assert!(!output.contains(MARKER), "the password leaked: {output}");
    assert!(output.contains("u:***@"), "{output}");
    for url in [
        format!("redis://u:{MARKER}@127.0.0.1:{port}"),
        format!("redis://:{MARKER}/x@127.0.0.1:{port}"),
        format!("unix://{}?pass={MARKER}", socket.display()),
        format!("redis+cluster://:{MARKER}@{cluster_url}"),
        format!("redis+cluster://:{MARKER}/x@{cluster_url}"),
    ] {
        let output = output_after(&url, &[], "cannot use redis", 2).await;
        assert!(
            !output.contains(MARKER),
            "{url}: the password leaked: {output}"
        );
        assert!(
            output.contains(":***@") || output.contains("pass=***"),
            "{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_have_no_colour_off_a_terminal_and_json_lines_on_request() {
    let redis = RedisServer::start();
    let mut plain = spawn(&redis.url(), &[]).env_remove("NO_COLOR").spawn();
    assert!(wait_serving(&plain).await, "{}", plain.output());
    plain.signal("-TERM");
    assert!(plain.wait_exit(WAIT).await.is_some());
    let output = plain.output();
    assert!(output.contains("coherence sidecar started"), "{output}");
    assert!(
        !output.contains('\x1b'),
        "ANSI escapes in piped logs: {output:?}"
    );

    let mut json = spawn(&redis.url(), &["--log-format", "json"])
        .env_remove("NO_COLOR")
        .spawn();
    assert!(wait_serving(&json).await, "{}", json.output());
    json.signal("-TERM");
    assert!(json.wait_exit(WAIT).await.is_some());
    let output = json.output();
    let mut started = false;
    for line in output.lines() {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line:?}"));
        assert!(object["timestamp"].is_string(), "{line}");
        assert!(object["level"].is_string(), "{line}");
        if object["message"] == "coherence sidecar started" {
            // The event's own fields, at the top level.
            assert_eq!(object["server_id"], "process-test", "{line}");
            assert!(object["grpc"].is_string(), "{line}");
            started = true;
        }
    }
    assert!(started, "no start line: {output}");
    assert!(!output.contains('\x1b'), "{output:?}");
}

/// The binary as a server against `redis_url` with `extra` flags, logging at debug level.
fn spawn(redis_url: &str, extra: &[&str]) -> SidecarProcessBuilder {
    SidecarProcess::builder(BINARY, redis_url)
        .args(&["--server-id", "process-test"])
        .args(extra)
        .env("RUST_LOG", "debug")
}

async fn health(sidecar: &SidecarProcess) -> Option<HealthClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(sidecar.grpc_url())
        .ok()?
        .connect()
        .await
        .ok()?;
    Some(HealthClient::new(channel))
}

/// Waits until `grpc.health.v1` reports SERVING.
async fn wait_serving(sidecar: &SidecarProcess) -> bool {
    eventually(WAIT, || async {
        let Some(mut health) = health(sidecar).await else {
            return false;
        };
        let request = HealthCheckRequest {
            service: String::new(),
        };
        matches!(health.check(request).await, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_password_in_the_url_never_appears_in_the_output() {
    let redis = RedisServer::start();
    let _: () = redis
        .cmd(&["CONFIG", "SET", "requirepass", PASSWORD])
        .unwrap();
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port());
    let mut sidecar = spawn(&url, &[]).spawn();
    assert!(
        wait_serving(&sidecar).await,
        "not ready with the password: {}",
        sidecar.output()
    );
    let client = coherence_client::Client::connect(sidecar.grpc_url())
        .await
        .unwrap();
    client.bump(&["content"]).await.unwrap();

    // Drop every connection: the reconnects log the URL again.
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query(&mut admin)
        .unwrap();
    assert!(killed > 0);
    let _: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query(&mut admin)
        .unwrap();
    assert!(wait_serving(&sidecar).await, "{}", sidecar.output());
    let reconnected = eventually(WAIT, || async {
        client.bump(&["content"]).await.is_ok() && sidecar.output().matches("verified").count() >= 2
    })
    .await;
    assert!(reconnected, "{}", sidecar.output());

    sidecar.signal("-TERM");
    assert!(sidecar.wait_exit(WAIT).await.is_some());
    let output = sidecar.output();
    assert!(
        output.contains(&format!("redis://:***@127.0.0.1:{}", redis.port())),
        "the URL is logged only redacted: {output}"
    );
    assert!(!output.contains(PASSWORD), "the password leaked: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drops_readiness_ends_watch_streams_and_exits_within_the_drain_bound() {
    let redis = RedisServer::start();
    let drain = Duration::from_millis(2_000);
    let mut sidecar = spawn(
        &redis.url(),
        &["--drain-timeout-ms", &drain.as_millis().to_string()],
    )
    .spawn();
    assert!(wait_serving(&sidecar).await, "{}", sidecar.output());

    // A health watch the server never ends by itself: the drain must not wait for it forever.
    let mut health = health(&sidecar).await.unwrap();
    let mut health_events = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = health_events.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let client = coherence_client::Client::connect(sidecar.grpc_url())
        .await
        .unwrap();
    let mut watch = client.watch(&[]).await.unwrap();

    sidecar.signal("-TERM");
    let signalled = Instant::now();

    let not_serving = tokio::time::timeout(WAIT, async {
        while let Some(Ok(event)) = health_events.next().await {
            if event.status == ServingStatus::NotServing as i32 {
                return true;
            }
        }
        false
    })
    .await
    .expect("health answers after SIGTERM");
    assert!(not_serving, "health never reported NOT_SERVING");

    let last = tokio::time::timeout(WAIT, async {
        loop {
            match watch.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch stream ends after SIGTERM");
    match last {
        Some(Err(coherence_client::Error::Unavailable { status, .. })) => {
            assert!(status.message().contains("shutting down"), "{status}")
        }
        other => panic!("the watch stream ended without a final UNAVAILABLE: {other:?}"),
    }

    // The health watch is still open; the drain bound (2 s) must end it. Allow generous slack
    // for a loaded machine, far below "forever".
    let (code, _) = sidecar
        .wait_exit(drain + WAIT)
        .await
        .expect("the sidecar exits within the drain bound");
    assert_eq!(code, Some(0), "{}", sidecar.output());
    println!("exited {:?} after SIGTERM", signalled.elapsed());
    drop(health_events);
    let output = sidecar.output();
    assert!(output.contains("shutdown requested; draining"), "{output}");
    assert!(output.contains("coherence sidecar stopped"), "{output}");
}

/// Out of file descriptors (its `ulimit -n` lowered to what it holds plus a few, and more
/// clients connecting than that allows), the sidecar pauses accepting instead of retrying in a
/// loop — about 8 accept errors in the first second, where a loop makes hundreds (568 in a
/// debug build, measured with the pause taken out) and burns a CPU of the pod — and once the
/// clients are gone it accepts and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_sidecar_pauses_accepting_and_serves_again_after() {
    let redis = RedisServer::start();
    let sidecar = spawn(&redis.url(), &[]).env("RUST_LOG", "warn").spawn();
    assert!(wait_serving(&sidecar).await, "{}", sidecar.output());
    let pid = sidecar.pid().to_string();
    let open_descriptors = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the sidecar's descriptors")
        .count();
    let limit = |soft: String| {
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={soft}:")])
            .status()
            .expect("run prlimit (util-linux)");
        assert!(status.success(), "prlimit --nofile={soft}: failed");
    };
    let original = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .expect("the sidecar's limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        .expect("Max open files in /proc/<pid>/limits");
    limit((open_descriptors + 4).to_string());

    // More connections than descriptors: the kernel completes them all (the listen backlog);
    // the sidecar accepts a few and then fails with EMFILE on every try.
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(
            tokio::net::TcpStream::connect(sidecar.grpc_addr())
                .await
                .expect("the kernel completes the connection"),
        );
    }
    assert!(
        eventually(WAIT, || async {
            sidecar
                .output()
                .contains("accepting a connection failed; pausing accepts")
        })
        .await,
        "no accept error logged:\n{}",
        sidecar.output()
    );
    // The window in which a retry loop would spin: the shortage lasts a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(clients);
    limit(original);

    // Descriptors are free again: new clients are served and the pause is over.
    assert!(wait_serving(&sidecar).await, "{}", sidecar.output());
    let metrics = http_get(sidecar.admin_addr(), "/metrics", None)
        .await
        .expect("the admin listener answers");
    let errors = metric_sum(&metrics.body, "coherence_accept_errors_total");
    assert!(
        (1.0..=40.0).contains(&errors),
        "{errors} accept errors while out of descriptors for about a second: pauses of 10 ms \
         doubling up to 1 s make about 8 (and one a second after), a retry loop hundreds or more"
    );
}
