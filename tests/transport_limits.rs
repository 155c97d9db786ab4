//! The gRPC port's HTTP/2 limits (sidecar/src/grpc/transport.rs), each hit by a real client
//! against a real sidecar: the advertised concurrent-stream limit, the header-size limit, the
//! reset-flood guard, and keepalive closing a connection whose client went silent — while the
//! sidecar keeps serving everyone else.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use coherence_proto::v1 as pb;
use coherence_proto::v1::cache_versions_client::CacheVersionsClient;
use coherence_testkit::{eventually, FreezingProxy, RedisServer, TestSidecar, WAIT};
use tokio::net::TcpStream;

/// A raw HTTP/2 connection to `addr`, driven in the background; the client half and the
/// connection task (which ends with the connection's error, if any).
async fn raw_connection(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
    tokio::sync::watch::Receiver<usize>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, mut connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    // The peer's advertised stream limit, once its SETTINGS arrived.
    let (limit_tx, limit_rx) = tokio::sync::watch::channel(usize::MAX);
    let task = tokio::spawn(async move {
        std::future::poll_fn(|cx| {
            limit_tx.send_replace(connection.max_concurrent_send_streams());
            std::pin::Pin::new(&mut connection).poll(cx)
        })
        .await
    });
    (client, task, limit_rx)
}

fn grpc_post(addr: SocketAddr, path: &str) -> http::request::Builder {
    http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
}

async fn a_get_is_served(sidecar: &TestSidecar) {
    let mut client = CacheVersionsClient::new(sidecar.channel().await);
    client
        .get(pb::GetRequest {
            keys: vec!["still-served".into()],
            consistency: 0,
        })
        .await
        .expect("the sidecar keeps serving other connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_port_advertises_its_stream_limit_and_refuses_oversized_headers() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .settings(|s| {
            s.max_concurrent_streams = 7;
            s.max_header_list_bytes = 8 * 1024;
        })
        .start()
        .await;
    let addr = sidecar.grpc_addr();

    let (mut client, _task, mut limit) = raw_connection(addr).await;
    let request = grpc_post(addr, "/grpc.health.v1.Health/Check")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).expect("send");
    // An empty HealthCheckRequest, gRPC-framed.
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("send body");
    let response = tokio::time::timeout(WAIT, response)
        .await
        .expect("answered")
        .expect("a response");
    assert_eq!(response.status(), 200);
    let advertised = tokio::time::timeout(WAIT, limit.wait_for(|l| *l != usize::MAX))
        .await
        .expect("the server's SETTINGS arrived")
        .map(|l| *l)
        .expect("connection task alive");
    assert_eq!(advertised, 7, "SETTINGS_MAX_CONCURRENT_STREAMS");

    // Metadata under the limit is fine; over it the call is refused, never served.
    let mut grpc = CacheVersionsClient::new(sidecar.channel().await);
    let with_header = |bytes: usize| {
        let mut request = tonic::Request::new(pb::GetRequest {
            keys: vec!["k".into()],
            consistency: 0,
        });
        let value = "v".repeat(bytes).parse().expect("ascii metadata");
        request.metadata_mut().insert("x-padding", value);
        request
    };
    grpc.get(with_header(4 * 1024))
        .await
        .expect("4 KiB of headers are accepted");
    let refused = grpc
        .get(with_header(16 * 1024))
        .await
        .expect_err("16 KiB of headers are refused");
    assert_ne!(refused.code(), tonic::Code::Ok);
    a_get_is_served(&sidecar).await;
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_streams_the_server_must_reset_ends_with_goaway() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::start(&redis).await;
    let addr = sidecar.grpc_addr();
    let (mut client, task, _) = raw_connection(addr).await;

    // Each request says it has no body and then sends one byte: a protocol error the server
    // answers by resetting the stream. One at a time, each reset awaited: past 1,024 of them
    // the server closes the connection with GOAWAY, ENHANCE_YOUR_CALM.
    let mut reset = 0u32;
    let flood = async {
        for _ in 0..2_000 {
            client = match client.clone().ready().await {
                Ok(ready) => ready,
                Err(err) => return err,
            };
            let request = grpc_post(addr, "/coherence.v1.CacheVersions/Get")
                .header("content-length", "0")
                .body(())
                .unwrap();
            let (response, mut body) = match client.send_request(request, false) {
                Ok(sent) => sent,
                Err(err) => return err,
            };
            if let Err(err) = body.send_data(Bytes::from_static(&[0]), true) {
                return err;
            }
            match response.await {
                Err(err) if err.reason() == Some(h2::Reason::PROTOCOL_ERROR) => reset += 1,
                Err(err) => return err,
                Ok(response) => panic!("a malformed request was answered: {response:?}"),
            }
        }
        panic!("2,000 malformed streams and the connection is still open");
    };
    let err = tokio::time::timeout(WAIT, flood)
        .await
        .expect("the flood ends");
    let closed = tokio::time::timeout(WAIT, task)
        .await
        .expect("the connection ended")
        .expect("connection task");
    println!("RESET FLOOD: {reset} streams reset, then {err:?}; connection: {closed:?}");
    assert_eq!(
        reset, 1_024,
        "the server reset exactly its limit, then closed"
    );
    let closed = closed.expect_err("the server closed the connection");
    assert!(closed.is_go_away(), "{closed:?}");
    assert_eq!(
        closed.reason(),
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "{closed:?}"
    );
    a_get_is_served(&sidecar).await;
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_client_went_silent_is_closed_and_its_streams_end() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .settings(|s| {
            s.http2_keepalive_ms = 200;
            s.http2_keepalive_timeout_ms = 300;
        })
        .start()
        .await;
    let proxy = FreezingProxy::start(sidecar.grpc_addr()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watcher = CacheVersionsClient::new(channel);
    let mut stream = watcher
        .watch(pb::WatchRequest {
            prefixes: vec![],
            ..Default::default()
        })
        .await
        .expect("Watch")
        .into_inner();
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a first event")
        .expect("the stream is up");
    let open = &sidecar.state.metrics.watch_streams;
    assert_eq!(open.get(), 1);

    // The client goes silent: the server's pings are no longer answered.
    proxy.freeze();
    let closed = eventually(WAIT, || async { open.get() == 0 }).await;
    assert!(
        closed,
        "the silent client's Watch stream was ended by keepalive"
    );
    a_get_is_served(&sidecar).await;
    sidecar.shutdown().await;
}
