//! The memory budget (docs/operations.md): streams whose apps stop reading pin no memory past
//! their buffers' byte budgets, lose nothing silently, and the sidecar keeps answering.
//!
//! Each test stalls a stream (opens it, reads its first event, then stops reading; the client
//! advertises small HTTP/2 windows so that flow control stops the sidecar quickly), drives more
//! traffic past it than every buffer together could hold, and asserts: the sidecar's buffer
//! (the gauge `coherence_buffer_bytes{buffer}`) never held more than its setting; a small call
//! is answered meanwhile; and once the stream reads again, what it skipped is announced
//! (`Resync` / `MissedMessages`) and everything after is delivered in order. The stream limits
//! themselves (Watch, Subscribe, WatchRole, health Watch) are hit here too.

use coherence_proto::v1 as pb;
use coherence_proto::v1::cache_versions_client::CacheVersionsClient;
use coherence_proto::v1::notifications_client::NotificationsClient;
use coherence_testkit::{RedisServer, TestSidecar, WAIT};
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

/// Budget of the stalled stream's ring in these tests.
const RING_BYTES: usize = 256 * 1024;

/// A channel whose HTTP/2 windows are the protocol's minimum, so that a stream the test does
/// not read stops the sidecar's sending after 64 KiB.
async fn small_window_channel(url: String) -> Channel {
    Endpoint::from_shared(url)
        .expect("url")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect")
}

/// `refused` is `RESOURCE_EXHAUSTED` naming `setting`, the limit that refused it.
fn assert_refused_naming(refused: &tonic::Status, setting: &str) {
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains(setting), "{refused:?}");
}

/// `stream` once its first message arrived (within [`WAIT`]): a stream that is really open.
async fn live<T>(mut stream: Streaming<T>) -> Result<Streaming<T>, tonic::Status> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no first message"))??
        .ok_or_else(|| tonic::Status::internal("the stream ended at once"))?;
    Ok(stream)
}

/// Reads `stream` (once the test lets it read again) up to the first message `done` accepts,
/// within [`WAIT`].
async fn read_until<T>(stream: &mut Streaming<T>, done: impl Fn(&T) -> bool) -> Vec<T> {
    let read = async {
        let mut received = Vec::new();
        loop {
            let message = stream
                .message()
                .await
                .expect("the stream stays up")
                .expect("the stream stays open");
            let last = done(&message);
            received.push(message);
            if last {
                return received;
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the last message arrives once the stream reads again")
}

/// Keys of about 1 KiB, in bump order.
fn big_keys(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("k{i:06}-{}", "x".repeat(1000)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stream_that_stops_reading_pins_no_more_than_the_ring_and_is_told_to_resync() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("stalled-watch")
        .settings(|s| {
            s.watch_buffer_bytes = RING_BYTES;
            // One shard: invalidations are issued, and arrive, in bump order.
            s.shards = 1;
        })
        .start()
        .await;
    let gauge = sidecar.state.metrics.buffer("watch");
    let mut stalled = CacheVersionsClient::new(small_window_channel(sidecar.grpc_url()).await);
    let mut caller = CacheVersionsClient::connect(sidecar.grpc_url())
        .await
        .unwrap();
    let known = caller
        .get(pb::GetRequest {
            keys: vec!["known".into()],
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner();

    let mut stream = stalled
        .watch(pb::WatchRequest {
            prefixes: vec!["k".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a first event (heartbeat)")
        .unwrap();

    // 4,000 invalidations of ~1.1 KiB: far more than the client's window (64 KiB), hyper's
    // send buffer (400 KiB) and the ring (256 KiB) together.
    let keys = big_keys(4_000);
    for chunk in keys.chunks(500) {
        caller
            .bump(pb::BumpRequest {
                keys: chunk.to_vec(),
            })
            .await
            .expect("bumps are served while a watcher stalls");
        let held = usize::try_from(gauge.get()).unwrap();
        assert!(held <= RING_BYTES, "the ring held {held} bytes");
        // A small call is answered meanwhile.
        let again = caller
            .get(pb::GetRequest {
                keys: vec!["known".into()],
                consistency: 0,
            })
            .await
            .expect("a small Get is answered while a watcher stalls")
            .into_inner();
        assert_eq!(again.versions[0].token, known.versions[0].token);
    }
    let held = usize::try_from(gauge.get()).unwrap();
    assert!(
        held > RING_BYTES / 2,
        "the ring filled up to its budget ({held} bytes): the test drove enough traffic"
    );

    // Read again, up to the last key's invalidation.
    let last = keys.last().unwrap().clone();
    let received = read_until(&mut stream, |e: &pb::WatchEvent| {
        matches!(&e.event, Some(pb::watch_event::Event::Invalidated(inv)) if inv.key == last)
    })
    .await
    .into_iter()
    .filter_map(|e| e.event)
    .collect::<Vec<_>>();

    // Something was skipped, and announced: after the last Resync the invalidations are
    // exactly the tail of the bumps, in order.
    let last_resync = received
        .iter()
        .rposition(
            |e| matches!(e, pb::watch_event::Event::Resync(r) if r.reason.contains("fell behind")),
        )
        .expect("a Resync announces what the stalled stream skipped");
    let index = |key: &str| keys.iter().position(|k| k == key);
    let tail: Vec<Option<usize>> = received[last_resync..]
        .iter()
        .filter_map(|e| match e {
            pb::watch_event::Event::Invalidated(inv) => Some(index(&inv.key)),
            _ => None,
        })
        .collect();
    assert!(
        !tail.is_empty() && tail.len() < keys.len(),
        "{}",
        tail.len()
    );
    let first = keys.len() - tail.len();
    assert_eq!(
        tail,
        (first..keys.len()).map(Some).collect::<Vec<_>>(),
        "after the Resync, every bump arrives in order (key indices)"
    );
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_stream_that_stops_reading_pins_no_more_than_the_ring_and_gets_missed_messages()
{
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("stalled-subscriber")
        .settings(|s| {
            s.notification_buffer_bytes = RING_BYTES;
        })
        .start()
        .await;
    let gauge = sidecar.state.metrics.buffer("notifications");
    let mut stalled = NotificationsClient::new(small_window_channel(sidecar.grpc_url()).await);
    let mut publisher = NotificationsClient::connect(sidecar.grpc_url())
        .await
        .unwrap();
    let mut caller = CacheVersionsClient::connect(sidecar.grpc_url())
        .await
        .unwrap();
    let mut stream = stalled
        .subscribe(pb::SubscribeRequest {
            topics: vec!["orders".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("Subscribed")
        .unwrap()
        .unwrap();
    assert!(matches!(
        first.event,
        Some(pb::notification_event::Event::Subscribed(_))
    ));

    // 200 notifications of 60 KiB: 12 MB, far past every buffer on the way.
    let count = 200u32;
    for i in 0..count {
        let mut payload = i.to_be_bytes().to_vec();
        payload.resize(60 * 1024, 0);
        publisher
            .publish(pb::PublishRequest {
                topic: "orders".into(),
                payload,
            })
            .await
            .expect("Publish is served while a subscriber stalls");
        let held = usize::try_from(gauge.get()).unwrap();
        assert!(
            held <= RING_BYTES,
            "the notification ring held {held} bytes"
        );
    }
    caller
        .check(pb::CheckRequest {
            entries: vec![pb::KeyVersion {
                key: "known".into(),
                version: Some(pb::Version {
                    token: "x".into(),
                    ..Default::default()
                }),
            }],
            consistency: 0,
        })
        .await
        .expect("a small Check is answered while a subscriber stalls");

    let received = read_until(&mut stream, |e: &pb::NotificationEvent| {
        matches!(&e.event, Some(pb::notification_event::Event::Notification(n))
            if n.payload[..4] == (count - 1).to_be_bytes())
    })
    .await
    .into_iter()
    .filter_map(|e| e.event)
    .collect::<Vec<_>>();
    let last_missed = received
        .iter()
        .rposition(|e| matches!(e, pb::notification_event::Event::Missed(_)))
        .expect("MissedMessages announces what the stalled stream skipped");
    let tail: Vec<u32> = received[last_missed..]
        .iter()
        .filter_map(|e| match e {
            pb::notification_event::Event::Notification(n) => {
                Some(u32::from_be_bytes(n.payload[..4].try_into().unwrap()))
            }
            _ => None,
        })
        .collect();
    assert!(!tail.is_empty() && tail.len() < count as usize);
    let first = count - tail.len() as u32;
    assert_eq!(
        tail,
        (first..count).collect::<Vec<_>>(),
        "after MissedMessages, every notification arrives in order"
    );
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_their_limit_are_refused_until_one_closes() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("stream-limits")
        .settings(|s| {
            s.max_watch_streams = 2;
            s.max_subscribe_streams = 1;
        })
        .start()
        .await;
    let mut client = CacheVersionsClient::connect(sidecar.grpc_url())
        .await
        .unwrap();
    let watch = |mut client: CacheVersionsClient<Channel>| async move {
        client
            .watch(pb::WatchRequest {
                prefixes: vec![],
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    };
    let first = watch(client.clone()).await.expect("first stream");
    let _second = watch(client.clone()).await.expect("second stream");
    let refused = watch(client.clone()).await.expect_err("third stream");
    assert_refused_naming(&refused, "max_watch_streams");
    // Small calls are still served.
    client
        .get(pb::GetRequest {
            keys: vec!["k".into()],
            consistency: 0,
        })
        .await
        .expect("Get is served");
    drop(first);
    let reopened = coherence_testkit::eventually(WAIT, || {
        let client = client.clone();
        async move { watch(client).await.is_ok() }
    })
    .await;
    assert!(reopened, "a slot is free again once a stream closed");

    let mut notes = NotificationsClient::connect(sidecar.grpc_url())
        .await
        .unwrap();
    let request = || pb::SubscribeRequest {
        topics: vec!["t".into()],
    };
    let _held = notes.subscribe(request()).await.expect("first subscriber");
    let refused = notes.subscribe(request()).await.expect_err("second");
    assert_refused_naming(&refused, "max_subscribe_streams");
    sidecar.shutdown().await;
}

/// `max_role_streams` and `max_health_watch_streams`: Servers.WatchRole and grpc.health.v1
/// Health/Watch streams past their limits are refused with `RESOURCE_EXHAUSTED` naming the
/// setting (and counted), the unary calls of the same services are still answered, and a slot
/// is free again once a stream closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_and_health_watch_streams_past_their_limits_are_refused_until_one_closes() {
    use coherence_proto::v1::servers_client::ServersClient;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("status-stream-limits")
        .settings(|s| {
            s.max_role_streams = 2;
            s.max_health_watch_streams = 1;
        })
        .start()
        .await;
    let refusals = |limit: &'static str| sidecar.state.metrics.limit_counter(limit).get();
    let channel = sidecar.channel().await;

    // WatchRole: two streams, each answering its first status; a third is refused.
    let servers = ServersClient::new(channel.clone());
    let watch_role = |mut client: ServersClient<Channel>| async move {
        let stream = client.watch_role(pb::WatchRoleRequest {}).await?;
        live(stream.into_inner()).await
    };
    let first = watch_role(servers.clone()).await.expect("first WatchRole");
    let _second = watch_role(servers.clone()).await.expect("second WatchRole");
    let refused = watch_role(servers.clone())
        .await
        .expect_err("a third WatchRole stream");
    assert_refused_naming(&refused, "max_role_streams");
    assert_eq!(refusals("max_role_streams"), 1);
    servers
        .clone()
        .get_role(pb::GetRoleRequest {})
        .await
        .expect("GetRole is served");
    drop(first);
    let reopened = coherence_testkit::eventually(WAIT, || {
        let servers = servers.clone();
        async move { watch_role(servers).await.is_ok() }
    })
    .await;
    assert!(
        reopened,
        "a WatchRole slot is free again once a stream closed"
    );

    // Health/Watch: one stream, answering SERVING; a second is refused; Check is not limited.
    let health = HealthClient::new(channel);
    let request = || HealthCheckRequest {
        service: String::new(),
    };
    let health_watch = |mut client: HealthClient<Channel>| async move {
        live(client.watch(request()).await?.into_inner()).await
    };
    let held = health_watch(health.clone())
        .await
        .expect("first health Watch");
    let refused = health_watch(health.clone())
        .await
        .expect_err("a second health Watch stream");
    assert_refused_naming(&refused, "max_health_watch_streams");
    assert_eq!(refusals("max_health_watch_streams"), 1);
    for _ in 0..3 {
        health
            .clone()
            .check(request())
            .await
            .expect("health Check is not limited");
    }
    drop(held);
    let reopened = coherence_testkit::eventually(WAIT, || {
        let health = health.clone();
        async move { health_watch(health).await.is_ok() }
    })
    .await;
    assert!(
        reopened,
        "a health Watch slot is free again once a stream closed"
    );
    sidecar.shutdown().await;
}

/// `push_buffer_bytes`: a subscription that cannot keep up (here: it waits on a gap repair
/// while the command connection is stalled) drops what does not fit instead of queueing it,
/// then re-subscribes and repairs; the invalidations it dropped reach its watchers or are
/// covered by a `Resync`, and every new version is current on it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_falls_behind_drops_past_its_push_budget_and_repairs() {
    use coherence_testkit::{Flow, Link, RedisProxy};
    const PUSH_BYTES: usize = 16 * 1024;
    let redis = RedisServer::start();
    let proxy = RedisProxy::start(redis.port()).await;
    let one_shard = |s: &mut coherence_sidecar::process::config::Settings| {
        s.shards = 1;
        s.push_buffer_bytes = PUSH_BYTES;
    };
    let a = TestSidecar::builder(&proxy.url())
        .server_id("a")
        .settings(one_shard)
        .start()
        .await;
    let b = TestSidecar::builder(&redis.url())
        .server_id("b")
        .settings(one_shard)
        .start()
        .await;
    let mut on_a = CacheVersionsClient::new(a.channel().await);
    let on_b = CacheVersionsClient::new(b.channel().await);
    let mut watch = on_a
        .watch(pb::WatchRequest {
            prefixes: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bump = |keys: Vec<String>| {
        let mut on_b = on_b.clone();
        async move {
            on_b.bump(pb::BumpRequest { keys })
                .await
                .expect("bump on b")
                .into_inner()
                .versions
        }
    };

    // A gap first (one invalidation lost), then a burst held back by the proxy.
    proxy.drop_invalidations(true);
    bump(vec!["gap".into()]).await;
    proxy.drop_invalidations(false);
    proxy.set_flow(Link::Subscription, Flow::Stall);
    let keys = big_keys(200);
    let mut versions = Vec::new();
    for chunk in keys.chunks(50) {
        versions.extend(bump(chunk.to_vec()).await);
    }
    // The burst arrives while A's repair of the gap waits on a stalled command connection.
    proxy.set_flow(Link::Command, Flow::Stall);
    proxy.set_flow(Link::Subscription, Flow::Pass);
    let overflows = a.state.metrics.limit_counter("push_buffer_bytes");
    let overflowed = coherence_testkit::eventually(WAIT, || async { overflows.get() >= 1 }).await;
    let held = usize::try_from(a.state.metrics.buffer("push_invalidations").get()).unwrap();
    proxy.set_flow(Link::Command, Flow::Pass);
    assert!(overflowed, "the push queue overflowed");
    assert!(
        held <= PUSH_BYTES + 2 * 1024,
        "the push queue held {held} bytes"
    );

    // Nothing lost: every bumped key's invalidation reaches A's watcher, or a Resync covers it.
    let last = keys.last().unwrap().clone();
    let received = read_until(&mut watch, |e: &pb::WatchEvent| {
        matches!(&e.event, Some(pb::watch_event::Event::Resync(_)))
            || matches!(&e.event, Some(pb::watch_event::Event::Invalidated(inv)) if inv.key == last)
    })
    .await;
    let resynced = received
        .iter()
        .any(|e| matches!(&e.event, Some(pb::watch_event::Event::Resync(_))));
    if !resynced {
        let seen: std::collections::HashSet<&str> = received
            .iter()
            .filter_map(|e| match &e.event {
                Some(pb::watch_event::Event::Invalidated(inv)) => Some(inv.key.as_str()),
                _ => None,
            })
            .collect();
        assert!(keys.iter().all(|k| seen.contains(k.as_str())));
    }
    // And A vouches for every new version once it has repaired.
    let entries: Vec<pb::KeyVersion> = keys
        .iter()
        .zip(&versions)
        .map(|(k, v)| pb::KeyVersion {
            key: k.clone(),
            version: Some(v.clone()),
        })
        .collect();
    let all_current = coherence_testkit::eventually(WAIT, || {
        let mut on_a = on_a.clone();
        let entries = entries.clone();
        async move {
            on_a.check(pb::CheckRequest {
                entries,
                consistency: 0,
            })
            .await
            .is_ok_and(|r| r.into_inner().results.iter().all(|r| r.current))
        }
    })
    .await;
    assert!(
        all_current,
        "A repaired: every new version is current on it"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// `request_buffer_bytes`: the bytes of requests the gRPC port holds, all connections together,
/// stay within the budget, and a quarter of it is kept for small requests. While one large
/// request holds more than the whole budget (a Check announcing 1,100 KiB, of which it sends
/// 400 KiB and then waits; alone, it is admitted), another large Check is refused at once with
/// `RESOURCE_EXHAUSTED` naming the setting, while a small Get is served from the kept quarter;
/// once the holder is gone the same Check is served, and so is a Check larger than the large
/// share when it is alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_request_budget_is_refused_while_others_hold_it() {
    const BUDGET: usize = 1024 * 1024;
    const ANNOUNCED: usize = 1100 * 1024;
    const SENT: usize = 400 * 1024;
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("request-budget")
        .settings(|s| s.request_buffer_bytes = BUDGET)
        .start()
        .await;
    let held_bytes = || async {
        coherence_testkit::exposition::sample(
            &sidecar.scrape().await,
            "coherence_buffer_bytes{buffer=\"requests\"}",
        )
        .unwrap_or(-1.0)
    };

    // The holder: a Check announcing a 1,100 KiB message, of which it sends 400 KiB.
    let tcp = tokio::net::TcpStream::connect(sidecar.grpc_addr())
        .await
        .expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("h2 ready");
    let request = http::Request::post(format!(
        "http://{}/coherence.v1.CacheVersions/Check",
        sidecar.grpc_addr()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    let (holder_response, mut holder) = h2.send_request(request, false).expect("send");
    let mut partial = vec![0u8];
    partial.extend_from_slice(&(ANNOUNCED as u32).to_be_bytes());
    partial.resize(SENT, 0);
    holder
        .send_data(bytes::Bytes::from(partial), false)
        .expect("send the first 400 KiB");
    assert!(
        coherence_testkit::eventually(WAIT, || async {
            held_bytes().await == (ANNOUNCED + 5) as f64
        })
        .await,
        "the holder is counted at its announced size ({} held)",
        held_bytes().await
    );

    let mut client = CacheVersionsClient::new(sidecar.channel().await);
    let version = client
        .get(pb::GetRequest {
            keys: vec!["k".into()],
            consistency: 0,
        })
        .await
        .expect("a small Get is served while a large request holds more than the budget")
        .into_inner()
        .versions
        .remove(0);
    let big_check = || pb::CheckRequest {
        entries: (0..2_000)
            .map(|i| pb::KeyVersion {
                key: format!("big-check-{i:05}-{}", "x".repeat(60)),
                version: Some(version.clone()),
            })
            .collect(),
        consistency: 0,
    };
    let refused = match client.check(big_check()).await {
        Ok(served) => panic!(
            "a 260 KB Check would pass the budget, yet it was served ({} results)",
            served.get_ref().results.len()
        ),
        Err(refused) => refused,
    };
    assert_refused_naming(&refused, "request_buffer_bytes");
    assert_eq!(
        held_bytes().await,
        (ANNOUNCED + 5) as f64,
        "the refused Check holds nothing"
    );

    drop(holder);
    drop(holder_response);
    connection.abort();
    assert!(
        coherence_testkit::eventually(WAIT, || async { held_bytes().await == 0.0 }).await,
        "the holder's bytes are given back when it is gone ({} held)",
        held_bytes().await
    );
    client
        .check(big_check())
        .await
        .expect("the same Check is served once the budget is free");

    // Alone, a request may be larger than its share (it is within the decoder's limit).
    let alone = pb::CheckRequest {
        entries: (0..8_000)
            .map(|i| pb::KeyVersion {
                key: format!("alone-{i:05}-{}", "x".repeat(60)),
                version: Some(version.clone()),
            })
            .collect(),
        consistency: 0,
    };
    client
        .check(alone)
        .await
        .expect("a 1 MB Check alone is served though the large share is 768 KiB");
    assert_eq!(held_bytes().await, 0.0, "and everything is given back");
    let scrape = sidecar.scrape().await;
    assert!(
        coherence_testkit::exposition::sample(
            &scrape,
            "coherence_limits_reached_total{limit=\"request_buffer_bytes\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "the refusal is counted"
    );
    sidecar.shutdown().await;
}

/// A stream of requests (reflection's `ServerReflectionInfo`, the one bidirectional method the
/// port serves) holds only the message it is being sent, not every message it was ever sent:
/// its handler answers (returns the response stream) at once, and each message is handled
/// before the next is read. Sent more bytes in all than the whole budget, one large message
/// at a time and each answered, it holds none once answered, and a large Get is served
/// while it stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_requests_gives_back_each_message_once_it_is_answered() {
    use reflection::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1 as reflection;
    const BUDGET: usize = 1024 * 1024;
    const MESSAGE: usize = 64 * 1024;
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("request-budget-stream")
        .settings(|s| s.request_buffer_bytes = BUDGET)
        .start()
        .await;
    let held_bytes = || async {
        coherence_testkit::exposition::sample(
            &sidecar.scrape().await,
            "coherence_buffer_bytes{buffer=\"requests\"}",
        )
        .unwrap_or(-1.0)
    };

    let (requests, rx) = tokio::sync::mpsc::channel(1);
    let mut responses =
        reflection::server_reflection_client::ServerReflectionClient::new(sidecar.channel().await)
            .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("the reflection stream opens")
            .into_inner();
    // 20 × 64 KiB (each counted large): more than the whole budget, one message at a time,
    // each answered before the next.
    for i in 0..20 {
        requests
            .send(reflection::ServerReflectionRequest {
                host: format!("{i}").repeat(MESSAGE),
                message_request: Some(MessageRequest::ListServices(String::new())),
            })
            .await
            .expect("the stream takes the request");
        let answer = tokio::time::timeout(WAIT, responses.message())
            .await
            .expect("answered within WAIT");
        assert!(
            matches!(answer, Ok(Some(_))),
            "request {i} of the stream is answered: {answer:?}"
        );
    }
    let mut client = CacheVersionsClient::new(sidecar.channel().await);
    client
        .get(pb::GetRequest {
            keys: (0..1_000).map(|i| format!("large-{i}")).collect(),
            consistency: 0,
        })
        .await
        .expect("a large Get is served while the stream is open and idle");
    assert!(
        coherence_testkit::eventually(WAIT, || async { held_bytes().await == 0.0 }).await,
        "the stream's answered messages are given back ({} held while it is open)",
        held_bytes().await
    );
    drop(requests);
    drop(responses);
    sidecar.shutdown().await;
}

/// `grpc.health.v1.Health` answers anyone, token or not (probes cannot send a header), so its
/// requests are kept out of the request budget (and bounded by a decoder limit of their own):
/// a client without the token that holds a large health request half sent takes nothing from
/// the calls of those with it, and a health Check answers `SERVING` meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_requests_anyone_may_send_take_nothing_from_the_request_budget() {
    use coherence_client::{AuthToken, Client};
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    const BUDGET: usize = 1024 * 1024;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "0123456789abcdef-coherence-token\n").unwrap();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("request-budget-health")
        .settings(|s| {
            s.listen = "0.0.0.0:0".parse().unwrap();
            s.auth_token_file = Some(token_file.clone());
            s.request_buffer_bytes = BUDGET;
        })
        .start()
        .await;
    let addr = format!("127.0.0.1:{}", sidecar.grpc_addr().port());

    // Without the token: 80 health Checks, each announcing 4,000 bytes (within health's own
    // decoder limit) and sending 100, the rest never. Counted, they would hold 320,000 bytes:
    // more than the quarter of the budget kept for small requests (256 KiB).
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("h2 ready");
    let mut partial = vec![0u8];
    partial.extend_from_slice(&4_000u32.to_be_bytes());
    partial.resize(100, 0);
    let partial = bytes::Bytes::from(partial);
    let mut holders = Vec::new();
    for _ in 0..80 {
        let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        h2 = h2.ready().await.expect("h2 ready");
        let (response, mut body) = h2.send_request(request, false).expect("send");
        body.send_data(partial.clone(), false).expect("send");
        holders.push((response, body));
    }
    // They have reached the sidecar once a request sent after them on the same connection is
    // answered (HTTP/2 delivers a connection's frames in order).
    let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    h2 = h2.ready().await.expect("h2 ready");
    let (answered, mut body) = h2.send_request(request, false).expect("send");
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("send");
    tokio::time::timeout(WAIT, answered)
        .await
        .expect("answered within WAIT")
        .expect("a whole health Check sent after them is answered");

    let client = Client::connect(&format!("http://{addr}"))
        .await
        .expect("connect")
        .with_auth_token(AuthToken::from_file(&token_file).expect("token"));
    // A small Get of 15 keys (counted ~4 KB: more than the 1,819 bytes the 65 health requests
    // that would fit in the small quarter would leave of it).
    let keys: Vec<String> = (0..15).map(|i| format!("k{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    client
        .get(&keys)
        .await
        .expect("a small Get with the token is served while 80 health requests are half sent");
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    // SERVING once the health reporter has caught up with readiness (it follows it).
    let serving = || {
        let mut health = HealthClient::new(channel.clone());
        async move {
            let answer = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            matches!(answer, Ok(response) if response.get_ref().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
        }
    };
    assert!(
        coherence_testkit::eventually(WAIT, serving).await,
        "health answers SERVING however full the budget: {:?}",
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
    );

    drop(holders);
    connection.abort();
    sidecar.shutdown().await;
}
