//! Server reflection, so `grpcurl -plaintext 127.0.0.1:50051 list` works: both reflection v1
//! and v1alpha (which grpcurl before 1.8.8 and other older tools speak exclusively) list the
//! coherence and health services.

use coherence_testkit::{RedisServer, TestSidecar};
use tonic::transport::Channel;

/// Expands to the service names a reflection client of module `$pb` lists.
macro_rules! list_services {
    ($pb:path, $channel:expr) => {{
        use pb::server_reflection_client::ServerReflectionClient;
        use pb::server_reflection_request::MessageRequest;
        use pb::server_reflection_response::MessageResponse;
        use $pb as pb;
        let request = pb::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = ServerReflectionClient::new($channel)
            .server_reflection_info(tokio_stream::once(request))
            .await
            .expect("reflection answers")
            .into_inner();
        let response = responses.message().await.unwrap().expect("one response");
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
                names.sort();
                names
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_the_services() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::start_named(&redis, "reflection").await;
    let channel = Channel::from_shared(sidecar.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let v1 = list_services!(tonic_reflection::pb::v1, channel.clone());
    let v1alpha = list_services!(tonic_reflection::pb::v1alpha, channel);
    for names in [&v1, &v1alpha] {
        assert!(
            names.contains(&"coherence.v1.CacheVersions".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_string()),
            "{names:?}"
        );
    }
    sidecar.shutdown().await;
}
