//! One Redis, three sidecars: a bump through one is seen by the others — their checks of the
//! old version turn `current = false`, of the new one `current = true`, and a Watch on a third
//! sidecar receives the invalidation.

use std::time::Duration;

use coherence_client::{Client, Consistency, Version, WatchEvent};
use coherence_testkit::{eventually, RedisServer, TestSidecar, WAIT};
use futures::StreamExt;

async fn is_current(client: &Client, key: &str, version: &Version) -> bool {
    client
        .is_current(key, version, Consistency::Bounded)
        .await
        .expect("check answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bump_through_b_makes_the_old_version_stale_on_a_and_c_and_c_watchers_hear_it() {
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let b = TestSidecar::start_named(&redis, "b").await;
    let c = TestSidecar::start_named(&redis, "c").await;
    let timeout = Duration::from_secs(5);
    let via_a = Client::connect(a.grpc_url())
        .await
        .unwrap()
        .with_timeout(timeout);
    let via_b = Client::connect(b.grpc_url())
        .await
        .unwrap()
        .with_timeout(timeout);
    let via_c = Client::connect(c.grpc_url())
        .await
        .unwrap()
        .with_timeout(timeout);

    let old = via_a.get_one("content").await.unwrap();
    assert!(is_current(&via_a, "content", &old).await);
    assert!(is_current(&via_c, "content", &old).await);
    let mut watch_on_c = via_c.watch(&["content"]).await.unwrap();

    let new = via_b.bump(&["content"]).await.unwrap().remove(0);
    assert_ne!(old, new, "a bump issues a new version");

    for (name, client) in [("a", &via_a), ("c", &via_c)] {
        let stale = eventually(WAIT, || async {
            !is_current(client, "content", &old).await
        })
        .await;
        assert!(
            stale,
            "the old version still reads current on sidecar {name}"
        );
        assert!(
            is_current(client, "content", &new).await,
            "the new version is not current on sidecar {name}"
        );
        let strong = client
            .check(&[("content", &old), ("content", &new)], Consistency::Strong)
            .await
            .unwrap();
        assert!(
            !strong[0].current && strong[1].current,
            "{name}: {strong:?}"
        );
        assert_eq!(strong[0].version.as_ref(), Some(&new), "{name}: {strong:?}");
    }

    let invalidation = tokio::time::timeout(WAIT, async {
        while let Some(event) = watch_on_c.next().await {
            if let WatchEvent::Invalidated { key, version, .. } = event.unwrap() {
                return Some((key, version));
            }
        }
        None
    })
    .await
    .expect("the watch on c receives the invalidation in time");
    assert_eq!(invalidation, Some(("content".to_string(), new)));

    for sidecar in [a, b, c] {
        sidecar.shutdown().await;
    }
}
