//! What the metrics tests (deploy_metrics, metrics_exposition) share: gRPC traffic that touches
//! every metric family worth scraping, and the series names a Prometheus text exposition
//! declares.

use std::collections::BTreeSet;
use std::time::Duration;

use coherence_proto::v1 as pb;
use coherence_proto::v1::cache_versions_client::CacheVersionsClient;
use coherence_testkit::{Await, TestSidecar};

/// Two ready sidecars of one namespace on `redis_url`, after traffic that makes every metric
/// family that has label values show some: gets, bumps seen by the other sidecar, checks from
/// the mirror and from Redis, a rejected call, a Watch stream opened and abandoned, and a
/// health check. Returns both (scrape `.0`).
pub async fn sidecars_after_traffic(redis_url: &str) -> (TestSidecar, TestSidecar) {
    let a = TestSidecar::builder(redis_url)
        .server_id("a")
        .wait(Await::Started)
        .start()
        .await;
    let b = TestSidecar::builder(redis_url)
        .server_id("b")
        .wait(Await::Started)
        .start()
        .await;
    assert!(
        a.wait_ready(Duration::from_secs(20)).await,
        "sidecar a became ready"
    );
    assert!(
        b.wait_ready(Duration::from_secs(20)).await,
        "sidecar b became ready"
    );

    let mut ca = CacheVersionsClient::new(a.channel().await);
    let mut cb = CacheVersionsClient::new(b.channel().await);
    let keys = vec!["content".to_string()];
    let mut watch = ca
        .watch(pb::WatchRequest {
            prefixes: vec![],
            ..Default::default()
        })
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
    let mut health = tonic_health::pb::health_client::HealthClient::new(a.channel().await);
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
