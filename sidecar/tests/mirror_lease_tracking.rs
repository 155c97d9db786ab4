//! Mirror-lease tracking (docs/design.md, "Read leases in client mirrors") on the sidecar's own
//! pieces — the Watch ring, a Watch stream's feed and its tracker, the mirror-lease registry —
//! wired exactly as `grpc/watch.rs` and `leases/holder.rs` wire them: a stream that fell behind
//! the ring is not caught up until its mirror applied the `Resync`, and a mirror that renews
//! without ever acknowledging holds acknowledgements back only until the lease it held when the
//! wait began ran out. Both were found by review, and failed on the first version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coherence_proto::v1 as pb;
use coherence_sidecar::buffers::ring::ByteRing;
use coherence_sidecar::grpc::prefix_set::PrefixSet;
use coherence_sidecar::grpc::watch::{HeartbeatBounds, WatchFeed, WatchStream};
use coherence_sidecar::versions::leases::mirrors::{MirrorLeases, StreamTracker};
use coherence_sidecar::versions::leases::LeaseSettings;
use coherence_sidecar::versions::state::{Invalidated, WatchItem};
use coherence_sidecar::versions::version::VersionStr;
use futures::StreamExt;
use prometheus_client::metrics::gauge::Gauge;

const LEASE_ID: &str = "review-mirror-lease-0001";

fn settings() -> LeaseSettings {
    LeaseSettings {
        period: Duration::from_millis(1_000),
        margin: Duration::from_millis(20),
    }
}

fn invalidated(key: &str, seq: u64) -> WatchItem {
    WatchItem::Invalidated(Arc::new(Invalidated {
        key: key.to_string(),
        version: VersionStr::from(format!("e.{seq}.n")),
        epoch: Arc::from("e"),
        seq,
        shard: 0,
        bumped_at_unix_ms: 0,
    }))
}

fn heartbeat() -> WatchItem {
    WatchItem::Heartbeat {
        fence_age_ms: 1,
        sent_at_unix_us: 0,
    }
}

fn push(ring: &ByteRing<WatchItem>, item: WatchItem) {
    let weight = item.weight();
    ring.push(item, weight);
}

/// A Watch stream opened with `LEASE_ID` on `ring`, as `CacheVersionsService::watch` opens it.
async fn open_stream(
    ring: &Arc<ByteRing<WatchItem>>,
    leases: &Arc<MirrorLeases>,
) -> (WatchStream, tokio::sync::watch::Sender<bool>) {
    let events = ring.reader();
    let tracker: StreamTracker = leases
        .track(LEASE_ID, events.position())
        .expect("tracked")
        .expect("tracked");
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let slot = Arc::new(tokio::sync::Semaphore::new(1))
        .acquire_owned()
        .await
        .expect("slot");
    let feed = WatchFeed {
        events,
        prefixes: PrefixSet::new(&[]),
        bounds: HeartbeatBounds {
            max_staleness_ms: 500,
            heartbeat_interval_ms: 100,
        },
        shutdown,
        slot,
        open: Gauge::default(),
        leases: Some(tracker),
    };
    (feed.into_stream(), shutdown_tx)
}

/// Guarantee 3. Found by review: A stream that fell behind the ring gets `Resync` at position
/// `first` (the ring's oldest kept index), which can be far past the head `H` the holder
/// recorded with the shard position it is about to acknowledge. `caught_up(H)` then only
/// asks for `read_through >= H` and "no unacknowledged position <= H" — the Resync's
/// position is > H, so it does not count — and `wait_applied(H)` returns although the
/// mirror has applied neither B's invalidation (dropped from the ring) nor the Resync that
/// covers it. The holder acknowledges, B completes, and the mirror — still holding the
/// version B superseded, under a valid lease — answers it current to a strong check.
#[tokio::test]
async fn a_stream_that_fell_behind_is_caught_up_only_once_its_mirror_applied_the_resync() {
    let leases = Arc::new(MirrorLeases::new(settings(), 4));
    // Room for two items: the stream falls behind after a few pushes.
    let ring = ByteRing::<WatchItem>::new(300, Gauge::default());
    let (mut stream, _shutdown) = open_stream(&ring, &leases).await;

    // The mirror holds a lease, caught up with everything (nothing delivered yet).
    let grant = leases
        .renew(LEASE_ID, 0, true, Instant::now(), || {
            Some((Duration::from_millis(900), ring.next_index()))
        })
        .expect("granted")
        .expect("a grant");
    assert_eq!(grant.min_position, 0);

    // The subscription applies bump B of key K: pushed at index 0, then `holder.moved`
    // records the ring's head H = 1 with the shard's position (E, S_B).
    push(&ring, invalidated("K", 7));
    let head = ring.next_index();
    assert_eq!(head, 1);

    // Before the stream task is polled again, more items arrive (heartbeats every 100 ms,
    // other keys' invalidations): B's item is dropped from the ring.
    for i in 0..4 {
        push(&ring, invalidated(&format!("other{i}"), 8 + i));
        push(&ring, heartbeat());
    }

    // The stream is polled: Lagged -> Resync at position `first`, far past H.
    let event = stream.next().await.expect("an event").expect("ok");
    assert!(
        matches!(event.event, Some(pb::watch_event::Event::Resync(_))),
        "{event:?}"
    );
    assert!(
        event.position > head,
        "position {} head {head}",
        event.position
    );

    // The mirror has not applied (nor acknowledged) that Resync yet: it is in transit, or
    // its Watch loop is busy. The holder's acknowledgement of B must wait for it.
    let waited = tokio::time::timeout(Duration::from_millis(300), leases.wait_applied(head)).await;
    assert!(
        waited.is_err(),
        "wait_applied({head}) returned {waited:?} while the mirror, under a live lease, had not \
         applied B's invalidation nor the Resync covering it: the holder acknowledges B and B \
         completes while the mirror still answers the superseded version current"
    );
}

/// Liveness. Found by review: design.md: "A mirror that stops reading its stream or acknowledging delays the
/// sidecar's acknowledgements ... until its lease runs out (at most read_lease_ms); the sidecar
/// then stops renewing it until it catches up." In the code a renewal is refused only once
/// MAX_UNACKED (4,096) positions are unacknowledged; a mirror that keeps renewing without
/// acknowledging gets a new grant (min_position = head) each time, which pushes `live_until`
/// further, and `wait_applied` waits for the new `live_until`: the holder's single
/// acknowledgement task stalls for as long as the mirror keeps renewing.
#[tokio::test]
async fn a_mirror_that_renews_without_acknowledging_holds_acknowledgements_back_at_most_one_lease()
{
    let leases = Arc::new(MirrorLeases::new(settings(), 4));
    let ring = ByteRing::<WatchItem>::new(1 << 20, Gauge::default());
    let (mut stream, _shutdown) = open_stream(&ring, &leases).await;
    let holding = |ring: &Arc<ByteRing<WatchItem>>| {
        let head = ring.next_index();
        move || Some((Duration::from_millis(900), head))
    };
    leases
        .renew(LEASE_ID, 0, true, Instant::now(), holding(&ring))
        .expect("granted")
        .expect("a grant");

    push(&ring, invalidated("K", 7));
    let head = ring.next_index();
    let event = stream.next().await.expect("an event").expect("ok");
    assert_eq!(event.position, 1);

    // The mirror's Watch loop is stuck (say, in the app's event hook); its lease task still
    // renews every 100 ms with the position it had applied before: 0.
    let renewer = {
        let leases = Arc::clone(&leases);
        let ring = Arc::clone(&ring);
        tokio::spawn(async move {
            loop {
                let _ = leases.renew(LEASE_ID, 0, true, Instant::now(), holding(&ring));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    // One lease (900 ms granted) plus the sidecar's drift and margin is the documented bound.
    let waited = tokio::time::timeout(Duration::from_secs(4), leases.wait_applied(head)).await;
    renewer.abort();
    assert!(
        waited.is_ok(),
        "the holder's acknowledgement task was still waiting after {:?} (bound: one lease, ~1 s): \
         every bump of the namespace waits this sidecar's own read lease out instead",
        started.elapsed()
    );
}
