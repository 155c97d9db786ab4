//! Micro-benchmark: a local `is_current` hit of the in-process mirror against a gRPC `Check`
//! to an in-process sidecar over loopback. Prints figures; asserts nothing about speed.
//!
//! `cargo bench -p coherence-client --bench is_current`

use std::hint::black_box;
use std::time::{Duration, Instant};

use coherence_client::{Consistency, MirrorOptions};
use coherence_testkit::{RedisServer, TestSidecar};

const LOCAL_ROUNDS: u32 = 2_000_000;
const GRPC_ROUNDS: u32 = 5_000;

fn per_op(elapsed: Duration, rounds: u32) -> f64 {
    elapsed.as_nanos() as f64 / f64::from(rounds)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let redis = RedisServer::start();
    let sidecar = TestSidecar::start_named(&redis, "bench").await;
    let client = sidecar.client().await;
    let mirrored = client.clone().with_mirror(MirrorOptions::default());
    assert!(
        mirrored.wait_trusted(Duration::from_secs(10)).await,
        "mirror not trusted"
    );
    for i in 0..1000 {
        mirrored.get_one(&format!("bench:{i}")).await.unwrap();
    }
    let key = "bench:42";
    let stamp = mirrored.get_one(key).await.unwrap();

    // Local hits, synchronous (the map lookup, clock read and trust check).
    let mut hits = 0u32;
    let started = Instant::now();
    for _ in 0..LOCAL_ROUNDS {
        if mirrored.is_current_local(black_box(key), black_box(&stamp)) == Some(true) {
            hits += 1;
        }
    }
    let local_sync = per_op(started.elapsed(), LOCAL_ROUNDS);
    assert_eq!(
        hits, LOCAL_ROUNDS,
        "some checks were not local hits (mirror lost trust?)"
    );

    // Local hits through the async API an app calls.
    let started = Instant::now();
    for _ in 0..LOCAL_ROUNDS {
        black_box(mirrored.is_current(black_box(key), black_box(&stamp)).await);
    }
    let local_async = per_op(started.elapsed(), LOCAL_ROUNDS);

    // The sidecar's Check over loopback gRPC, one at a time.
    for _ in 0..200 {
        client
            .check(&[(key, &stamp)], Consistency::Bounded)
            .await
            .unwrap();
    }
    let started = Instant::now();
    for _ in 0..GRPC_ROUNDS {
        let results = client
            .check(&[(key, &stamp)], Consistency::Bounded)
            .await
            .unwrap();
        assert!(results[0].current);
    }
    let grpc = per_op(started.elapsed(), GRPC_ROUNDS);

    println!("is_current_local hit (sync):      {local_sync:>10.1} ns/op  ({LOCAL_ROUNDS} rounds)");
    println!(
        "is_current hit (async, awaited):  {local_async:>10.1} ns/op  ({LOCAL_ROUNDS} rounds)"
    );
    println!("gRPC Check (bounded, loopback):   {grpc:>10.1} ns/op  ({GRPC_ROUNDS} rounds)");
    println!(
        "ratio gRPC Check / local hit:     {:>10.0}x (sync), {:.0}x (async)",
        grpc / local_sync,
        grpc / local_async
    );
    println!("mirror stats: {:?}", mirrored.stats());
    drop(mirrored);
    sidecar.shutdown().await;
}
