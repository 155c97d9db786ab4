//! Section 8, scale-out: bump throughput and propagation latency on one Redis against a
//! 3-master Redis Cluster — same sidecar code, same load. On a cluster the shards spread over
//! the masters by slot and invalidations travel on sharded channels (SPUBLISH), so Redis work
//! grows with the masters; on this 2-core machine every master shares the same two cores, so
//! the figure shows the cost of the cluster path more than its headroom.

use coherence_client::Client;
use coherence_testkit::{RedisCluster, RedisServer};

use crate::bumps::bump_op;
use crate::checks::measure;
use crate::fleet::Fleet;
use crate::plan::Plan;
use crate::report::{Report, Row};

const SECTION: &str = "8 scale-out";

pub async fn run(plan: &Plan, server: tokio::runtime::Handle, report: &mut Report) {
    let redis = RedisServer::start();
    deployment(
        plan,
        server.clone(),
        "1 master (standalone)",
        1,
        &redis.url(),
        report,
    )
    .await;
    drop(redis);
    match tokio::task::spawn_blocking(|| RedisCluster::start(3, 0)).await {
        Ok(cluster) => {
            deployment(
                plan,
                server,
                "3 masters (cluster)",
                3,
                &cluster.url(),
                report,
            )
            .await;
            tokio::task::spawn_blocking(move || drop(cluster))
                .await
                .ok();
        }
        Err(err) => report.fact(format!("cluster scale-out skipped: {err}")),
    }
    for &c in plan.levels() {
        let pair = report
            .find("bump_3_masters", c)
            .cloned()
            .zip(report.find("bump_1_masters", c).cloned());
        if let Some((three, one)) = pair {
            report.info(
                format!("Bump throughput, 3-master cluster / 1 master, c={c}"),
                Some(three.ops_per_sec / one.ops_per_sec),
            );
        }
    }
}

async fn deployment(
    plan: &Plan,
    server: tokio::runtime::Handle,
    label: &str,
    masters: usize,
    url: &str,
    report: &mut Report,
) {
    let mut fleet = Fleet::new(server, url, "scale");
    if let Err(err) = fleet.grow_to(3).await {
        report.fact(format!("scale-out on {label} skipped: {err:#}"));
        return;
    }
    match Client::connect(fleet.url(0)).await {
        Ok(client) => {
            for &c in plan.levels() {
                let s = measure(plan, c, bump_op(client.clone())).await;
                report.push(Row::from_samples(
                    SECTION,
                    &format!("bump_{masters}_masters"),
                    &format!("sidecar gRPC Bump, 1 key, {label}"),
                    c,
                    &s,
                ));
            }
        }
        Err(err) => report.fact(format!("scale-out on {label}: {err:#}")),
    }
    match crate::propagation::measure(plan, &fleet, 3, 1_000).await {
        Ok(mut row) => {
            row.section = SECTION;
            row.id = format!("propagation_{masters}_masters");
            row.label = format!("bump on A -> Watch event on B and C, 1k/s paced, {label}");
            report.push(row);
        }
        Err(err) => report.fact(format!("propagation on {label} failed: {err:#}")),
    }
    fleet.shutdown().await;
}
