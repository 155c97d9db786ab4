//! Server roles against a real Redis: one scheduling publisher at every sampled instant, takeover
//! after the leader is SIGKILLed, SINGLE when alone, UNKNOWN without Redis, static mode pinned.

mod kit_support;

use std::time::{Duration, Instant};

use coherence_proto::v1 as pb;
use coherence_proto::v1::servers_client::ServersClient;
use coherence_testkit::{eventually, RedisServer, SidecarProcess};
use futures::future::join_all;
use kit_support::sidecar;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const LEASE_MS: u64 = 1_500;
const REFRESH_MS: u64 = 100;
const TTL_MS: u64 = 1_000;

fn election_flags() -> Vec<String> {
    [
        "--lease-ms",
        &LEASE_MS.to_string(),
        "--server-refresh-ms",
        &REFRESH_MS.to_string(),
        "--server-ttl-ms",
        &TTL_MS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn role_of(client: &ServersClient<Channel>) -> pb::RoleStatus {
    client
        .clone()
        .get_role(pb::GetRoleRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Every client's role, asked concurrently.
async fn roles(clients: &[ServersClient<Channel>]) -> Vec<pb::Role> {
    join_all(clients.iter().map(role_of))
        .await
        .into_iter()
        .map(|s| s.role())
        .collect()
}

fn publishers(roles: &[pb::Role]) -> usize {
    roles
        .iter()
        .filter(|r| matches!(r, pb::Role::SchedulingPublisher | pb::Role::Single))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduling_publisher_at_every_sampled_instant_and_takeover_after_sigkill() {
    let redis = RedisServer::start();
    let flags = election_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let ids = ["a", "b", "c"];
    let mut processes: Vec<SidecarProcess> = ids
        .iter()
        .map(|id| {
            SidecarProcess::builder(env!("CARGO_BIN_EXE_coherence-sidecar"), &redis.url())
                .args(&["--server-id", id, "--namespace", "kit"])
                .args(&flags)
                .env("RUST_LOG", "warn")
                .spawn()
        })
        .collect();
    let mut clients = Vec::new();
    for process in &processes {
        clients.push(ServersClient::new(process.channel().await));
    }
    let settled = eventually(Duration::from_secs(20), || async {
        let r = roles(&clients).await;
        r.iter()
            .filter(|r| **r == pb::Role::SchedulingPublisher)
            .count()
            == 1
            && r.iter().filter(|r| **r == pb::Role::Subscriber).count() == 2
    })
    .await;
    assert!(
        settled,
        "never settled on one publisher: {:?}",
        roles(&clients).await
    );

    for sample in 0..60 {
        let r = roles(&clients).await;
        assert_eq!(
            r.iter()
                .filter(|r| **r == pb::Role::SchedulingPublisher)
                .count(),
            1,
            "sample {sample}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(15)).await;
    }

    let r = roles(&clients).await;
    let leader = r
        .iter()
        .position(|r| *r == pb::Role::SchedulingPublisher)
        .unwrap();
    let killed_at = Instant::now();
    processes[leader].kill();
    let survivors: Vec<ServersClient<Channel>> = clients
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, c)| c.clone())
        .collect();
    let limit = Duration::from_millis(LEASE_MS + REFRESH_MS) + Duration::from_secs(3);
    let took = loop {
        let r = roles(&survivors).await;
        assert!(
            publishers(&r) <= 1,
            "two publishers among the survivors: {r:?}"
        );
        if publishers(&r) == 1 {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < limit,
            "no survivor took over within {limit:?}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "failover after SIGKILL of the leader: {took:?} (lease {LEASE_MS} ms, refresh {REFRESH_MS} ms)"
    );

    // The dead server drops out of the list after server_ttl_ms; the new leader is listed.
    let listed = eventually(Duration::from_secs(10), || async {
        let list = survivors[0]
            .clone()
            .list_servers(pb::ListServersRequest {})
            .await
            .unwrap()
            .into_inner();
        list.servers.len() == 2
            && !list.servers.iter().any(|s| s.server_id == ids[leader])
            && list.servers.iter().any(|s| s.server_id == list.leader_id)
    })
    .await;
    assert!(listed, "the dead leader did not drop out of ListServers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_is_single_then_publisher_and_graceful_leave_hands_over_at_once() {
    let redis = RedisServer::start();
    let tune = |id: &str| {
        sidecar(&redis, id).settings(|s| {
            s.lease_ms = 5_000;
            s.server_refresh_ms = REFRESH_MS;
            s.server_ttl_ms = TTL_MS;
        })
    };
    let a = tune("a").start().await;
    let on_a = ServersClient::new(a.channel().await);
    let single = eventually(Duration::from_secs(10), || async {
        role_of(&on_a).await.role() == pb::Role::Single
    })
    .await;
    assert!(single, "{:?}", role_of(&on_a).await);
    let metrics = coherence_testkit::eventually(Duration::from_secs(5), || async {
        let text = a.state.metrics.encode();
        text.contains("coherence_role{role=\"single\"} 1")
            && text.contains("coherence_role{role=\"unknown\"} 0")
            && text.contains("coherence_role_changes_total 1")
    })
    .await;
    assert!(metrics, "{}", a.state.metrics.encode());

    let b = tune("b").start().await;
    let on_b = ServersClient::new(b.channel().await);
    let two = eventually(Duration::from_secs(10), || async {
        roles(&[on_a.clone(), on_b.clone()]).await
            == [pb::Role::SchedulingPublisher, pb::Role::Subscriber]
    })
    .await;
    assert!(two, "{:?}", roles(&[on_a.clone(), on_b.clone()]).await);
    let status = role_of(&on_b).await;
    assert_eq!((status.leader_id.as_str(), status.live_servers), ("a", 2));
    assert_eq!(status.mode(), pb::RoleMode::Elected);

    // A graceful shutdown gives the lease up: b takes over well before the 5 s lease.
    let left_at = Instant::now();
    a.shutdown().await;
    let took_over = eventually(Duration::from_secs(4), || async {
        role_of(&on_b).await.role() == pb::Role::Single
    })
    .await;
    assert!(took_over, "{:?}", role_of(&on_b).await);
    println!(
        "handover after a graceful shutdown: {:?}",
        left_at.elapsed()
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_cannot_reach_redis_reports_unknown_before_its_lease_can_expire() {
    let redis = RedisServer::start();
    let tune = |id: &str| {
        sidecar(&redis, id).settings(|s| {
            s.lease_ms = LEASE_MS;
            s.server_refresh_ms = REFRESH_MS;
            s.server_ttl_ms = TTL_MS;
            s.request_timeout_ms = 300;
        })
    };
    let a = tune("a").start().await;
    let b = tune("b").start().await;
    let clients = [
        ServersClient::new(a.channel().await),
        ServersClient::new(b.channel().await),
    ];
    let settled = eventually(Duration::from_secs(10), || async {
        let r = roles(&clients).await;
        r.contains(&pb::Role::SchedulingPublisher) && r.contains(&pb::Role::Subscriber)
    })
    .await;
    assert!(settled, "{:?}", roles(&clients).await);
    let r = roles(&clients).await;
    let leader = r
        .iter()
        .position(|r| *r == pb::Role::SchedulingPublisher)
        .unwrap();
    let mut changes = clients[leader]
        .clone()
        .watch_role(pb::WatchRoleRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = changes.next().await.unwrap().unwrap();
    assert_eq!(first.role(), pb::Role::SchedulingPublisher);

    // Redis stops answering: the leader cannot renew, so it stops claiming the role within its
    // lease, measured from before its last successful renewal.
    redis.pause();
    let paused_at = Instant::now();
    // Every answer "publisher" must come from a request sent before the lease (counted from
    // before the pause, so from after the last renewal could have been sent) ran out.
    let deadline = paused_at + Duration::from_millis(LEASE_MS + 2_000);
    loop {
        let asked_at = Instant::now();
        let status = role_of(&clients[leader]).await;
        match status.role() {
            pb::Role::SchedulingPublisher => assert!(
                asked_at < paused_at + Duration::from_millis(LEASE_MS),
                "still claimed the role {:?} after redis stopped answering",
                asked_at - paused_at
            ),
            pb::Role::Unknown => break,
            other => panic!("unexpected role {other:?}: {status:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the leader never gave up its role"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "leader reported UNKNOWN {:?} after redis was paused",
        paused_at.elapsed()
    );
    let next = tokio::time::timeout(Duration::from_secs(2), changes.next())
        .await
        .expect("WatchRole did not report the change")
        .unwrap()
        .unwrap();
    assert_eq!(next.role(), pb::Role::Unknown, "{next:?}");
    let all_unknown = eventually(Duration::from_millis(TTL_MS + 3_000), || async {
        roles(&clients).await == [pb::Role::Unknown, pb::Role::Unknown]
    })
    .await;
    assert!(all_unknown, "{:?}", roles(&clients).await);

    redis.resume();
    let back = eventually(Duration::from_secs(15), || async {
        let r = roles(&clients).await;
        r.contains(&pb::Role::SchedulingPublisher) && r.contains(&pb::Role::Subscriber)
    })
    .await;
    assert!(back, "{:?}", roles(&clients).await);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn static_mode_pins_every_server_whatever_redis_says() {
    let mut redis = RedisServer::start();
    let mut sidecars = Vec::new();
    for id in ["a", "b", "c"] {
        let s = sidecar(&redis, id).settings(|s| {
            s.role = "scheduling-publisher".into();
            s.server_refresh_ms = REFRESH_MS;
            s.server_ttl_ms = TTL_MS;
        });
        sidecars.push(s.start().await);
    }
    let mut clients = Vec::new();
    for sidecar in &sidecars {
        clients.push(ServersClient::new(sidecar.channel().await));
    }
    for status in join_all(clients.iter().map(role_of)).await {
        assert_eq!(status.role(), pb::Role::SchedulingPublisher, "{status:?}");
        assert_eq!(status.mode(), pb::RoleMode::Static);
    }
    let listed = eventually(Duration::from_secs(10), || async {
        let list = clients[0]
            .clone()
            .list_servers(pb::ListServersRequest {})
            .await
            .unwrap()
            .into_inner();
        list.servers.len() == 3
            && list
                .servers
                .iter()
                .all(|s| s.role() == pb::Role::SchedulingPublisher)
            && list.leader_id.is_empty()
    })
    .await;
    assert!(listed);
    redis.kill();
    for status in join_all(clients.iter().map(role_of)).await {
        assert_eq!(status.role(), pb::Role::SchedulingPublisher, "{status:?}");
    }
    for sidecar in sidecars {
        sidecar.shutdown().await;
    }
}
