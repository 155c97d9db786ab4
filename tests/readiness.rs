//! Readiness follows Redis: `/readyz` and `grpc.health.v1` say not ready while Redis is down
//! (killed for real) and ready again once it is back on the same port; health reports SERVING
//! only while ready.

use coherence_sidecar::process::sidecar::SERVICE_NAME;
use coherence_testkit::{eventually, Await, RedisServer, TestSidecar, WAIT};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// What the sidecar says about its readiness, through both doors.
#[derive(Debug, PartialEq, Eq)]
struct Readiness {
    readyz: u16,
    overall: ServingStatus,
    service: ServingStatus,
}

async fn readiness(sidecar: &TestSidecar) -> Readiness {
    let readyz = sidecar
        .admin_get("/readyz")
        .await
        .expect("/readyz answers")
        .status;
    let channel = tonic::transport::Endpoint::from_shared(sidecar.grpc_url())
        .unwrap()
        .connect()
        .await
        .expect("the gRPC port answers");
    let health = HealthClient::new(channel);
    let status = |service: &str| {
        let request = HealthCheckRequest {
            service: service.to_string(),
        };
        let mut health = health.clone();
        async move {
            let response = health.check(request).await.expect("health answers");
            ServingStatus::try_from(response.into_inner().status).unwrap()
        }
    };
    let overall = status("").await;
    let service = status(SERVICE_NAME).await;
    Readiness {
        readyz,
        overall,
        service,
    }
}

const READY: Readiness = Readiness {
    readyz: 200,
    overall: ServingStatus::Serving,
    service: ServingStatus::Serving,
};

const NOT_READY: Readiness = Readiness {
    readyz: 503,
    overall: ServingStatus::NotServing,
    service: ServingStatus::NotServing,
};

async fn becomes(sidecar: &TestSidecar, wanted: Readiness) -> bool {
    eventually(WAIT, || async { readiness(sidecar).await == wanted }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_redis_is_down_and_ready_again_when_it_is_back() {
    let mut redis = RedisServer::start();
    let sidecar = TestSidecar::start_named(&redis, "readiness").await;
    // Health mirrors readiness within one 50 ms tick.
    assert!(
        becomes(&sidecar, READY).await,
        "health never caught up with readiness"
    );
    assert_eq!(sidecar.admin_get("/livez").await.unwrap().status, 200);

    redis.kill();
    assert!(
        becomes(&sidecar, NOT_READY).await,
        "still ready with Redis down"
    );
    assert_eq!(
        sidecar.admin_get("/livez").await.unwrap().status,
        200,
        "alive even when not ready"
    );

    redis.restart();
    assert!(
        becomes(&sidecar, READY).await,
        "not ready again after Redis came back"
    );
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_until_redis_is_reachable() {
    let mut redis = RedisServer::start();
    redis.kill();
    let sidecar = TestSidecar::builder(&redis.url())
        .server_id("late-redis")
        .wait(Await::Started)
        .start()
        .await;
    assert_eq!(readiness(&sidecar).await, NOT_READY);
    redis.restart();
    assert!(
        becomes(&sidecar, READY).await,
        "not ready after Redis came up"
    );
    sidecar.shutdown().await;
}
