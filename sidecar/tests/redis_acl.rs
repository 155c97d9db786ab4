//! The sidecar runs under exactly the restricted Redis ACL user deploy/ ships and
//! docs/security.md documents:
//! keys and channels of its own namespace only, and only the commands it needs. It becomes
//! ready, Get/Check/Bump work, Redis logs no denial of anything it did, and the same user is
//! refused keys and channels of another namespace.

use std::time::Duration;

use coherence_proto::v1 as pb;
use coherence_testkit::{Await, RedisServer, TestSidecar};

const USER: &str = "coherence-app";
const PASSWORD: &str = "app-secret-0123456789";

const SHIPPED_RULE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/kubernetes/base/redis-credentials.yaml"
);

/// The `ACL SETUSER` arguments of the rule deploy/ ships (and docs/security.md documents;
/// deploy/validate.sh checks the two agree), for the namespace `app`, with the test's password.
fn shipped_acl_rule() -> Vec<String> {
    let text = std::fs::read_to_string(SHIPPED_RULE).expect("read the shipped Redis ACL Secret");
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("user {USER} ")))
        .expect("the Secret has a users.acl line for the sidecar's user");
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

/// Applies the rule; Redis before 7.2 has no CLIENT SETINFO and refuses to name it, so the
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

fn acl_log(redis: &RedisServer) -> Vec<String> {
    let entries: Vec<redis::Value> = redis.cmd(&["ACL", "LOG"]).unwrap();
    entries.iter().map(|e| format!("{e:?}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_works_under_the_documented_acl_user_and_nothing_more() {
    let redis = RedisServer::start();
    let rule = shipped_acl_rule();
    assert_eq!(rule[0], USER);
    assert!(
        rule.iter().any(|t| t == "~coh:{app:*") && rule.iter().any(|t| t == "&coh:{app:*"),
        "{rule:?}"
    );
    apply_rule(&redis, &rule);
    let _: String = redis.cmd(&["ACL", "LOG", "RESET"]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let sidecar = TestSidecar::builder(&redis.url())
        .namespace("app")
        .settings(|s| {
            s.redis_username = USER.into();
            s.redis_password_file = Some(password_file);
        })
        .wait(Await::Started)
        .start()
        .await;
    assert!(
        sidecar.wait_ready(Duration::from_secs(20)).await,
        "not ready under the ACL user; ACL LOG: {:?}",
        acl_log(&redis)
    );

    let mut client = coherence_proto::v1::cache_versions_client::CacheVersionsClient::new(
        sidecar.channel().await,
    );
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
    let denials = acl_log(&redis);
    assert!(
        denials.is_empty(),
        "Redis denied the sidecar something: {denials:?}"
    );

    // The same user cannot reach another namespace or any other key or channel.
    let client = redis::Client::open(format!(
        "redis://{USER}:{PASSWORD}@127.0.0.1:{}",
        redis.port()
    ))
    .unwrap();
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
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
        let refused = cmd.query::<redis::Value>(&mut conn).unwrap_err();
        assert!(
            refused.to_string().contains("NOPERM") || refused.to_string().contains("permission"),
            "{what}: expected NOPERM, got {refused}"
        );
    }
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
