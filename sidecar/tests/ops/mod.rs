//! Shared support for the operations tests: in-process sidecars on port 0, a minimal HTTP GET
//! for the admin listener, gRPC traffic that touches every metric family worth scraping, and
//! the metric names a Prometheus text exposition declares.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use coherence_proto::v1 as pb;
use coherence_proto::v1::cache_versions_client::CacheVersionsClient;
use coherence_sidecar::process::config::{Config, Settings};
use coherence_sidecar::Sidecar;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Settings for a test sidecar on `redis_url`, both listeners on free loopback ports.
pub fn settings(redis_url: &str) -> Settings {
    let mut s = Config::defaults();
    s.redis_url = redis_url.to_string();
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.admin_listen = "127.0.0.1:0".parse().unwrap();
    s
}

pub async fn start(settings: Settings) -> Sidecar {
    Sidecar::start(Config::validate(settings).unwrap())
        .await
        .unwrap()
}

/// An HTTP response from the admin listener.
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// `GET path` over HTTP/1.0 (the connection closes after the response), with an optional
/// `Accept` header.
pub async fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> HttpResponse {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect to the admin listener in time")
            .expect("connect to the admin listener");
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{accept}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("admin listener answered in time")
        .unwrap();
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    HttpResponse {
        status,
        headers: head.to_string(),
        body: body.to_string(),
    }
}

/// The `/metrics` text (Prometheus text format 0.0.4, as curl and promtool get it).
pub async fn scrape(sidecar: &Sidecar) -> String {
    let response = http_get(sidecar.admin_addr, "/metrics", None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

pub async fn grpc_client(sidecar: &Sidecar) -> CacheVersionsClient<tonic::transport::Channel> {
    CacheVersionsClient::connect(format!("http://{}", sidecar.grpc_addr))
        .await
        .expect("connect to the sidecar's gRPC port")
}

/// Two ready sidecars of one namespace on `redis_url`, after traffic that makes every metric
/// family that has label values show some: gets, bumps seen by the other sidecar, checks from
/// the mirror and from Redis, a rejected call, a Watch stream opened and abandoned, and a
/// health check. Returns both (scrape `.0`).
pub async fn sidecars_after_traffic(redis_url: &str) -> (Sidecar, Sidecar) {
    let a = start(settings(redis_url)).await;
    let mut sb = settings(redis_url);
    sb.server_id = "b".into();
    let b = start(sb).await;
    assert!(
        a.wait_ready(Duration::from_secs(20)).await,
        "sidecar a became ready"
    );
    assert!(
        b.wait_ready(Duration::from_secs(20)).await,
        "sidecar b became ready"
    );

    let mut ca = grpc_client(&a).await;
    let mut cb = grpc_client(&b).await;
    let keys = vec!["content".to_string()];
    let mut watch = ca
        .watch(pb::WatchRequest { prefixes: vec![] })
        .await
        .unwrap()
        .into_inner();
    let old = ca
        .get(pb::GetRequest {
            keys: keys.clone(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .versions;
    let new = cb
        .bump(pb::BumpRequest { keys: keys.clone() })
        .await
        .unwrap()
        .into_inner()
        .versions;
    // The invalidation reaches a's Watch stream: a applied it.
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(event)) = watch.message().await.transpose() {
            if matches!(event.event, Some(pb::watch_event::Event::Invalidated(_))) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(seen, "sidecar a received the invalidation");
    drop(watch);
    let strong = ca
        .check(pb::CheckRequest {
            entries: vec![pb::KeyVersion {
                key: "content".into(),
                version: old.first().cloned(),
            }],
            consistency: pb::Consistency::Strong as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!strong.results[0].current, "the bumped version is stale");
    let fresh = ca
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
    assert!(fresh.results[0].current, "the new version is current");
    let rejected = ca
        .get(pb::GetRequest {
            keys: vec![String::new()],
            consistency: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(rejected.code(), tonic::Code::InvalidArgument);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", a.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    (a, b)
}

/// Every series name a 0.0.4 exposition can produce: each sample's name, and for families
/// declared without samples yet, the names their type implies (`_bucket`/`_sum`/`_count` for
/// histograms, the declared name otherwise — counters are declared with `_total`).
pub fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            } else {
                names.insert(name.to_string());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The value of the one sample whose name and labels appear in `exposition` exactly as given
/// (`series` like `coherence_bumps_total` or `coherence_x{a="b"}`).
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
