//! Notifications backplane against a real Redis and three sidecars: fan-out exactly once per
//! subscriber, topic filtering, the payload limit, and MissedMessages after a reconnect.

mod kit_support;

use std::time::Duration;

use coherence_proto::v1 as pb;
use coherence_proto::v1::notification_event::Event;
use coherence_proto::v1::notifications_client::NotificationsClient;
use coherence_testkit::RedisServer;
use kit_support::sidecar;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

async fn subscribe(
    client: &NotificationsClient<Channel>,
    topics: &[&str],
) -> Streaming<pb::NotificationEvent> {
    let mut stream = client
        .clone()
        .subscribe(pb::SubscribeRequest {
            topics: topics.iter().map(|t| t.to_string()).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    match next(&mut stream).await {
        Event::Subscribed(s) => assert_eq!(s.topics.len(), topics.len()),
        other => panic!("first event was not `subscribed`: {other:?}"),
    }
    stream
}

async fn next(stream: &mut Streaming<pb::NotificationEvent>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("no event within 10 s")
        .expect("stream ended")
        .expect("stream failed")
        .event
        .expect("empty event")
}

async fn publish(
    client: &NotificationsClient<Channel>,
    topic: &str,
    payload: &[u8],
) -> Result<u64, tonic::Status> {
    client
        .clone()
        .publish(pb::PublishRequest {
            topic: topic.into(),
            payload: payload.to_vec(),
        })
        .await
        .map(|r| r.into_inner().receiving_sidecars)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_on_a_arrives_exactly_once_at_subscribers_on_b_and_c() {
    let redis = RedisServer::start();
    let a = sidecar(&redis, "a").start().await;
    let b = sidecar(&redis, "b").start().await;
    let c = sidecar(&redis, "c").start().await;
    let on_a = NotificationsClient::new(a.channel().await);
    let on_b = NotificationsClient::new(b.channel().await);
    let on_c = NotificationsClient::new(c.channel().await);
    let mut streams = vec![
        subscribe(&on_b, &["orders"]).await,
        subscribe(&on_c, &["orders", "prices"]).await,
        // Two streams on one sidecar each get their own copy.
        subscribe(&on_c, &["orders"]).await,
    ];
    let mut other_topic = subscribe(&on_b, &["prices"]).await;

    for i in 0..20u8 {
        publish(&on_a, "orders", &[i]).await.unwrap();
    }
    // A marker right after the burst: anything between the 20 and it would be a duplicate.
    publish(&on_a, "orders", b"end").await.unwrap();
    publish(&on_a, "prices", b"p").await.unwrap();
    for stream in &mut streams {
        for i in 0..20u8 {
            match next(stream).await {
                Event::Notification(n) => {
                    assert_eq!(
                        (n.topic.as_str(), n.payload.as_slice()),
                        ("orders", &[i][..])
                    );
                    assert_eq!(n.publisher, "a");
                }
                other => panic!("expected message {i}, got {other:?}"),
            }
        }
        match next(stream).await {
            Event::Notification(n) => assert_eq!(n.payload, b"end", "a duplicate arrived: {n:?}"),
            other => panic!("{other:?}"),
        }
    }
    // The stream on "prices" saw none of the "orders" messages.
    match next(&mut other_topic).await {
        Event::Notification(n) => assert_eq!(
            (n.topic.as_str(), n.payload.as_slice()),
            ("prices", &b"p"[..])
        ),
        other => panic!("{other:?}"),
    }
    let metrics = c.state.metrics.encode();
    assert!(
        metrics.contains("coherence_notifications_delivered_total"),
        "{metrics}"
    );
    for sidecar in [a, b, c] {
        sidecar.shutdown().await;
    }
}

#[tokio::test]
async fn oversize_payloads_and_bad_topics_are_refused_naming_the_field() {
    let redis = RedisServer::start();
    let a = sidecar(&redis, "a")
        .settings(|s| s.max_payload_bytes = 1_000)
        .start()
        .await;
    let client = NotificationsClient::new(a.channel().await);
    assert!(
        publish(&client, "t", &[7; 1_000]).await.is_ok(),
        "a payload at the limit is accepted"
    );
    let err = publish(&client, "t", &[7; 1_001]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("payload"), "{}", err.message());
    assert!(
        err.message().contains("max_payload_bytes"),
        "{}",
        err.message()
    );
    let err = publish(&client, "", b"x").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("topic"), "{}", err.message());
    let err = client
        .clone()
        .subscribe(pb::SubscribeRequest { topics: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("topics"), "{}", err.message());
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_is_told_it_may_have_missed_messages_after_a_reconnect() {
    let redis = RedisServer::start();
    let a = sidecar(&redis, "a").start().await;
    let b = sidecar(&redis, "b").start().await;
    let on_a = NotificationsClient::new(a.channel().await);
    let on_b = NotificationsClient::new(b.channel().await);
    let mut stream = subscribe(&on_b, &["orders"]).await;
    publish(&on_a, "orders", b"before").await.unwrap();
    assert!(matches!(next(&mut stream).await, Event::Notification(n) if n.payload == b"before"));

    // Drop every pub/sub connection (ours and the cache subscription): b reconnects.
    let killed: u64 = redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    assert!(killed >= 2, "killed {killed} pub/sub connections");
    match next(&mut stream).await {
        Event::Missed(m) => assert!(m.reason.contains("re-established"), "{m:?}"),
        other => panic!("expected MissedMessages after the reconnect, got {other:?}"),
    }
    // After the event, messages flow again.
    publish(&on_a, "orders", b"after").await.unwrap();
    assert!(matches!(next(&mut stream).await, Event::Notification(n) if n.payload == b"after"));
    a.shutdown().await;
    b.shutdown().await;
}
