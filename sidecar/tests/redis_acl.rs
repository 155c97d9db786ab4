//! The sidecar runs under exactly the restricted Redis ACL users deploy/ ships and
//! docs/security.md documents — the eval rule (deploy/kubernetes/base) and the functions rule
//! (deploy/kubernetes/overlays/redis-functions), on a standalone Redis and on a cluster (with
//! the cluster additions docs/security.md lists): keys and channels of its own namespace only,
//! and only the commands it needs. It becomes ready, Get/Check/Bump and job leases work, Redis
//! logs no denial of anything it did, and the same user is refused keys and channels of another
//! namespace. Under the eval rule the user can run Lua of its own (SCRIPT LOAD + EVALSHA); under
//! the functions rule it cannot (no EVAL, EVALSHA, SCRIPT LOAD, FUNCTION LOAD), and a Redis that
//! lost the library makes the sidecar not ready, with a log line naming the command that loads
//! it, until `coherence-sidecar functions load` (run here as the shipped loader user) has run.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use coherence_proto::v1 as pb;
use coherence_sidecar::Sidecar;
use coherence_testkit::{eventually, Await, RedisCluster, RedisServer, TestSidecar};

const USER: &str = "coherence-app";
const PASSWORD: &str = "app-secret-0123456789";
const LOADER: &str = "coherence-functions-loader";
const WAIT: Duration = Duration::from_secs(20);

/// What docs/security.md adds to either rule on Redis Cluster (sharded pub/sub, slot lookups).
const CLUSTER_ADDITIONS: &[&str] = &[
    "+spublish",
    "+ssubscribe",
    "+sunsubscribe",
    "+cluster|keyslot",
    "+cluster|slots",
    "+ping",
];

/// The two rules deploy/ ships.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// deploy/kubernetes/base: EVALSHA and SCRIPT LOAD.
    Eval,
    /// deploy/kubernetes/overlays/redis-functions: FCALL of the library, and a loader user.
    Functions,
}

impl Rule {
    fn secret(self) -> String {
        let file = match self {
            Rule::Eval => "base/redis-credentials.yaml",
            Rule::Functions => "overlays/redis-functions/redis-credentials.yaml",
        };
        std::fs::read_to_string(format!(
            "{}/../deploy/kubernetes/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("read the shipped Redis ACL Secret")
    }

    /// The `ACL SETUSER` arguments of `user`'s line in the Secret, with the test's password.
    fn shipped(self, user: &str) -> Vec<String> {
        let text = self.secret();
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("user {user} ")))
            .unwrap_or_else(|| panic!("{self:?}: the Secret has no users.acl line for {user}"));
        line.split_whitespace()
            .skip(1)
            .map(|token| {
                if token.starts_with('>') {
                    format!(">{PASSWORD}")
                } else {
                    token.to_string()
                }
            })
            .collect()
    }

    fn scripts(self) -> &'static str {
        match self {
            Rule::Eval => "eval",
            Rule::Functions => "functions",
        }
    }
}

/// Applies a rule; Redis before 7.2 has no CLIENT SETINFO and refuses to name it, so the
/// rule is applied without that one token there (docs/security.md says the same).
fn apply_rule(redis: &RedisServer, rule: &[String]) {
    let setuser = |rule: &[String]| -> redis::RedisResult<String> {
        let args: Vec<&str> = ["ACL", "SETUSER"]
            .into_iter()
            .chain(rule.iter().map(String::as_str))
            .collect();
        redis.cmd(&args)
    };
    if let Err(err) = setuser(rule) {
        assert!(
            err.to_string().to_lowercase().contains("setinfo"),
            "ACL SETUSER refused the shipped rule: {err}"
        );
        let without: Vec<String> = rule
            .iter()
            .filter(|t| *t != "+client|setinfo")
            .cloned()
            .collect();
        setuser(&without).expect("ACL SETUSER with the shipped rule minus +client|setinfo");
    }
}

/// Applies `rule`'s users to every node (with the cluster additions on a cluster) and empties
/// their ACL logs.
fn apply_rules(nodes: &[RedisServer], rule: Rule, cluster: bool) {
    let additions: &[&str] = if cluster { CLUSTER_ADDITIONS } else { &[] };
    let mut users = vec![USER];
    if rule == Rule::Functions {
        users.push(LOADER);
    }
    for node in nodes {
        for user in &users {
            let mut tokens = rule.shipped(user);
            assert_eq!(tokens[0], *user);
            tokens.extend(additions.iter().map(|t| t.to_string()));
            apply_rule(node, &tokens);
        }
        let _: String = node.cmd(&["ACL", "LOG", "RESET"]).unwrap();
    }
}

fn acl_log(redis: &RedisServer) -> Vec<String> {
    let entries: Vec<redis::Value> = redis.cmd(&["ACL", "LOG"]).unwrap();
    entries.iter().map(|e| format!("{e:?}")).collect()
}

fn assert_no_denial(nodes: &[RedisServer]) {
    for node in nodes {
        let denials = acl_log(node);
        assert!(
            denials.is_empty(),
            "Redis (port {}) denied the sidecar something: {denials:?}",
            node.port()
        );
    }
}

/// A file holding the test's password.
fn password_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("password");
    std::fs::write(&path, format!("{PASSWORD}\n")).unwrap();
    path
}

/// `coherence-sidecar functions load` as the shipped loader user, as deploy/'s init container
/// runs it. Returns its output.
async fn load_functions(redis_url: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_coherence-sidecar"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COHERENCE_") {
            command.env_remove(name);
        }
    }
    command
        .args(["functions", "load", "--redis-url", redis_url])
        .env("COHERENCE_REDIS_USERNAME", LOADER)
        .env("COHERENCE_REDIS_PASSWORD_FILE", password_file(&dir));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run coherence-sidecar functions load");
    assert!(
        output.status.success(),
        "functions load failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Starts a sidecar of namespace `app` under `rule` (its library loaded first in functions
/// mode) and waits until it is ready.
async fn start_under(rule: Rule, redis_url: &str, nodes: &[RedisServer]) -> TestSidecar {
    if rule == Rule::Functions {
        load_functions(redis_url).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let sidecar = TestSidecar::builder(redis_url)
        .namespace("app")
        .settings(|s| {
            s.redis_username = USER.into();
            s.redis_password_file = Some(password_file(&dir));
            s.redis_scripts = rule.scripts().into();
        })
        .wait(Await::Started)
        .start()
        .await;
    assert!(
        sidecar.wait_ready(WAIT).await,
        "{rule:?}: not ready under the ACL user; ACL LOG: {:?}",
        nodes.iter().map(acl_log).collect::<Vec<_>>()
    );
    sidecar
}

/// A connection as the sidecar's user.
fn user_connection(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(format!(
        "redis://{USER}:{PASSWORD}@127.0.0.1:{}",
        redis.port()
    ))
    .unwrap()
    .get_connection_with_timeout(Duration::from_secs(2))
    .unwrap()
}

fn refused(result: redis::RedisResult<redis::Value>) -> String {
    let err = result.expect_err("refused").to_string();
    assert!(
        err.contains("NOPERM") || err.contains("permission") || err.contains("can't access"),
        "expected a permission error, got {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_works_under_the_documented_acl_user_and_nothing_more() {
    let redis = RedisServer::start();
    let rule = Rule::Eval.shipped(USER);
    assert!(
        rule.iter().any(|t| t == "~coh:{app:*") && rule.iter().any(|t| t == "&coh:{app:*"),
        "{rule:?}"
    );
    let nodes = std::slice::from_ref(&redis);
    apply_rules(nodes, Rule::Eval, false);
    let sidecar = start_under(Rule::Eval, &redis.url(), nodes).await;
    exercise(&sidecar).await;
    assert_no_denial(nodes);

    let mut conn = user_connection(&redis);
    assert_confined(&mut conn);
    // A bump script call naming another namespace's keys is refused too (keys in scripts are
    // checked against the caller's patterns).
    let script_denied: redis::RedisResult<redis::Value> = redis::cmd("EVAL")
        .arg("return redis.call('GET', KEYS[1])")
        .arg(1)
        .arg("coh:{other:0}:seq")
        .query(&mut conn);
    assert!(
        script_denied.is_err(),
        "EVAL is not even granted: {script_denied:?}"
    );

    // What the rule does allow, as docs/security.md says: SCRIPT LOAD + EVALSHA run any Lua
    // the user writes (here a busy loop — an endless one would stall every namespace on this
    // Redis), but every command a script calls is still checked against the user's patterns.
    let load = |body: &str, conn: &mut redis::Connection| -> String {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(body)
            .query(conn)
            .expect("SCRIPT LOAD is granted")
    };
    let busy = load("for i = 1, 100000 do end return 7", &mut conn);
    let ran: i64 = redis::cmd("EVALSHA")
        .arg(&busy)
        .arg(0)
        .query(&mut conn)
        .expect("any loaded script runs");
    assert_eq!(ran, 7);
    let reach = load("return redis.call('GET', 'coh:{other:0}:seq')", &mut conn);
    let confined: redis::RedisResult<redis::Value> =
        redis::cmd("EVALSHA").arg(&reach).arg(0).query(&mut conn);
    let err = confined
        .expect_err("a script read another namespace's key")
        .to_string();
    assert!(err.contains("can't access"), "{err}");
    sidecar.shutdown().await;
}

/// Captures the log lines of the in-process sidecars of this test binary.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&sink)))
            .try_init();
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Functions mode under the shipped functions rule: the sidecar works, its user runs no Lua
/// of its own; a Redis that lost the library (restarted without persistence), or holds only
/// another version of it, makes it not ready with a log line that says what to run, until the
/// loader has run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_mode_works_under_the_functions_acl_user_which_runs_no_lua_of_its_own() {
    let logs = captured_logs();
    let mut redis = RedisServer::start();
    apply_rules(std::slice::from_ref(&redis), Rule::Functions, false);
    let sidecar = start_under(Rule::Functions, &redis.url(), std::slice::from_ref(&redis)).await;
    exercise(&sidecar).await;
    assert_no_denial(std::slice::from_ref(&redis));

    let mut conn = user_connection(&redis);
    assert_confined(&mut conn);
    let body = "for i = 1, 100000 do end return 7";
    for (what, result) in [
        ("EVAL", redis::cmd("EVAL").arg(body).arg(0).query(&mut conn)),
        (
            "EVALSHA",
            redis::cmd("EVALSHA")
                .arg("0000000000000000000000000000000000000000")
                .arg(0)
                .query(&mut conn),
        ),
        (
            "SCRIPT LOAD",
            redis::cmd("SCRIPT").arg("LOAD").arg(body).query(&mut conn),
        ),
        (
            "FUNCTION LOAD",
            redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("#!lua name=mine\nredis.register_function('busy', function() while true do end end)")
                .query(&mut conn),
        ),
    ] {
        let err = refused(result);
        assert!(err.contains("NOPERM") || err.contains("permission"), "{what}: {err}");
    }
    // FCALL runs the library, and its keys are still checked against the user's patterns.
    let function = coherence_sidecar::redis::scripts::SHARD.function();
    refused(
        redis::cmd("FCALL")
            .arg(function)
            .arg(1)
            .arg("coh:{other:0}:epoch")
            .arg("read")
            .query(&mut conn),
    );

    // Redis restarts without persistence: the library (and the ACL users) are gone.
    tokio::task::block_in_place(|| redis.restart_empty());
    apply_rules(std::slice::from_ref(&redis), Rule::Functions, false);
    let client = grpc_client(&sidecar).await;
    let unavailable = eventually(WAIT, || {
        let mut client = client.clone();
        async move {
            client
                .get(pb::GetRequest {
                    keys: vec!["content".into()],
                    consistency: pb::Consistency::Strong as i32,
                })
                .await
                .is_err()
        }
    })
    .await;
    assert!(unavailable, "Get worked without the library");
    assert!(
        eventually(WAIT, || async { !sidecar.is_ready() }).await,
        "still ready without the library"
    );
    let said = eventually(WAIT, || async {
        let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
        text.lines().any(|l| {
            l.contains("ERROR")
                && l.contains(function)
                && l.contains("run `coherence-sidecar functions load`")
        })
    })
    .await;
    assert!(said, "no log line says what to run");
    let readyz = sidecar.admin_get("/readyz").await.expect("/readyz answers");
    assert!(
        readyz.status == 503 && readyz.body.contains("coherence-sidecar functions load"),
        "/readyz: {} {}",
        readyz.status,
        readyz.body
    );

    // Only another version of the library: still missing.
    let _: String = redis
        .cmd(&[
            "FUNCTION",
            "LOAD",
            "#!lua name=coherence_000000000000\nredis.register_function('coherence_000000000000_shard', function() return 1 end)",
        ])
        .expect("load an older library as admin");
    let mut grpc = client.clone();
    let still = grpc
        .get(pb::GetRequest {
            keys: vec!["content".into()],
            consistency: pb::Consistency::Strong as i32,
        })
        .await;
    assert!(
        still.is_err(),
        "Get worked with another library version: {still:?}"
    );
    assert!(!sidecar.is_ready(), "ready with another library version");

    let output = load_functions(&redis.url()).await;
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains(&coherence_sidecar::redis::scripts::library_name()),
        "{said}"
    );
    assert!(
        sidecar.wait_ready(WAIT).await,
        "not ready again once the library was loaded"
    );
    exercise(&sidecar).await;
    sidecar.shutdown().await;
}

/// Both shipped rules on a cluster of three masters, with the cluster additions.
async fn works_on_a_cluster(rule: Rule) {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    apply_rules(cluster.nodes(), rule, true);
    let sidecar = start_under(rule, &cluster.url(), cluster.nodes()).await;
    exercise(&sidecar).await;
    assert_no_denial(cluster.nodes());
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eval_rule_works_on_a_cluster() {
    works_on_a_cluster(Rule::Eval).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_functions_rule_works_on_a_cluster() {
    works_on_a_cluster(Rule::Functions).await;
}

/// Get, Bump, strong and mirror Check, and job leases through `sidecar`.
async fn exercise(sidecar: &Sidecar) {
    let mut client = grpc_client(sidecar).await;
    let keys = vec!["content".to_string()];
    let old = client
        .get(pb::GetRequest {
            keys: keys.clone(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .versions;
    let new = client
        .bump(pb::BumpRequest { keys: keys.clone() })
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_ne!(old, new);
    for (version, consistency, expected) in [
        (&old, pb::Consistency::Strong, false),
        (&new, pb::Consistency::Strong, true),
        (&new, pb::Consistency::Unspecified, true),
    ] {
        let reply = client
            .check(pb::CheckRequest {
                entries: vec![pb::KeyVersion {
                    key: "content".into(),
                    version: version.first().cloned(),
                }],
                consistency: consistency as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.results[0].current, expected,
            "{consistency:?}: {reply:?}"
        );
    }
    // The mirror follows the subscription (SUBSCRIBE on the namespace's channels is allowed).
    let from_mirror = coherence_testkit::eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        let new = new.clone();
        async move {
            let reply = client
                .check(pb::CheckRequest {
                    entries: vec![pb::KeyVersion {
                        key: "content".into(),
                        version: new.first().cloned(),
                    }],
                    consistency: 0,
                })
                .await
                .unwrap()
                .into_inner();
            reply.results[0].current && reply.results[0].source == pb::CheckSource::Mirror as i32
        }
    })
    .await;
    assert!(from_mirror, "checks answered from the mirror");
    // Job leases and periodic runs (load_balancing/jobs.lua) under the same rule.
    let mut jobs = coherence_proto::v1::jobs_client::JobsClient::connect(format!(
        "http://{}",
        sidecar.grpc_addr
    ))
    .await
    .unwrap();
    let lease = jobs
        .try_acquire(pb::TryAcquireRequest {
            job: "nightly".into(),
            ttl_ms: 10_000,
            holder: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(lease.granted, "{lease:?}");
    jobs.renew(pb::RenewRequest {
        job: "nightly".into(),
        fencing_token: lease.fencing_token,
        ttl_ms: 10_000,
    })
    .await
    .unwrap();
    jobs.release(pb::ReleaseRequest {
        job: "nightly".into(),
        fencing_token: lease.fencing_token,
    })
    .await
    .unwrap();
    let run = jobs
        .claim_run(pb::ClaimRunRequest {
            job: "hourly".into(),
            period_ms: 3_600_000,
            lease_ms: 0,
            holder: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(run.granted, "{run:?}");
}

/// The user (connected as `conn`) cannot reach another namespace or any other key or channel.
fn assert_confined(conn: &mut redis::Connection) {
    for (what, cmd) in [
        (
            "a key of another namespace",
            redis::cmd("SET")
                .arg("coh:{other:0}:v:content")
                .arg("x")
                .clone(),
        ),
        (
            "a key outside coherence",
            redis::cmd("GET").arg("sessions:42").clone(),
        ),
        (
            "a channel of another namespace",
            redis::cmd("PUBLISH")
                .arg("coh:{other:0}:inv")
                .arg("x")
                .clone(),
        ),
        ("a command it does not need", redis::cmd("FLUSHALL").clone()),
        (
            "CONFIG, which would reveal secrets",
            redis::cmd("CONFIG").arg("GET").arg("requirepass").clone(),
        ),
    ] {
        let refused = cmd.query::<redis::Value>(conn).unwrap_err();
        assert!(
            refused.to_string().contains("NOPERM") || refused.to_string().contains("permission"),
            "{what}: expected NOPERM, got {refused}"
        );
    }
}

async fn grpc_client(
    sidecar: &Sidecar,
) -> pb::cache_versions_client::CacheVersionsClient<tonic::transport::Channel> {
    pb::cache_versions_client::CacheVersionsClient::connect(format!("http://{}", sidecar.grpc_addr))
        .await
        .expect("connect to the sidecar's gRPC port")
}
