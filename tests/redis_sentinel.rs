//! coherence on Redis Sentinel: the sidecars find the master through the sentinels, follow a
//! failover, and a failover to a replica that missed the last bump never makes the superseded
//! (or the lost) version current again. Locked down — TLS to the sentinels and the data nodes
//! with a private CA, an ACL user on the sentinels, a password on the data nodes — each piece
//! is required and the whole follows a failover.

mod common {
    pub mod topology;
}

use std::time::{Duration, Instant};

use coherence_client::Client;
use coherence_sidecar::process::config::Settings;
use coherence_testkit::sentinel::SentinelOptions;
use coherence_testkit::tls::TestCertificates;
use coherence_testkit::{Await, RedisSentinels, TestSidecar, WAIT};
use common::topology::{assert_never_current, seen_everywhere};

/// How long the fleet may take to serve from its mirrors again after the failover completed.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_lagging_replica_keeps_superseded_versions_stale_and_recovers() {
    let mut set = RedisSentinels::start();
    let mut sidecars: Vec<TestSidecar> = Vec::new();
    let mut clients = Vec::new();
    for i in 0..3 {
        let sidecar = TestSidecar::builder(&set.url())
            .server_id(&format!("s{i}"))
            .settings(|s| {
                s.namespace = "sent".into();
                s.shards = 4;
            })
            .start()
            .await;
        clients.push(
            Client::connect(sidecar.grpc_url())
                .await
                .unwrap()
                .with_timeout(Duration::from_secs(5)),
        );
        sidecars.push(sidecar);
    }
    let key = "content";
    let old = clients[0].get_one(key).await.unwrap();
    assert!(
        coherence_testkit::eventually(WAIT, || async {
            set.replica
                .cmd::<Option<String>>(&[
                    "GET",
                    &sidecars[0]
                        .state
                        .keyspace
                        .version_key(sidecars[0].state.keyspace.shard_of(key), key),
                ])
                .is_ok_and(|v| v.as_deref() == Some(old.token()))
        })
        .await,
        "the replica copied the old version"
    );
    // The replica snapshots and goes down, so it misses the bump; then the master dies and the
    // replica returns from its snapshot, to be promoted without the bump.
    let _: String = set.replica.cmd(&["SAVE"]).unwrap();
    set.replica.kill();
    let new = clients[1].bump(&[key]).await.unwrap().remove(0);
    assert!(
        seen_everywhere(&clients, key, &old, &new).await,
        "the bump reached every sidecar"
    );
    set.master.kill();
    set.replica.restart();
    let failover_started = Instant::now();
    assert!(
        coherence_testkit::eventually(Duration::from_secs(30), || async {
            set.master_port() == Some(set.replica.port())
        })
        .await,
        "the sentinels promoted the replica"
    );
    let failover_took = failover_started.elapsed();
    let stored: Option<String> = set
        .replica
        .cmd(&[
            "GET",
            &sidecars[0]
                .state
                .keyspace
                .version_key(sidecars[0].state.keyspace.shard_of(key), key),
        ])
        .unwrap();
    assert_eq!(
        stored.as_deref(),
        Some(old.token()),
        "the new master really lost the bump"
    );

    let recovery_started = Instant::now();
    // Checks answered by the new master itself (not failed closed while reconnecting) are
    // what could go wrong: wait until every sidecar serves from it again.
    assert!(
        coherence_testkit::eventually(RECOVERY_BOUND, || async {
            sidecars.iter().all(|s| s.is_ready())
        })
        .await,
        "the sidecars reconnected to the new master"
    );
    for superseded in [&old, &new] {
        assert_never_current(&sidecars, &clients, key, superseded, "after the failover").await;
    }
    let recovered = coherence_testkit::eventually(RECOVERY_BOUND, || async {
        let Ok(v) = clients[2].bump(&[key]).await else {
            return false;
        };
        seen_everywhere(&clients, key, &old, &v[0]).await
    })
    .await;
    assert!(
        recovered,
        "the fleet did not recover within {RECOVERY_BOUND:?}"
    );
    println!(
        "sentinel failover: promoted after {failover_took:?}; fleet serving from mirrors {:?} later",
        recovery_started.elapsed()
    );
    for s in sidecars {
        s.shutdown().await;
    }
}

/// The sentinels speak only TLS on the ports the URL names, signed by a private CA, and
/// answer only an ACL user of their own; the data nodes have another password (in the URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_over_tls_with_their_own_acl_user_lead_to_the_master_and_through_a_failover() {
    let certs = TestCertificates::make();
    let sentinel_user = ("coherence-sentinel", "sentinel-secret");
    let mut set = RedisSentinels::start_with(&SentinelOptions {
        tls: Some(&certs),
        data_password: Some("data-secret"),
        sentinel_user: Some(sentinel_user),
    });
    let url = set
        .url()
        .replace("rediss+sentinel://", "rediss+sentinel://:data-secret@");
    assert!(url.starts_with("rediss+sentinel://"), "{url}");
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("sentinel-password");
    std::fs::write(&password_file, format!("{}\n", sentinel_user.1)).unwrap();
    let locked_down = |s: &mut Settings| {
        s.namespace = "tls-sent".into();
        s.shards = 2;
        s.redis_ca_file = Some(certs.ca());
        s.sentinel_username = sentinel_user.0.into();
        s.sentinel_password_file = Some(password_file.clone());
    };

    // Each missing piece keeps the sidecar from ever reaching the master.
    type Spoil = Box<dyn Fn(&mut Settings)>;
    let refused: [(&str, Spoil); 3] = [
        (
            "no sentinel credentials",
            Box::new(|s| {
                s.sentinel_username.clear();
                s.sentinel_password_file = None;
            }),
        ),
        (
            "a wrong sentinel password",
            Box::new(|s| {
                s.sentinel_password_file = None;
                s.sentinel_password = "wrong".into();
            }),
        ),
        (
            "the web PKI roots instead of the CA",
            Box::new(|s| {
                s.redis_ca_file = None;
            }),
        ),
    ];
    for (what, spoil) in refused {
        let sidecar = TestSidecar::builder(&url)
            .server_id("spoiled")
            .settings(|s| {
                locked_down(s);
                spoil(s);
            })
            .wait(Await::Started)
            .start()
            .await;
        assert!(
            !sidecar
                .state
                .link
                .wait_connected(Duration::from_secs(3))
                .await,
            "connected with {what}"
        );
        sidecar.shutdown().await;
    }

    let sidecar = TestSidecar::builder(&url)
        .server_id("tls-sentinel")
        .settings(locked_down)
        .start()
        .await;
    let client = Client::connect(sidecar.grpc_url())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    let bumped = client.bump(&["content"]).await.unwrap().remove(0);
    assert_eq!(
        client
            .get_with(&["content"], coherence_client::Consistency::Strong)
            .await
            .unwrap()[0],
        bumped
    );

    // A failover: the sidecar asks the sentinels again (over TLS, authenticated) and reaches
    // the promoted replica over TLS.
    set.kill_master_and_wait_failover(Duration::from_secs(30));
    let recovered = coherence_testkit::eventually(RECOVERY_BOUND, || async {
        client
            .bump(&["content"])
            .await
            .is_ok_and(|v| v[0] != bumped)
    })
    .await;
    assert!(recovered, "no bump through the promoted replica");
    sidecar.shutdown().await;
}
