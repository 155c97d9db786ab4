//! End to end: two instances of the items app, each with its own sidecar, one Redis, one real
//! PostgreSQL. An edit through one instance is seen through the other.
//!
//! PostgreSQL is expected on 127.0.0.1:5432 with trust auth (`.ci/run` starts it), or at
//! `COHERENCE_TEST_POSTGRES`. The test creates its own database and drops it afterwards. If
//! PostgreSQL cannot be reached the test fails; it never skips.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coherence_example_items::{AppConfig, Item, RunningApp};
use coherence_testkit::{RedisServer, TestSidecar};
use tokio_postgres::NoTls;

const MAX_STALENESS: Duration = coherence_client::DEFAULT_MAX_STALENESS;

fn admin_url() -> String {
    std::env::var("COHERENCE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database of our own, dropped at the end (also when the test panics).
struct TestDatabase {
    name: String,
}

impl TestDatabase {
    async fn create() -> TestDatabase {
        let admin = admin_url();
        let (client, connection) = tokio_postgres::connect(&admin, NoTls).await.unwrap_or_else(|err| {
            panic!(
                "PostgreSQL is not reachable at {admin}: {err}. Start it (e.g. `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, as .ci/run does) or set COHERENCE_TEST_POSTGRES"
            )
        });
        tokio::spawn(connection);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("coherence_test_{}_{nanos}", std::process::id());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|err| panic!("cannot create database {name}: {err}"));
        TestDatabase { name }
    }

    fn url(&self) -> String {
        let admin = admin_url();
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base)
            .to_string();
        format!("{base}/{}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin_url(), NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

async fn start_app(sidecar: &TestSidecar, database_url: String) -> RunningApp {
    let app = RunningApp::start(AppConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sidecar: sidecar.grpc_url(),
        database_url,
        max_items: 1000,
    })
    .await
    .unwrap();
    assert!(
        app.items
            .client()
            .wait_trusted(Duration::from_secs(10))
            .await
    );
    app
}

struct Http {
    client: reqwest::Client,
}

impl Http {
    async fn get(&self, app: SocketAddr, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("http://{app}{path}"))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn item(&self, app: SocketAddr, id: i64, query: &str) -> Item {
        let (status, body) = self.get(app, &format!("/items/{id}{query}")).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        app: SocketAddr,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, Option<String>, String) {
        let response = self
            .client
            .request(method, format!("http://{app}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let not_bumped = response
            .headers()
            .get("x-coherence-not-bumped")
            .map(|v| v.to_str().unwrap().to_string());
        (
            response.status().as_u16(),
            not_bumped,
            response.text().await.unwrap(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_through_one_instance_is_seen_through_the_other() {
    let database = TestDatabase::create().await;
    let redis = RedisServer::start();
    let sidecar_1 = TestSidecar::start_named(&redis, "one").await;
    let sidecar_2 = TestSidecar::start_named(&redis, "two").await;
    // Started together, as a deployment would: both create the schema at once.
    let (app_1, app_2) = tokio::join!(
        start_app(&sidecar_1, database.url()),
        start_app(&sidecar_2, database.url())
    );
    let (one, two) = (app_1.addr, app_2.addr);
    let http = Http {
        client: reqwest::Client::new(),
    };

    let (status, _, body) = http
        .send(
            reqwest::Method::POST,
            one,
            "/items",
            serde_json::json!({"name": "lamp", "price_cents": 1000}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let created: Item = serde_json::from_str(&body).unwrap();
    let id = created.id;
    assert_eq!(http.item(two, id, "").await.name, "lamp");
    assert_eq!(http.item(two, id, "").await.name, "lamp");
    assert!(
        app_2.items.stats().hits >= 1,
        "the second read is served from the cache"
    );
    assert_eq!(http.get(two, "/items/999999").await.0, 404);

    // Bounded reads: each edit is visible through the other instance within max_staleness of
    // the edit's response (in practice within milliseconds).
    let mut slowest = Duration::ZERO;
    for round in 0..10 {
        let (writer, reader) = if round % 2 == 0 {
            (one, two)
        } else {
            (two, one)
        };
        let name = format!("lamp v{round}");
        let (status, not_bumped, body) = http
            .send(
                reqwest::Method::PUT,
                writer,
                &format!("/items/{id}"),
                serde_json::json!({"name": name, "price_cents": 1000 + round}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(not_bumped, None);
        let written = Instant::now();
        assert_eq!(
            http.item(writer, id, "").await.name,
            name,
            "own write not visible at once"
        );
        loop {
            let began = Instant::now();
            let seen = http.item(reader, id, "").await.name;
            if seen == name {
                break;
            }
            assert!(
                began.duration_since(written) <= MAX_STALENESS,
                "round {round}: the other instance still served {seen:?} {:?} after the edit",
                began.duration_since(written)
            );
        }
        slowest = slowest.max(written.elapsed());
    }
    println!("slowest edit-to-visible through the other instance: {slowest:?}");

    // Strong reads see an edit through the other instance with no wait at all.
    for round in 0..5 {
        let name = format!("lamp strong {round}");
        let (status, _, body) = http
            .send(
                reqwest::Method::PUT,
                one,
                &format!("/items/{id}"),
                serde_json::json!({"name": name, "price_cents": 1}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(http.item(two, id, "?consistency=strong").await.name, name);
    }
    let (status, body) = http
        .get(two, &format!("/items/{id}?consistency=sometimes"))
        .await;
    assert_eq!(status, 400, "{body}");

    app_1.stop().await;
    app_2.stop().await;
    sidecar_1.shutdown().await;
    sidecar_2.shutdown().await;
    drop(database);
}
