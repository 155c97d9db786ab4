//! A server id belongs to one process: a second `coherence-sidecar` process started with a
//! server_id that a live process of the namespace has registered refuses to serve (not ready,
//! an error log line, `coherence_server_id_conflict` 1, role UNKNOWN), and its graceful exit
//! removes neither the first one's registration nor its leader lease. When the first process
//! dies, the waiting one takes the id over once the registration is older than server_ttl_ms.
//! All real processes against a real Redis; Redis keyspace notifications witness every DEL.

use std::sync::{Arc, Mutex};

use coherence_proto::v1 as pb;
use coherence_proto::v1::servers_client::ServersClient;
use coherence_testkit::exposition::sample;
use coherence_testkit::{eventually, http_get, RedisServer, SidecarProcess, WAIT};
use futures::StreamExt;

const ID: &str = "twin";
const LEADER_KEY: &str = "coh:{dup:servers}:leader";
const INFO_KEY: &str = "coh:{dup:servers}:s:twin";
const CONFLICT: &str = "coherence_server_id_conflict";

/// A sidecar process of namespace `dup` with server_id [`ID`], and the probes these tests ask
/// of it.
struct Process(SidecarProcess);

impl Process {
    fn spawn(redis: &RedisServer) -> Process {
        let process =
            SidecarProcess::builder(env!("CARGO_BIN_EXE_coherence-sidecar"), &redis.url())
                .args(&["--namespace", "dup", "--server-id", ID])
                .args(&["--lease-ms", "1500", "--server-refresh-ms", "100"])
                .args(&["--server-ttl-ms", "1000"])
                .spawn();
        Process(process)
    }

    fn log(&self) -> String {
        self.0.output()
    }

    async fn ready(&self) -> Option<(u16, String)> {
        let connected = tokio::net::TcpStream::connect(self.0.admin_addr())
            .await
            .is_ok();
        if !connected {
            return None;
        }
        let response = http_get(self.0.admin_addr(), "/readyz", None).await?;
        Some((response.status, response.body))
    }

    /// Ready, and the only server holding the lease.
    async fn ready_and_single(&self) -> bool {
        self.ready().await.is_some_and(|(status, _)| status == 200)
            && self
                .role()
                .await
                .is_some_and(|r| r.role() == pb::Role::Single)
    }

    async fn conflict(&self) -> Option<f64> {
        tokio::net::TcpStream::connect(self.0.admin_addr())
            .await
            .ok()?;
        let metrics = http_get(self.0.admin_addr(), "/metrics", None).await?;
        sample(&metrics.body, CONFLICT)
    }

    async fn role(&self) -> Option<pb::RoleStatus> {
        let mut client = ServersClient::connect(self.0.grpc_url()).await.ok()?;
        Some(
            client
                .get_role(pb::GetRoleRequest {})
                .await
                .ok()?
                .into_inner(),
        )
    }

    fn signal(&self, signal: &str) {
        self.0.signal(signal);
    }

    async fn wait_exit(&mut self) {
        let exited = self.0.wait_exit(WAIT).await.is_some();
        assert!(exited, "the sidecar did not exit: {}", self.log());
    }
}

/// Every keyspace event on the registry's keys, as `(key, event)`.
async fn watch_keyspace(redis: &RedisServer) -> Arc<Mutex<Vec<(String, String)>>> {
    let _: () = redis
        .cmd(&["CONFIG", "SET", "notify-keyspace-events", "Kgh"])
        .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    for key in [LEADER_KEY, INFO_KEY] {
        pubsub
            .subscribe(format!("__keyspace@0__:{key}"))
            .await
            .unwrap();
    }
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let key = message
                .get_channel_name()
                .trim_start_matches("__keyspace@0__:")
                .to_string();
            let event: String = message.get_payload().unwrap_or_default();
            sink.lock().unwrap().push((key, event));
        }
    });
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_a_live_server_id_refuses_to_serve_and_cannot_remove_the_first_ones_lease(
) {
    let redis = RedisServer::start();
    let first = Process::spawn(&redis);
    let leading = eventually(WAIT, || first.ready_and_single()).await;
    assert!(leading, "the first process never led: {}", first.log());
    let lease: String = redis.cmd(&["GET", LEADER_KEY]).unwrap();
    let incarnation: String = redis.cmd(&["HGET", INFO_KEY, "incarnation"]).unwrap();
    assert_eq!(
        lease,
        format!("{ID}|{incarnation}"),
        "the lease names the holding process"
    );
    let events = watch_keyspace(&redis).await;

    // A second process with the same id: refuses to serve, says why, and touches nothing.
    let mut second = Process::spawn(&redis);
    let refused = eventually(WAIT, || async { second.conflict().await == Some(1.0) }).await;
    assert!(refused, "no conflict reported: {}", second.log());
    let (status, body) = second.ready().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("server_id"), "{body}");
    let role = second.role().await.unwrap();
    assert_eq!(role.role(), pb::Role::Unknown, "{role:?}");
    assert!(role.reason.contains("another live process"), "{role:?}");
    let logged = eventually(WAIT, || {
        let log = second.log();
        async move { log.contains("another live process has registered this server_id") }
    })
    .await;
    assert!(logged, "no log line: {}", second.log());
    assert_eq!(first.ready().await.unwrap().0, 200, "{}", first.log());
    assert_eq!(first.conflict().await, Some(0.0));

    // Its graceful exit leaves: our registration and lease stay, never deleted.
    second.signal("-TERM");
    second.wait_exit().await;
    let last = |redis: &RedisServer| -> u64 { redis.cmd(&["HGET", INFO_KEY, "last"]).unwrap() };
    let seen = last(&redis);
    let beat_again = eventually(WAIT, || {
        let later = last(&redis) > seen;
        async move { later }
    })
    .await;
    assert!(beat_again, "the first process stopped registering");
    let deleted: Vec<(String, String)> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, event)| event == "del")
        .cloned()
        .collect();
    assert!(
        deleted.is_empty(),
        "the second process's leave deleted {deleted:?}"
    );
    let still: String = redis.cmd(&["GET", LEADER_KEY]).unwrap();
    assert_eq!(still, lease, "the lease changed hands");
    let after: String = redis.cmd(&["HGET", INFO_KEY, "incarnation"]).unwrap();
    assert_eq!(after, incarnation, "the registration changed hands");
    let role = first.role().await.unwrap();
    assert_eq!(role.role(), pb::Role::Single, "{role:?}");

    // A third waits; when the first dies for real, it takes the id over after server_ttl_ms.
    let mut third = Process::spawn(&redis);
    let waiting = eventually(WAIT, || async { third.conflict().await == Some(1.0) }).await;
    assert!(waiting, "{}", third.log());
    let mut first = first;
    first.signal("-KILL");
    first.wait_exit().await;
    let took_over = eventually(WAIT, || third.ready_and_single()).await;
    assert!(took_over, "the third never took over: {}", third.log());
    assert_eq!(third.conflict().await, Some(0.0));
    assert!(
        third.log().contains("server_id registered as ours"),
        "{}",
        third.log()
    );
    let lease: String = redis.cmd(&["GET", LEADER_KEY]).unwrap();
    let incarnation: String = redis.cmd(&["HGET", INFO_KEY, "incarnation"]).unwrap();
    assert_eq!(lease, format!("{ID}|{incarnation}"));
    third.signal("-TERM");
    third.wait_exit().await;
}
