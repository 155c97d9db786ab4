//! The gRPC port's HTTP/2 limits (sidecar/src/grpc/transport.rs), each hit by a real client
//! against a real sidecar: the advertised concurrent-stream limit, the header-size limit, the
//! reset-flood guard, keepalive closing a connection whose client went silent, and the bound on
//! open connections (sidecar/src/grpc/connections.rs) on TCP and on a Unix socket — while the
//! sidecar keeps serving everyone else.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use coherence_client::{Client, Consistency};
use coherence_proto::v1 as pb;
use coherence_proto::v1::cache_versions_client::CacheVersionsClient;
use coherence_sidecar::process::listen::ListenAddr;
use coherence_testkit::{eventually, FreezingProxy, RedisServer, TestSidecar, WAIT};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UnixStream};

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

/// Where a connection-bound test connects: the sidecar's TCP port or its Unix socket.
enum Port {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Port {
    fn of(sidecar: &TestSidecar) -> Port {
        match &sidecar.grpc_listen {
            ListenAddr::Tcp(addr) => Port::Tcp(*addr),
            ListenAddr::Unix(path) => Port::Unix(path.clone()),
        }
    }

    fn url(&self) -> String {
        match self {
            Port::Tcp(addr) => format!("http://{addr}"),
            Port::Unix(path) => format!("unix://{}", path.display()),
        }
    }

    /// A connection past the bound: connecting succeeds (the kernel completes it), then the
    /// sidecar closes it at once, before sending anything. Panics unless it is closed within
    /// [`WAIT`].
    async fn assert_refused(&self) {
        let mut buf = [0u8; 64];
        let read = match self {
            Port::Tcp(addr) => {
                let mut tcp = TcpStream::connect(addr).await.expect("TCP connect");
                tokio::time::timeout(WAIT, tcp.read(&mut buf)).await
            }
            Port::Unix(path) => {
                let mut unix = UnixStream::connect(path).await.expect("socket connect");
                tokio::time::timeout(WAIT, unix.read(&mut buf)).await
            }
        };
        match read.expect("a connection past max_connections is closed at once") {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("a connection past max_connections was served ({n} bytes sent)"),
        }
    }

    /// A client on a connection of its own that has been served (one Get).
    async fn admitted_client(&self) -> Client {
        let client = Client::connect(self.url()).await.expect("connect");
        client
            .get(&["bounded"])
            .await
            .expect("a connection within max_connections is served");
        client
    }
}

/// `max_connections` = 4 on `sidecar`'s port: four clients are served, connections past them
/// are closed at once (and counted) while a small Check on an admitted connection is answered,
/// and once two clients have gone two new ones are admitted.
async fn the_connection_bound_holds(sidecar: &TestSidecar) {
    let port = Port::of(sidecar);
    let metrics = &sidecar.state.metrics;
    let open = &metrics.connections_open;
    let refused = metrics.limit_counter("max_connections");

    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(port.admitted_client().await);
    }
    assert_eq!(open.get(), 4, "coherence_connections_open");
    let version = clients[0].get_one("bounded").await.expect("Get");

    for _ in 0..3 {
        port.assert_refused().await;
    }
    assert_eq!(refused.get(), 3, "each refused connection is counted");
    // A real gRPC client past the bound gets an error, not a hang.
    let extra = tokio::time::timeout(WAIT, async {
        Client::connect(port.url()).await?.get(&["bounded"]).await
    })
    .await
    .expect("the client past the bound is answered within the wait");
    assert!(extra.is_err(), "a client past max_connections was served");
    assert!(refused.get() >= 4);
    assert_eq!(open.get(), 4, "refused connections never counted as open");

    // Every admitted client is still served: a small Check on one of them.
    let checked = tokio::time::timeout(
        WAIT,
        clients[3].check(&[("bounded", &version)], Consistency::Bounded),
    )
    .await
    .expect("the Check is answered")
    .expect("a Check on an admitted connection succeeds");
    assert!(checked[0].current, "{checked:?}");

    // Two clients go; their slots come back and two new clients are admitted.
    clients.truncate(2);
    assert!(
        eventually(WAIT, || async { open.get() == 2 }).await,
        "closed connections give their slots back (open: {})",
        open.get()
    );
    for _ in 0..2 {
        clients.push(port.admitted_client().await);
    }
    assert_eq!(open.get(), 4);
    port.assert_refused().await;
    for client in &clients {
        client.get(&["bounded"]).await.expect("still served");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_closed_and_the_others_served_over_tcp() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::builder(&redis.url())
        .settings(|s| s.max_connections = 4)
        .start()
        .await;
    the_connection_bound_holds(&sidecar).await;
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_closed_and_the_others_served_over_a_unix_socket() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let socket = ListenAddr::Unix(dir.path().join("grpc.sock"));
    let sidecar = TestSidecar::builder(&redis.url())
        .listen(socket)
        .settings(|s| s.max_connections = 4)
        .start()
        .await;
    the_connection_bound_holds(&sidecar).await;
    sidecar.shutdown().await;
}
