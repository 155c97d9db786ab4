//! Section 8, read leases (issue 18): what a strong check costs when a sidecar holding a read
//! lease answers it from its mirror, next to a bounded check from the same mirror; what leases
//! add to a bump (the wait for every holder's acknowledgement), next to an identical fleet
//! without leases; and how long bumps wait while one holder is frozen (its Redis links stalled
//! through a proxy: to its peers it is paused, as SIGSTOP would make it) — about one lease
//! period once, then back to normal. Also the same in the app's own memory: a client mirror
//! answering strong checks under the lease its sidecar passed on (docs/client-protocol.md,
//! rules 16–19), next to its bounded checks, and what bumps cost while it holds that lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coherence_client::{Client, Consistency, Freshness, MirrorOptions, MirroredClient, Version};
use coherence_sidecar::versions::{CheckSource, Versions};
use coherence_testkit::{Flow, Link, RedisProxy};
use tokio::runtime::Handle;

use crate::bumps::bump_op;
use crate::checks::{measure, OpFuture};
use crate::fleet::Fleet;
use crate::plan::Plan;
use crate::report::{Report, Row};
use crate::stats::{nearest_rank, Samples};

/// `read_lease_ms` of the leased fleet.
const LEASE_MS: u64 = 1_000;
/// Keys the checks spread over.
const KEYS: usize = 1_000;

pub async fn run(
    plan: &Plan,
    server: Handle,
    redis_url: &str,
    redis_port: u16,
    report: &mut Report,
) {
    if let Err(err) = measure_all(plan, server, redis_url, redis_port, report).await {
        report.fact(format!("read-lease section skipped: {err:#}"));
    }
}

async fn measure_all(
    plan: &Plan,
    server: Handle,
    redis_url: &str,
    redis_port: u16,
    report: &mut Report,
) -> anyhow::Result<()> {
    let proxy = RedisProxy::start(redis_port).await;
    let mut leased = Fleet::new(server.clone(), redis_url, "bench-leases");
    leased.grow_with(2, |s| s.read_lease_ms = LEASE_MS).await?;
    let proxy_url = proxy.url();
    leased
        .grow_with(3, |s| {
            s.read_lease_ms = LEASE_MS;
            s.redis_url = proxy_url.clone();
        })
        .await?;
    let mut plain = Fleet::new(server, redis_url, "bench-plain");
    plain.grow_to(3).await?;

    let holder = Arc::clone(&leased.sidecars[0].versions);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("lease:key:{i:04}")).collect();
    let tokens = holder.get(&keys, false).await?;
    let entries: Arc<Vec<[(String, String); 1]>> = Arc::new(
        keys.iter()
            .zip(&tokens)
            .map(|(k, v)| [(k.clone(), v.version.to_string())])
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while holder.check(&entries[0], true).await[0].source != CheckSource::Mirror {
        anyhow::ensure!(Instant::now() < deadline, "no read lease within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Local checks, in process (what the sidecar's check path costs, without gRPC).
    let strong = measure(
        plan,
        1,
        check_in_process(Arc::clone(&holder), Arc::clone(&entries), true),
    )
    .await;
    let bounded = measure(
        plan,
        1,
        check_in_process(Arc::clone(&holder), Arc::clone(&entries), false),
    )
    .await;
    report.push(row(
        "lease_strong_inproc",
        "Versions::check STRONG under a read lease, in process",
        1,
        &strong,
    ));
    report.push(row(
        "lease_bounded_inproc",
        "Versions::check bounded, same mirror, in process",
        1,
        &bounded,
    ));
    report.ratio(
        "local strong check (leased) / local bounded check, p50, in process",
        quantile_ratio(&strong, &bounded, 0.5),
        2.0,
        false,
        "×",
    );

    // The same in a client mirror's memory, under the lease sidecar 0 passed on to it.
    let mirror = client(&leased, 0)
        .await?
        .with_mirror(MirrorOptions::default().audit_sample_rate(0.0));
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let versions = mirror.get_with(&names, Consistency::Bounded).await?;
    let stamped: Arc<Vec<(String, Version)>> =
        Arc::new(keys.iter().cloned().zip(versions).collect());
    let deadline = Instant::now() + Duration::from_secs(10);
    while mirror.stats().strong_hits == 0 || !mirror.holds_strong_lease() {
        anyhow::ensure!(Instant::now() < deadline, "no mirror lease within 10 s");
        let (key, version) = &stamped[0];
        mirror.freshness(key, version, Consistency::Strong).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let strong_mirror = measure(
        plan,
        1,
        check_in_mirror(mirror.clone(), Arc::clone(&stamped), Consistency::Strong),
    )
    .await;
    let bounded_mirror = measure(
        plan,
        1,
        check_in_mirror(mirror.clone(), Arc::clone(&stamped), Consistency::Bounded),
    )
    .await;
    report.push(row(
        "lease_strong_client_mirror",
        "MirroredClient strong check under a mirror lease, in the app's memory",
        1,
        &strong_mirror,
    ));
    report.push(row(
        "lease_bounded_client_mirror",
        "MirroredClient bounded check, same mirror",
        1,
        &bounded_mirror,
    ));
    report.ratio(
        "client mirror: strong check (leased) / bounded check, p50",
        quantile_ratio(&strong_mirror, &bounded_mirror, 0.5),
        2.0,
        false,
        "×",
    );
    report.fact(format!(
        "client mirror during its checks: {} strong answers under its lease, {} asked of the sidecar",
        mirror.stats().strong_hits,
        mirror.stats().misses
    ));

    for &c in plan.levels() {
        let mirrored_bumps = measure(plan, c, bump_op(client(&leased, 1).await?)).await;
        report.push(row(
            "lease_bump_client_mirror",
            "sidecar gRPC Bump, 1 key, 3 lease holders, a client mirror holding a lease from one",
            c,
            &mirrored_bumps,
        ));
    }
    // Its stream closed, the sidecar still counts its lease until it ran out.
    drop(mirror);
    tokio::time::sleep(Duration::from_millis(2 * LEASE_MS)).await;

    for &c in plan.levels() {
        let leased_bumps = measure(plan, c, bump_op(client(&leased, 1).await?)).await;
        let plain_bumps = measure(plan, c, bump_op(client(&plain, 1).await?)).await;
        let note = format!(
            "{} bumps waited for an expiry",
            waited_for_expiry(&leased.sidecars[1].versions)
        );
        report.push(
            row(
                "lease_bump",
                "sidecar gRPC Bump, 1 key, 3 lease holders",
                c,
                &leased_bumps,
            )
            .note(note),
        );
        report.push(row(
            "plain_bump",
            "sidecar gRPC Bump, 1 key, same fleet without leases",
            c,
            &plain_bumps,
        ));
        report.ratio(
            format!("Bump p99 with leases / without, c={c}"),
            quantile_ratio(&leased_bumps, &plain_bumps, 0.99),
            2.0,
            false,
            "×",
        );
        let strong_grpc = measure(
            plan,
            c,
            strong_grpc(client(&leased, 0).await?, Arc::clone(&entries)),
        )
        .await;
        report.push(row(
            "lease_strong_grpc",
            "sidecar gRPC Check STRONG, 1 key, under a read lease",
            c,
            &strong_grpc,
        ));
    }

    // One holder frozen: bumps one after another for three lease periods.
    // A bump may wait a lease period here: beyond the client's default timeout.
    let bumper = client(&leased, 1)
        .await?
        .with_timeout(Duration::from_millis(5 * LEASE_MS));
    proxy.set_flow(Link::Subscription, Flow::Stall);
    proxy.set_flow(Link::Command, Flow::Stall);
    let frozen_at = Instant::now();
    let mut took = Vec::new();
    let mut i = 0u64;
    while frozen_at.elapsed() < Duration::from_millis(3 * LEASE_MS) {
        let started = Instant::now();
        bumper
            .bump(&[format!("frozen:{}", i % 100).as_str()])
            .await?;
        took.push((started.duration_since(frozen_at), started.elapsed()));
        i += 1;
    }
    proxy.set_flow(Link::Command, Flow::Pass);
    proxy.set_flow(Link::Subscription, Flow::Pass);
    let slow: Vec<_> = took
        .iter()
        .filter(|(_, t)| *t > Duration::from_millis(LEASE_MS / 4))
        .collect();
    let mut rest: Vec<u64> = took
        .iter()
        .filter(|(_, t)| *t <= Duration::from_millis(LEASE_MS / 4))
        .map(|(_, t)| t.as_micros() as u64)
        .collect();
    rest.sort_unstable();
    report.fact(format!(
        "one of 3 lease holders frozen (read_lease_ms {LEASE_MS}): {} bumps in {:.1} s; {} waited for its lease ({}); the others p50 {} µs, p99 {} µs",
        took.len(),
        frozen_at.elapsed().as_secs_f64(),
        slow.len(),
        slow.iter()
            .map(|(at, t)| format!("{} ms, begun {} ms into the freeze", t.as_millis(), at.as_millis()))
            .collect::<Vec<_>>()
            .join("; "),
        nearest_rank(&rest, 0.5).unwrap_or(0),
        nearest_rank(&rest, 0.99).unwrap_or(0),
    ));
    leased.shutdown().await;
    plain.shutdown().await;
    Ok(())
}

fn row(id: &str, label: &str, concurrency: usize, s: &Samples) -> Row {
    Row::from_samples("8 leases", id, label, concurrency, s)
}

/// Quantile `q` of `a` over that of `b`.
fn quantile_ratio(a: &Samples, b: &Samples, q: f64) -> Option<f64> {
    let (a, b) = a.quantile(q).zip(b.quantile(q))?;
    Some(a.as_secs_f64() / b.as_secs_f64())
}

async fn client(fleet: &Fleet, i: usize) -> anyhow::Result<Client> {
    Ok(Client::connect(fleet.url(i)).await?)
}

fn waited_for_expiry(versions: &Versions) -> f64 {
    coherence_testkit::metric_sum(
        &versions.state().metrics.encode(),
        "coherence_bumps_waited_for_expiry_total",
    )
}

fn check_in_process(
    versions: Arc<Versions>,
    entries: Arc<Vec<[(String, String); 1]>>,
    strong: bool,
) -> impl Fn(usize, u64) -> OpFuture + Send + Sync + Clone + 'static {
    move |_, i| {
        let versions = Arc::clone(&versions);
        let entries = Arc::clone(&entries);
        Box::pin(async move {
            let r = versions
                .check(&entries[i as usize % entries.len()], strong)
                .await;
            anyhow::ensure!(r[0].current, "check not current");
            Ok(1)
        })
    }
}

fn check_in_mirror(
    mirror: MirroredClient,
    stamped: Arc<Vec<(String, Version)>>,
    consistency: Consistency,
) -> impl Fn(usize, u64) -> OpFuture + Send + Sync + Clone + 'static {
    move |_, i| {
        let mirror = mirror.clone();
        let stamped = Arc::clone(&stamped);
        Box::pin(async move {
            let (key, version) = &stamped[i as usize % stamped.len()];
            let fresh = mirror.freshness(key, version, consistency).await;
            anyhow::ensure!(fresh == Freshness::Current, "mirror check not current");
            Ok(1)
        })
    }
}

fn strong_grpc(
    client: Client,
    entries: Arc<Vec<[(String, String); 1]>>,
) -> impl Fn(usize, u64) -> OpFuture + Send + Sync + Clone + 'static {
    move |_, i| {
        let client = client.clone();
        let entries = Arc::clone(&entries);
        Box::pin(async move {
            let [(key, token)] = &entries[i as usize % entries.len()];
            let version = coherence_client::Version::from_token(token.clone());
            let r = client
                .check(
                    &[(key.as_str(), &version)],
                    coherence_client::Consistency::Strong,
                )
                .await?;
            anyhow::ensure!(r[0].current, "strong check not current");
            Ok(1)
        })
    }
}
