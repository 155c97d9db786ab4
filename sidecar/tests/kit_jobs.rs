//! Distributed jobs against a real Redis and several sidecars: one ClaimRun grant per period,
//! strictly increasing fencing tokens, takeover after a dead holder's lease, stale tokens refused.

mod kit_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coherence_proto::v1 as pb;
use coherence_proto::v1::jobs_client::JobsClient;
use coherence_testkit::RedisServer;
use kit_support::sidecar;
use tonic::transport::Channel;
use tonic::Code;

async fn claim(
    client: &mut JobsClient<Channel>,
    job: &str,
    period_ms: u64,
    lease_ms: u64,
) -> pb::ClaimRunResponse {
    client
        .claim_run(pb::ClaimRunRequest {
            job: job.into(),
            period_ms,
            lease_ms,
            holder: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Milliseconds until the next multiple of `period_ms` on the Redis clock.
fn until_next_period(redis: &RedisServer, period_ms: u64) -> u64 {
    let time: Vec<u64> = redis.cmd(&["TIME"]).unwrap();
    let now_ms = time[0] * 1000 + time[1] / 1000;
    period_ms - now_ms % period_ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_run_grants_exactly_one_runner_per_period_across_three_sidecars() {
    const PERIOD_MS: u64 = 200;
    const ROUNDS: usize = 20;
    const ATTEMPTS_PER_SIDECAR: usize = 50;
    let redis = RedisServer::start();
    let mut sidecars = Vec::new();
    let mut clients = Vec::new();
    for id in ["a", "b", "c"] {
        let sidecar = sidecar(&redis, id).start().await;
        clients.push(JobsClient::new(sidecar.channel().await));
        sidecars.push(sidecar);
    }

    let mut answers: BTreeMap<u64, Vec<pb::ClaimRunResponse>> = BTreeMap::new();
    let mut round_start_periods = Vec::new();
    for _ in 0..ROUNDS {
        // Pace the rounds on the Redis clock: each burst starts just after a period begins.
        let wait = until_next_period(&redis, PERIOD_MS) + 10;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let mut attempts = Vec::new();
        for client in &clients {
            for _ in 0..ATTEMPTS_PER_SIDECAR {
                let mut client = client.clone();
                attempts.push(tokio::spawn(async move {
                    let answer = claim(&mut client, "report", PERIOD_MS, 10_000).await;
                    if answer.granted {
                        // The run is done at once; releasing marks the period done.
                        client
                            .release(pb::ReleaseRequest {
                                job: "report".into(),
                                fencing_token: answer.fencing_token,
                            })
                            .await
                            .unwrap();
                    }
                    answer
                }));
            }
        }
        let mut first_period = u64::MAX;
        for attempt in attempts {
            let answer = attempt.await.unwrap();
            first_period = first_period.min(answer.period);
            answers.entry(answer.period).or_default().push(answer);
        }
        round_start_periods.push(first_period);
    }

    // At most one grant per period, and each round's first period (no run was in progress when
    // it began) got exactly one.
    let grants: BTreeMap<u64, u64> = answers
        .iter()
        .filter_map(|(period, list)| {
            let granted: Vec<u64> = list
                .iter()
                .filter(|a| a.granted)
                .map(|a| a.fencing_token)
                .collect();
            assert!(
                granted.len() <= 1,
                "period {period} was granted {} times: {granted:?}",
                granted.len()
            );
            granted.first().map(|token| (*period, *token))
        })
        .collect();
    round_start_periods.dedup();
    assert_eq!(
        round_start_periods.len(),
        ROUNDS,
        "rounds shared periods: {round_start_periods:?}"
    );
    for period in &round_start_periods {
        assert!(
            grants.contains_key(period),
            "period {period} began a round but got no grant"
        );
    }
    // A period without a grant is one a burst spilled into while the previous period's run was
    // still in progress: every answer says "running" with that earlier run's token.
    for (period, list) in &answers {
        if grants.contains_key(period) {
            continue;
        }
        for answer in list {
            let earlier = grants
                .range(..period)
                .any(|(_, token)| *token == answer.fencing_token);
            assert!(
                answer.refused_because == "running" && earlier,
                "period {period} got no grant but {answer:?}"
            );
        }
    }
    let tokens: Vec<u64> = grants.values().copied().collect();
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens did not strictly increase with the period: {tokens:?}"
    );
    println!(
        "{} periods, {} granted, {} answers",
        answers.len(),
        grants.len(),
        answers.values().map(Vec::len).sum::<usize>()
    );
    for sidecar in sidecars {
        sidecar.shutdown().await;
    }
}

#[tokio::test]
async fn fencing_tokens_strictly_increase_on_every_grant_from_any_sidecar() {
    let redis = RedisServer::start();
    let a = sidecar(&redis, "a").start().await;
    let b = sidecar(&redis, "b").start().await;
    let mut clients = [
        JobsClient::new(a.channel().await),
        JobsClient::new(b.channel().await),
    ];
    let mut last = 0;
    for i in 0..40 {
        let client = &mut clients[i % 2];
        let granted = client
            .try_acquire(pb::TryAcquireRequest {
                job: "index-rebuild".into(),
                ttl_ms: 10_000,
                holder: format!("worker-{i}"),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(granted.granted, "{granted:?}");
        assert_eq!(granted.holder, format!("worker-{i}"));
        assert!(
            granted.fencing_token > last,
            "token {} after {last}",
            granted.fencing_token
        );
        last = granted.fencing_token;
        // Held: nobody else gets it, and they are told who holds it under which token.
        let other = clients[(i + 1) % 2]
            .try_acquire(pb::TryAcquireRequest {
                job: "index-rebuild".into(),
                ttl_ms: 10_000,
                holder: "intruder".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!other.granted);
        assert_eq!(
            (other.holder.as_str(), other.fencing_token),
            (granted.holder.as_str(), last)
        );
        let client = &mut clients[i % 2];
        let renewed = client
            .renew(pb::RenewRequest {
                job: "index-rebuild".into(),
                fencing_token: last,
                ttl_ms: 5_000,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(renewed.ttl_ms, 5_000);
        client
            .release(pb::ReleaseRequest {
                job: "index-rebuild".into(),
                fencing_token: last,
            })
            .await
            .unwrap();
    }
    // A released token is stale.
    let err = clients[0]
        .renew(pb::RenewRequest {
            job: "index-rebuild".into(),
            fencing_token: last,
            ttl_ms: 1_000,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_holder_killed_mid_run_is_replaced_after_its_lease_and_its_late_renew_is_refused() {
    const LEASE_MS: u64 = 800;
    let redis = RedisServer::start();
    let a = sidecar(&redis, "a").start().await;
    let b = sidecar(&redis, "b").start().await;
    let mut on_a = JobsClient::new(a.channel().await);
    let mut on_b = JobsClient::new(b.channel().await);

    let before_a_claimed = Instant::now();
    let first = claim(&mut on_a, "nightly", 60_000, LEASE_MS).await;
    assert!(first.granted, "{first:?}");
    assert_eq!(first.holder, "a");
    // The runner dies mid-run: its sidecar goes away, nobody renews or releases.
    a.shutdown().await;
    drop(on_a);

    let refused = claim(&mut on_b, "nightly", 60_000, LEASE_MS).await;
    assert!(!refused.granted);
    assert_eq!(refused.refused_because, "running");
    assert_eq!(
        (refused.holder.as_str(), refused.fencing_token),
        ("a", first.fencing_token)
    );

    // Poll (bounded) until the dead runner's lease has expired and b is granted the run.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let answer = claim(&mut on_b, "nightly", 60_000, LEASE_MS).await;
        if answer.granted {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the dead runner was never replaced: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = before_a_claimed.elapsed();
    assert!(
        took >= Duration::from_millis(LEASE_MS),
        "replaced after {took:?}, before the dead runner's lease ({LEASE_MS} ms) could expire"
    );
    assert_eq!(second.holder, "b");
    assert!(second.fencing_token > first.fencing_token);
    println!("dead runner replaced {took:?} after its claim (lease {LEASE_MS} ms)");

    // The dead runner wakes up late: its renew and release are refused, naming the new holder.
    for result in [
        on_b.renew(pb::RenewRequest {
            job: "nightly".into(),
            fencing_token: first.fencing_token,
            ttl_ms: LEASE_MS,
        })
        .await
        .map(|_| ()),
        on_b.release(pb::ReleaseRequest {
            job: "nightly".into(),
            fencing_token: first.fencing_token,
        })
        .await
        .map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("\"b\""), "{}", err.message());
    }
    // The replacement finishes: the period is done, nobody else runs it.
    on_b.release(pb::ReleaseRequest {
        job: "nightly".into(),
        fencing_token: second.fencing_token,
    })
    .await
    .unwrap();
    let after = claim(&mut on_b, "nightly", 60_000, LEASE_MS).await;
    if after.period == second.period {
        assert!(!after.granted);
        assert_eq!(after.refused_because, "done");
    }
    b.shutdown().await;
}

#[tokio::test]
async fn bad_job_requests_are_refused_naming_the_field() {
    let redis = RedisServer::start();
    let a = sidecar(&redis, "a").start().await;
    let mut client = JobsClient::new(a.channel().await);
    let cases: Vec<(tonic::Status, &str)> = vec![
        (
            client
                .try_acquire(pb::TryAcquireRequest {
                    job: String::new(),
                    ttl_ms: 1_000,
                    holder: String::new(),
                })
                .await
                .unwrap_err(),
            "job",
        ),
        (
            client
                .try_acquire(pb::TryAcquireRequest {
                    job: "a{b}".into(),
                    ttl_ms: 1_000,
                    holder: String::new(),
                })
                .await
                .unwrap_err(),
            "job",
        ),
        (
            client
                .try_acquire(pb::TryAcquireRequest {
                    job: "x".into(),
                    ttl_ms: 0,
                    holder: String::new(),
                })
                .await
                .unwrap_err(),
            "ttl_ms",
        ),
        (
            client
                .claim_run(pb::ClaimRunRequest {
                    job: "x".into(),
                    period_ms: 0,
                    lease_ms: 0,
                    holder: String::new(),
                })
                .await
                .unwrap_err(),
            "period_ms",
        ),
        (
            client
                .renew(pb::RenewRequest {
                    job: "x".into(),
                    fencing_token: 1,
                    ttl_ms: u64::MAX,
                })
                .await
                .unwrap_err(),
            "ttl_ms",
        ),
    ];
    for (status, field) in cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    a.shutdown().await;
}
