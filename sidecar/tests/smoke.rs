use std::time::Duration;

use coherence_sidecar::config::Config;
use coherence_sidecar::Sidecar;
use coherence_testkit::RedisServer;

#[tokio::test]
async fn smoke() {
    let redis = RedisServer::start();
    let mut s = Config::defaults();
    s.redis_url = redis.url();
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.admin_listen = "127.0.0.1:0".parse().unwrap();
    let a = Sidecar::start(Config::validate(s.clone()).unwrap())
        .await
        .unwrap();
    s.server_id = "b".into();
    let b = Sidecar::start(Config::validate(s).unwrap()).await.unwrap();
    assert!(a.wait_ready(Duration::from_secs(10)).await);
    assert!(b.wait_ready(Duration::from_secs(10)).await);
    let keys = vec!["content".to_string()];
    let v1 = a.versions.get(&keys, false).await.unwrap();
    let v2 = b.versions.bump(&keys).await.unwrap();
    assert_ne!(v1, v2);
    let entries = vec![("content".to_string(), v1[0].to_string())];
    let r = a.versions.check(&entries, true).await;
    assert!(!r[0].current, "{r:?}");
    let ok = coherence_testkit::eventually(Duration::from_secs(5), || async {
        let r = a
            .versions
            .check(&[("content".to_string(), v2[0].to_string())], false)
            .await;
        r[0].current && r[0].source == coherence_sidecar::metrics::CheckSource::Mirror
    })
    .await;
    assert!(ok);
    println!("{}", a.state.metrics.encode());
    a.shutdown().await;
    b.shutdown().await;
}
