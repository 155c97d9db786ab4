//! The typed kit wrappers against real sidecars on one Redis: job leases with fencing tokens,
//! recurring runs granted once per period, roles, and the notifications backplane.

use std::time::Duration;

use coherence_client::{Acquired, Claimed, Client, Error, LeaseLoss, NotificationEvent, Role};
use coherence_testkit::{eventually, RedisServer, TestSidecar};
use futures::StreamExt;

const TTL: Duration = Duration::from_secs(30);

/// Sidecars "a" and "b" on one fresh Redis (kept alive by the first element).
async fn two_sidecars() -> (RedisServer, TestSidecar, TestSidecar) {
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let b = TestSidecar::start_named(&redis, "b").await;
    (redis, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_goes_to_one_holder_and_a_stale_token_is_refused() {
    let (_redis, a, b) = two_sidecars().await;
    let jobs_a = Client::connect(a.grpc_url()).await.unwrap().jobs();
    let jobs_b = Client::connect(b.grpc_url()).await.unwrap().jobs();

    let Acquired::Granted(mut first) = jobs_a.try_acquire("reindex", TTL).await.unwrap() else {
        panic!("nobody held the lease");
    };
    assert_eq!(first.holder, "a");
    match jobs_b.try_acquire("reindex", TTL).await.unwrap() {
        Acquired::Held {
            holder,
            fencing_token,
            remaining,
        } => {
            assert_eq!(holder, "a");
            assert_eq!(fencing_token, first.fencing_token);
            assert!(remaining > Duration::ZERO && remaining <= TTL);
        }
        granted => panic!("granted twice: {granted:?}"),
    }
    assert!(jobs_a.renew(&mut first, TTL).await.unwrap() > Duration::ZERO);
    jobs_a.release(&first).await.unwrap();

    let Acquired::Granted(second) = jobs_b.try_acquire("reindex", TTL).await.unwrap() else {
        panic!("the released lease was not granted");
    };
    assert!(second.fencing_token > first.fencing_token);
    assert!(matches!(
        jobs_a.renew(&mut first, TTL).await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        jobs_a.release(&first).await,
        Err(Error::LeaseLost { .. })
    ));
    jobs_b.release(&second).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recurring_run_is_granted_to_one_server_per_period() {
    let (_redis, a, b) = two_sidecars().await;
    let jobs_a = Client::connect(a.grpc_url()).await.unwrap().jobs();
    let jobs_b = Client::connect(b.grpc_url())
        .await
        .unwrap()
        .jobs()
        .with_holder("b-worker");
    let day = Duration::from_secs(24 * 3600);
    // A period boundary between two claims would make both legitimate: try again then.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let job = format!("cleanup-{attempts}");
        let Claimed::Granted { lease, period } =
            jobs_a.claim_run(&job, day, Some(TTL)).await.unwrap()
        else {
            panic!("the first claim of a period was refused");
        };
        let while_running = jobs_b.claim_run(&job, day, Some(TTL)).await.unwrap();
        jobs_a.release(&lease).await.unwrap();
        let after_done = jobs_b.claim_run(&job, day, Some(TTL)).await.unwrap();
        match (while_running, after_done) {
            (
                Claimed::Refused {
                    because: running,
                    holder,
                    period: p1,
                    ..
                },
                Claimed::Refused {
                    because: done,
                    period: p2,
                    ..
                },
            ) if p1 == period && p2 == period => {
                assert_eq!(running, "running");
                assert_eq!(holder.as_deref(), Some("a"));
                assert_eq!(done, "done");
                break;
            }
            (first, second) if attempts < 3 => {
                println!("a period boundary passed ({first:?}, {second:?}); again");
            }
            (first, second) => panic!("granted twice in one period: {first:?}, {second:?}"),
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_server_is_single_and_lists_itself() {
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let servers = Client::connect(a.grpc_url()).await.unwrap().servers();
    let mut roles = servers.watch_role().await.unwrap();
    let settled = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(status) = roles.next().await {
            if status.unwrap().role == Role::Single {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(settled, Ok(true), "the lone server never became Single");
    let status = servers.role().await.unwrap();
    assert_eq!(status.role, Role::Single);
    assert!(status.role.runs_scheduled_work());
    assert_eq!(status.server_id, "a");
    let list = servers.list().await.unwrap();
    assert_eq!(list.servers.len(), 1, "{list:?}");
    assert_eq!(list.servers[0].server_id, "a");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_published_through_one_server_reaches_a_subscriber_on_another() {
    let (_redis, a, b) = two_sidecars().await;
    let via_a = Client::connect(a.grpc_url()).await.unwrap().notifications();
    let via_b = Client::connect(b.grpc_url()).await.unwrap().notifications();
    let mut events = via_b.subscribe(&["content-published"]).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    assert!(
        matches!(&first, Ok(Some(Ok(NotificationEvent::Subscribed { topics }))) if topics == &["content-published"]),
        "{first:?}"
    );
    let receiving = via_a
        .publish("content-published", b"page:42")
        .await
        .unwrap();
    // B listens for sure (its stream said so); A's own listener may still be connecting.
    assert!(receiving >= 1, "B's sidecar was listening: {receiving}");
    let next = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    match next {
        Ok(Some(Ok(NotificationEvent::Message {
            topic,
            payload,
            publisher,
            ..
        }))) => {
            assert_eq!(topic, "content-published");
            assert_eq!(payload, b"page:42");
            assert_eq!(publisher, "a");
        }
        other => panic!("no message: {other:?}"),
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Generous bound for anything awaited: the machine is small and shared.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_holds_a_lease_well_past_its_ttl() {
    let (_redis, a, b) = two_sidecars().await;
    let jobs_a = Client::connect(a.grpc_url()).await.unwrap().jobs();
    let jobs_b = Client::connect(b.grpc_url()).await.unwrap().jobs();
    let ttl = Duration::from_millis(2400);
    let Acquired::Granted(lease) = jobs_a.try_acquire("kept", ttl).await.unwrap() else {
        panic!("nobody held the lease");
    };
    let first_expiry = lease.expires_at;
    let keeper = jobs_a.keep_alive(lease.clone(), ttl);
    // Four renewals a third of the TTL apart: the TTL has passed at least once over.
    assert!(
        eventually(WAIT, || async {
            keeper.renewals() >= 4 || keeper.loss().is_some()
        })
        .await,
        "no renewals"
    );
    assert!(keeper.loss().is_none(), "{:?}", keeper.loss());
    assert!(keeper.lease().expires_at > first_expiry);
    assert_eq!(keeper.lease().fencing_token, lease.fencing_token);
    match jobs_b.try_acquire("kept", ttl).await.unwrap() {
        Acquired::Held { fencing_token, .. } => assert_eq!(fencing_token, lease.fencing_token),
        granted => panic!("the kept lease was granted to another holder: {granted:?}"),
    }
    keeper.release().await.unwrap();
    assert!(matches!(
        jobs_b.try_acquire("kept", ttl).await.unwrap(),
        Acquired::Granted(_)
    ));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_reports_a_lease_taken_over_as_refused() {
    let (_redis, a, b) = two_sidecars().await;
    let jobs_a = Client::connect(a.grpc_url()).await.unwrap().jobs();
    let jobs_b = Client::connect(b.grpc_url()).await.unwrap().jobs();
    let Acquired::Granted(lease) = jobs_a.try_acquire("taken", TTL).await.unwrap() else {
        panic!("nobody held the lease");
    };
    // The lease goes to b while a still believes it has TTL left (a pause would do the same).
    jobs_a.release(&lease).await.unwrap();
    assert!(matches!(
        jobs_b.try_acquire("taken", TTL).await.unwrap(),
        Acquired::Granted(_)
    ));
    let keeper = jobs_a.keep_alive(lease, Duration::from_millis(300));
    let loss = tokio::time::timeout(WAIT, keeper.lost())
        .await
        .expect("loss reported");
    assert!(
        matches!(loss, LeaseLoss::Refused(Error::LeaseLost { .. })),
        "{loss:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_reports_loss_when_renewals_cannot_reach_redis() {
    let (redis, a, b) = two_sidecars().await;
    let jobs_a = Client::connect(a.grpc_url())
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(300))
        .jobs();
    let ttl = Duration::from_millis(1500);
    let Acquired::Granted(lease) = jobs_a.try_acquire("stalled", ttl).await.unwrap() else {
        panic!("nobody held the lease");
    };
    let keeper = jobs_a.keep_alive(lease, ttl);
    redis.pause();
    let loss = tokio::time::timeout(WAIT, keeper.lost()).await;
    redis.resume();
    let loss = loss.expect("loss reported while Redis was paused");
    assert!(matches!(loss, LeaseLoss::Expired { .. }), "{loss:?}");
    assert!(
        std::time::Instant::now() >= keeper.lease().expires_at,
        "reported lost before the lease could have expired"
    );
    a.shutdown().await;
    b.shutdown().await;
}
