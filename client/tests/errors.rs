//! What an app sees when a call fails: the sidecar's address in every network error, the cause
//! reachable through `source()`, and a malformed address refused before any connection.

use std::error::Error as _;
use std::time::Duration;

use coherence_client::{Client, Error};
use coherence_testkit::free_port;

/// The error and all its causes, as one line (what anyhow's `{:#}` prints).
fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn a_refused_connection_names_the_address_and_keeps_the_cause() {
    let addr = format!("http://127.0.0.1:{}", free_port());
    let err = Client::connect(&addr).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_eq!(err.address(), Some(addr.as_str()));
    assert!(err.to_string().contains(&addr), "{err}");
    let chain = chain(&err);
    assert!(
        chain.to_lowercase().contains("refused"),
        "the cause is lost: {chain}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_call_through_a_lazy_channel_names_the_address_when_nothing_listens() {
    let addr = format!("127.0.0.1:{}", free_port());
    let client = Client::connect_lazy(&addr)
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    let err = client.get(&["content"]).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr), "{err}");
    let chain = chain(&err);
    assert!(
        chain.to_lowercase().contains("refused"),
        "the cause is lost: {chain}"
    );
    // The subclients share the address.
    let err = client.jobs().try_acquire("j", Duration::from_secs(1)).await;
    assert!(err.unwrap_err().to_string().contains(&addr));
}

#[tokio::test]
async fn a_silent_sidecar_is_a_deadline_that_names_the_address() {
    // Accepts connections and never answers (not even the HTTP/2 handshake).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let client = Client::connect_lazy(&addr)
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let err = client.get(&["content"]).await.unwrap_err();
    assert!(
        matches!(err, Error::DeadlineExceeded { timeout, .. } if timeout == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr), "{err}");
    held.abort();
}

#[tokio::test]
async fn a_malformed_address_is_invalid_address_saying_why() {
    for (addr, why) in [
        ("127.0.0.1", "no port"),
        ("http://localhost", "no port"),
        ("ftp://127.0.0.1:50051", "scheme"),
        ("https://127.0.0.1:50051", "scheme"),
        ("http://127.0.0.1:50051/cache", "path"),
        ("http://", ""),
        ("127.0.0.1:notaport", ""),
        ("two words:1", ""),
    ] {
        let err = Client::connect_lazy(addr).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidAddress { address, .. } if address == addr),
            "{addr}: {err:?}"
        );
        assert!(chain(&err).contains(why), "{addr}: {}", chain(&err));
        assert!(err.source().is_some(), "{addr}: no cause");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
    for good in [
        "127.0.0.1:50051",
        "http://127.0.0.1:50051",
        "http://[::1]:1/",
    ] {
        assert!(Client::connect_lazy(good).is_ok(), "{good}");
    }
}

#[tokio::test]
async fn connect_refuses_a_malformed_address_before_connecting() {
    let err = Client::connect("localhost").await.unwrap_err();
    assert!(matches!(err, Error::InvalidAddress { .. }), "{err:?}");
}

#[test]
fn errors_are_clone_and_debug_and_cross_threads() {
    fn assert_traits<T: Clone + std::fmt::Debug + Send + Sync + 'static>() {}
    assert_traits::<Error>();
    let err = Error::from_status(
        "http://127.0.0.1:1",
        tonic::Status::failed_precondition("fencing token 3 is stale"),
        Duration::from_secs(1),
    );
    assert!(matches!(err, Error::LeaseLost { .. }));
    assert_eq!(err.to_string(), "lease lost: fencing token 3 is stale");
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err.clone());
    assert_eq!(boxed.to_string(), err.to_string());
}
