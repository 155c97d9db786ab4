//! Helpers for the tests that run a fleet on Redis Cluster or Sentinel: has a bump reached
//! every sidecar, and does no sidecar call a superseded version current.

use coherence_client::{CheckSource, Client, Consistency, Version};
use coherence_testkit::{TestSidecar, WAIT};

/// Waits until every client answers `current` for `new` from its mirror and `stale` for `old`.
pub async fn seen_everywhere(clients: &[Client], key: &str, old: &Version, new: &Version) -> bool {
    coherence_testkit::eventually(WAIT, || async {
        for client in clients {
            let Ok(r) = client
                .check(&[(key, old), (key, new)], Consistency::Bounded)
                .await
            else {
                return false;
            };
            if r[0].current || !r[1].current || r[1].source != CheckSource::Mirror {
                return false;
            }
        }
        true
    })
    .await
}

/// Once every sidecar serves again (answers come from Redis, not failed closed while
/// reconnecting), none may call `superseded` current.
pub async fn assert_never_current(
    sidecars: &[TestSidecar],
    clients: &[Client],
    key: &str,
    superseded: &Version,
    when: &str,
) {
    assert!(
        coherence_testkit::eventually(WAIT, || async { sidecars.iter().all(|s| s.is_ready()) })
            .await,
        "{when}: the sidecars serve again"
    );
    for (i, client) in clients.iter().enumerate() {
        let strong = client
            .check(&[(key, superseded)], Consistency::Strong)
            .await
            .unwrap();
        assert_eq!(
            strong[0].source,
            CheckSource::Redis,
            "{when}: sidecar {i} read Redis"
        );
        assert!(
            !strong[0].current,
            "{when}: sidecar {i} (strong) said a superseded version of {key} is current"
        );
        let bounded = client
            .check(&[(key, superseded)], Consistency::Bounded)
            .await
            .unwrap();
        assert!(
            !bounded[0].current,
            "{when}: sidecar {i} said a superseded version of {key} is current"
        );
    }
}
