//! Security defaults of the listeners: the admin listener serves metrics and health and
//! nothing else, and binding the gRPC API beyond loopback is warned about loudly.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coherence_testkit::{Await, RedisServer, TestSidecar};

#[tokio::test]
async fn admin_listener_serves_metrics_and_health_only() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .wait(Await::Started)
        .start()
        .await;
    assert!(sidecar.wait_ready(Duration::from_secs(20)).await);
    for path in ["/metrics", "/livez", "/readyz"] {
        let r = sidecar
            .admin_get(path)
            .await
            .expect("the admin listener answers");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    for path in [
        "/",
        "/config",
        "/debug/pprof",
        "/keys",
        "/metrics/../config",
        "/versions/content",
        "/healthz",
    ] {
        let r = sidecar
            .admin_get(path)
            .await
            .expect("the admin listener answers");
        assert_eq!(r.status, 404, "{path} answered {}: {}", r.status, r.body);
    }
    // Nothing the app caches leaks through metrics: no key names, no version tokens.
    let versions = sidecar
        .versions
        .bump(&["customer-secret-key".to_string()])
        .await
        .unwrap();
    let text = sidecar.scrape().await;
    assert!(!text.contains("customer-secret-key"), "{text}");
    assert!(!text.contains(&versions[0].to_string()), "{text}");
    sidecar.shutdown().await;
}

/// A log sink for one test's tracing output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn grpc_bound_beyond_loopback_is_warned_about_and_loopback_is_not() {
    let redis = RedisServer::start();
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let loopback = TestSidecar::builder(&redis.url())
        .wait(Await::Started)
        .start()
        .await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("non-loopback"), "{text}");
    loopback.shutdown().await;

    let exposed = TestSidecar::builder(&redis.url())
        .listen(std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
        .wait(Await::Started)
        .start()
        .await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warning = text
        .lines()
        .find(|l| l.contains("non-loopback"))
        .unwrap_or_else(|| panic!("no warning about the non-loopback gRPC address:\n{text}"));
    assert!(
        warning.contains("WARN") && warning.contains("0.0.0.0"),
        "{warning}"
    );
    exposed.shutdown().await;
}
