//! The fault proxy against a real Redis: bytes pass unchanged, and each fault touches only the
//! connections and messages it names. Lower bounds on time only (a delay can never make a
//! message early); everything else is awaited as an event.

use std::time::Duration;

use coherence_testkit::{Flow, Link, RedisProxy, RedisServer};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

/// A bound on waits for something that must happen; generous for a loaded machine.
const WAIT: Duration = Duration::from_secs(10);

fn client(url: &str) -> redis::Client {
    redis::Client::open(format!("{url}?protocol=resp3")).expect("client")
}

async fn command_connection(url: &str) -> MultiplexedConnection {
    client(url)
        .get_multiplexed_async_connection()
        .await
        .expect("command connection")
}

/// A RESP3 connection subscribed to `channel`, and its pushes.
async fn subscriber(
    url: &str,
    channel: &str,
) -> (MultiplexedConnection, mpsc::UnboundedReceiver<PushInfo>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_push_sender(tx)
        .set_response_timeout(Some(Duration::from_secs(1)));
    let mut conn = client(url)
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("subscription connection");
    redis::cmd("SUBSCRIBE")
        .arg(channel)
        .query_async::<Value>(&mut conn)
        .await
        .expect("SUBSCRIBE");
    (conn, rx)
}

/// The next message payload pushed, skipping confirmations.
async fn next_message(rx: &mut mpsc::UnboundedReceiver<PushInfo>) -> Option<String> {
    loop {
        let push = timeout(WAIT, rx.recv()).await.ok()??;
        match push.kind {
            PushKind::Message => {
                let payload: String = redis::from_redis_value(push.data[1].clone()).ok()?;
                return Some(payload);
            }
            PushKind::Disconnection => return None,
            _ => continue,
        }
    }
}

fn publish(redis: &RedisServer, channel: &str, payload: &str) {
    let receivers: i64 = redis.cmd(&["PUBLISH", channel, payload]).expect("PUBLISH");
    assert_eq!(receivers, 1, "one subscriber");
}

async fn ping(conn: &mut MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("PING").query_async(conn).await
}

#[tokio::test]
async fn commands_and_messages_pass_unchanged() {
    let redis = RedisServer::start();
    let proxy = RedisProxy::start(redis.port()).await;
    let mut conn = command_connection(&proxy.url()).await;
    let big = "x".repeat(200_000);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg(&big)
        .query_async(&mut conn)
        .await
        .unwrap();
    let back: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(back, big);
    let (_sub, mut rx) = subscriber(&proxy.url(), "ch").await;
    publish(&redis, "ch", "i|e|1|0|v|k");
    assert_eq!(next_message(&mut rx).await.as_deref(), Some("i|e|1|0|v|k"));
    let stats = proxy.stats();
    assert_eq!(stats.connections, 2, "{stats:?}");
    assert_eq!(stats.subscriptions, 1, "{stats:?}");
}

#[tokio::test]
async fn a_delay_holds_subscription_messages_only() {
    let redis = RedisServer::start();
    let proxy = RedisProxy::start(redis.port()).await;
    let (_sub, mut rx) = subscriber(&proxy.url(), "ch").await;
    let mut conn = command_connection(&proxy.url()).await;
    let delay = Duration::from_millis(400);
    proxy.set_flow(Link::Subscription, Flow::Delay(delay));
    let published = Instant::now();
    publish(&redis, "ch", "one");
    publish(&redis, "ch", "two");
    assert_eq!(next_message(&mut rx).await.as_deref(), Some("one"));
    assert!(
        published.elapsed() >= delay,
        "delivered after {:?}, before the delay {delay:?}",
        published.elapsed()
    );
    assert_eq!(next_message(&mut rx).await.as_deref(), Some("two"));

    // Commands are not held: with an hour's delay on subscriptions a PING still answers.
    proxy.set_flow(Link::Subscription, Flow::Delay(Duration::from_secs(3600)));
    publish(&redis, "ch", "three");
    let pong = timeout(WAIT, ping(&mut conn)).await.expect("PING answered");
    assert_eq!(pong.unwrap(), "PONG");
    // Shortening the delay releases what it held.
    proxy.set_flow(Link::Subscription, Flow::Pass);
    assert_eq!(next_message(&mut rx).await.as_deref(), Some("three"));
}

#[tokio::test]
async fn invalidations_are_dropped_silently_and_fences_pass() {
    let redis = RedisServer::start();
    let proxy = RedisProxy::start(redis.port()).await;
    let (mut sub, mut rx) = subscriber(&proxy.url(), "ch").await;
    proxy.drop_invalidations(true);
    publish(&redis, "ch", "i|e|1|0|e.1.a|k");
    publish(&redis, "ch", "f|nonce|e|1");
    publish(&redis, "ch", "i|e|2|0|e.2.b|k");
    publish(&redis, "ch", "other");
    assert_eq!(next_message(&mut rx).await.as_deref(), Some("f|nonce|e|1"));
    assert_eq!(next_message(&mut rx).await.as_deref(), Some("other"));
    // The same connection is alive and still subscribed: no disconnect to notice.
    assert_eq!(ping(&mut sub).await.unwrap(), "PONG");
    proxy.drop_invalidations(false);
    publish(&redis, "ch", "i|e|3|0|e.3.c|k");
    assert_eq!(
        next_message(&mut rx).await.as_deref(),
        Some("i|e|3|0|e.3.c|k")
    );
    let stats = proxy.stats();
    assert_eq!(stats.invalidations_seen, 3, "{stats:?}");
    assert_eq!(stats.invalidations_dropped, 2, "{stats:?}");
    assert_eq!(stats.fences_passed, 1, "{stats:?}");
    assert_eq!(stats.connections, 1, "no reconnect: {stats:?}");
}

/// Waits until `n` invalidations in all have reached the proxy from Redis.
async fn arrived(proxy: &RedisProxy, n: u64) {
    let deadline = Instant::now() + WAIT;
    while proxy.stats().invalidations_seen < n {
        assert!(
            Instant::now() < deadline,
            "{n} invalidations did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn which_invalidations_are_dropped_is_decided_on_arrival() {
    let redis = RedisServer::start();
    let proxy = RedisProxy::start(redis.port()).await;
    let (_sub, mut rx) = subscriber(&proxy.url(), "ch").await;
    proxy.set_flow(Link::Subscription, Flow::Stall);
    publish(&redis, "ch", "i|1");
    arrived(&proxy, 1).await;
    proxy.drop_invalidations(true);
    publish(&redis, "ch", "i|2");
    arrived(&proxy, 2).await;
    proxy.drop_invalidations(false);
    publish(&redis, "ch", "i|3");
    proxy.set_flow(Link::Subscription, Flow::Pass);
    assert_eq!(next_message(&mut rx).await.as_deref(), Some("i|1"));
    assert_eq!(next_message(&mut rx).await.as_deref(), Some("i|3"));
    assert_eq!(proxy.stats().invalidations_dropped, 1);
}

#[tokio::test]
async fn a_stall_holds_messages_in_order_until_released() {
    let redis = RedisServer::start();
    let proxy = RedisProxy::start(redis.port()).await;
    let (_sub, mut rx) = subscriber(&proxy.url(), "ch").await;
    let mut conn = command_connection(&proxy.url()).await;
    proxy.set_flow(Link::Subscription, Flow::Stall);
    for i in 0..100 {
        publish(&redis, "ch", &i.to_string());
    }
    assert_eq!(ping(&mut conn).await.unwrap(), "PONG");
    // Nothing is released by itself: a subscriber sees nothing until the stall ends.
    assert!(timeout(Duration::from_millis(300), next_message(&mut rx))
        .await
        .is_err());
    proxy.set_flow(Link::Subscription, Flow::Pass);
    for i in 0..100 {
        assert_eq!(next_message(&mut rx).await, Some(i.to_string()));
    }
}

#[tokio::test]
async fn a_blackholed_command_link_answers_nothing_while_messages_flow() {
    let redis = RedisServer::start();
    let proxy = RedisProxy::start(redis.port()).await;
    let (_sub, mut rx) = subscriber(&proxy.url(), "ch").await;
    let config =
        AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_millis(300)));
    let mut conn = client(&proxy.url())
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    proxy.set_flow(Link::Command, Flow::Blackhole);
    // The command reaches Redis (client→server passes), its reply never comes back.
    let set: redis::RedisResult<()> = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut conn)
        .await;
    assert!(set.is_err(), "a reply came through the blackhole");
    let v: String = redis.cmd(&["GET", "k"]).unwrap();
    assert_eq!(v, "v");
    publish(&redis, "ch", "still flowing");
    assert_eq!(
        next_message(&mut rx).await.as_deref(),
        Some("still flowing")
    );
    assert!(proxy.stats().blackholed >= 1);
}

#[tokio::test]
async fn unreachable_refuses_new_connections_and_cut_closes_open_ones() {
    let redis = RedisServer::start();
    let proxy = RedisProxy::start(redis.port()).await;
    let (_sub, mut rx) = subscriber(&proxy.url(), "ch").await;
    proxy.set_accepting(false);
    proxy.cut();
    assert_eq!(
        timeout(WAIT, next_message(&mut rx)).await.ok().flatten(),
        None
    );
    let refused = client(&proxy.url())
        .get_multiplexed_async_connection()
        .await;
    assert!(refused.is_err(), "connected while not accepting");
    assert!(proxy.stats().refused >= 1);
    proxy.set_accepting(true);
    let mut conn = command_connection(&proxy.url()).await;
    assert_eq!(ping(&mut conn).await.unwrap(), "PONG");
}
