//! Input limits: an empty key, a key longer than `max_key_bytes`, more keys than
//! `max_batch_keys` and a Check entry without a version are each refused with
//! `INVALID_ARGUMENT` naming the field and index — and the sidecar keeps serving.

use coherence_proto::v1 as pb;
use coherence_proto::v1::cache_versions_client::CacheVersionsClient;
use coherence_testkit::{RedisServer, TestSidecar};
use tonic::transport::Channel;

async fn connect(url: String) -> CacheVersionsClient<Channel> {
    CacheVersionsClient::connect(url).await.unwrap()
}

fn keys(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn entry(key: &str, token: Option<&str>) -> pb::KeyVersion {
    pb::KeyVersion {
        key: key.to_string(),
        version: token.map(|t| pb::Version {
            token: t.to_string(),
            ..Default::default()
        }),
    }
}

/// Asserts `result` is INVALID_ARGUMENT and its message names every one of `words`.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, words: &[&str]) {
    let status = result.expect_err("the request is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    for word in words {
        assert!(
            status.message().contains(word),
            "{:?} does not name {word:?}",
            status.message()
        );
    }
}

async fn get(
    client: &mut CacheVersionsClient<Channel>,
    k: Vec<String>,
) -> Result<pb::GetResponse, tonic::Status> {
    client
        .get(pb::GetRequest {
            keys: k,
            consistency: 0,
        })
        .await
        .map(|r| r.into_inner())
}

async fn bump(
    client: &mut CacheVersionsClient<Channel>,
    k: Vec<String>,
) -> Result<pb::BumpResponse, tonic::Status> {
    client
        .bump(pb::BumpRequest { keys: k })
        .await
        .map(|r| r.into_inner())
}

async fn check(
    client: &mut CacheVersionsClient<Channel>,
    entries: Vec<pb::KeyVersion>,
) -> Result<pb::CheckResponse, tonic::Status> {
    client
        .check(pb::CheckRequest {
            entries,
            consistency: 0,
        })
        .await
        .map(|r| r.into_inner())
}

async fn watch(
    client: &mut CacheVersionsClient<Channel>,
    prefixes: Vec<String>,
) -> Result<(), tonic::Status> {
    client
        .watch(pb::WatchRequest {
            prefixes,
            ..Default::default()
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limits_refuse_bad_input_naming_field_and_index_and_keep_serving() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::start_named(&redis, "limits").await;
    let mut bad = connect(sidecar.grpc_url()).await;
    let mut other = connect(sidecar.grpc_url()).await;

    // Empty key, at index 1 of each call.
    assert_invalid(
        get(&mut bad, keys(&["content", ""])).await,
        &["keys[1]", "empty"],
    );
    assert_invalid(
        bump(&mut bad, keys(&["content", ""])).await,
        &["keys[1]", "empty"],
    );
    assert_invalid(
        check(
            &mut bad,
            vec![entry("content", Some("x")), entry("", Some("x"))],
        )
        .await,
        &["entries[1].key", "empty"],
    );

    // Longer than the default max_key_bytes (1024); exactly 1024 is fine.
    let longest = "k".repeat(1024);
    let too_long = "k".repeat(1025);
    assert_eq!(
        get(&mut bad, keys(&[&longest]))
            .await
            .unwrap()
            .versions
            .len(),
        1
    );
    assert_invalid(
        get(&mut bad, keys(&["content", &too_long])).await,
        &["keys[1]", "1025 bytes", "max_key_bytes (1024)"],
    );
    assert_invalid(
        bump(&mut bad, keys(&[&too_long])).await,
        &["keys[0]", "max_key_bytes"],
    );
    assert_invalid(
        check(&mut bad, vec![entry(&too_long, Some("x"))]).await,
        &["entries[0].key", "max_key_bytes"],
    );
    assert_invalid(
        watch(&mut bad, keys(&["", &too_long])).await,
        &["prefixes[1]", "max_key_bytes"],
    );

    // More than the default max_batch_keys (10,000).
    let many: Vec<String> = (0..10_001).map(|i| format!("k{i}")).collect();
    assert_invalid(
        get(&mut bad, many.clone()).await,
        &["keys", "10001", "max_batch_keys (10000)"],
    );
    assert_invalid(
        bump(&mut bad, many.clone()).await,
        &["keys", "max_batch_keys"],
    );
    let many_entries = many.iter().map(|k| entry(k, Some("x"))).collect();
    assert_invalid(
        check(&mut bad, many_entries).await,
        &["entries", "max_batch_keys"],
    );

    // A Check entry without a version.
    assert_invalid(
        check(
            &mut bad,
            vec![entry("content", Some("x")), entry("media", None)],
        )
        .await,
        &["entries[1].version", "missing"],
    );

    // Still serving: the client that sent all that, and another one.
    for client in [&mut bad, &mut other] {
        let got = get(client, keys(&["content"])).await.unwrap();
        let bumped = bump(client, keys(&["content"])).await.unwrap();
        assert_ne!(got.versions, bumped.versions);
        let checked = check(
            client,
            vec![entry("content", Some(&bumped.versions[0].token))],
        )
        .await
        .unwrap();
        assert!(checked.results[0].current, "{checked:?}");
    }
    assert!(sidecar.is_ready());
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_configurable() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("small-limits")
        .settings(|s| {
            s.max_key_bytes = 8;
            s.max_batch_keys = 2;
        })
        .start()
        .await;
    let mut client = connect(sidecar.grpc_url()).await;
    assert!(get(&mut client, keys(&["12345678", "b"])).await.is_ok());
    assert_invalid(
        get(&mut client, keys(&["123456789"])).await,
        &["keys[0]", "max_key_bytes (8)"],
    );
    assert_invalid(
        bump(&mut client, keys(&["a", "b", "c"])).await,
        &["keys", "3 items", "max_batch_keys (2)"],
    );
    assert!(bump(&mut client, keys(&["a", "b"])).await.is_ok());
    sidecar.shutdown().await;
}

/// What a stream keeps while open is limited: Watch prefixes and Subscribe topics in count
/// (`max_watch_prefixes`) and bytes (`max_watch_prefix_bytes`); and a version token longer
/// than any the sidecar issues (128 bytes) is refused rather than read from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_filters_and_version_tokens_are_limited() {
    use coherence_proto::v1::notifications_client::NotificationsClient;
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .namespace("filter-limits")
        .settings(|s| {
            s.max_watch_prefixes = 3;
            s.max_watch_prefix_bytes = 10;
        })
        .start()
        .await;
    let mut client = connect(sidecar.grpc_url()).await;
    assert!(watch(&mut client, keys(&["a", "b", "c"])).await.is_ok());
    assert_invalid(
        watch(&mut client, keys(&["a", "b", "c", "d"])).await,
        &["prefixes", "4 items", "max_watch_prefixes (3)"],
    );
    assert!(watch(&mut client, keys(&["12345", "67890"])).await.is_ok());
    assert_invalid(
        watch(&mut client, keys(&["12345", "678901"])).await,
        &["prefixes", "11 bytes", "max_watch_prefix_bytes (10)"],
    );
    let mut notes = NotificationsClient::connect(sidecar.grpc_url())
        .await
        .unwrap();
    let subscribe = |topics: &[&str]| pb::SubscribeRequest {
        topics: keys(topics),
    };
    assert_invalid(
        notes.subscribe(subscribe(&["a", "b", "c", "d"])).await,
        &["topics", "max_watch_prefixes (3)"],
    );
    assert_invalid(
        notes.subscribe(subscribe(&["123456", "789012"])).await,
        &["topics", "max_watch_prefix_bytes (10)"],
    );

    let longest = "t".repeat(128);
    let checked = check(&mut client, vec![entry("content", Some(&longest))])
        .await
        .expect("a 128-byte token is checked");
    assert!(!checked.results[0].current);
    assert_invalid(
        check(
            &mut client,
            vec![
                entry("content", Some("x")),
                entry("media", Some(&"t".repeat(129))),
            ],
        )
        .await,
        &["entries[1].version.token", "129 bytes"],
    );
    assert!(get(&mut client, keys(&["content"])).await.is_ok());
    sidecar.shutdown().await;
}
