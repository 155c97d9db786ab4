//! One conformance suite for every client mirror: the situations of docs/client-protocol.md
//! ("Why each rule exists"), driven against real sidecars on real `redis-server` processes,
//! each asserting that no superseded version is ever answered current beyond what the rules
//! allow (past `max_staleness` after the bump that superseded it; at once for the process's
//! own bumps).
//!
//! Every situation runs three mirrors, each on infrastructure of its own:
//! - the Rust `MirroredClient`, which must pass;
//! - the Python `MirroredClient` (clients/python), driven through a Python process that answers
//!   JSON lines (`conformance_support::driver`), which must pass;
//! - a Python mirror that breaks the rule the situation exists for
//!   (clients/python/tests/mirror_variants.py), which must FAIL: the proof that the case can
//!   fail at all.
//!
//! The faults are real: a Redis user without SUBSCRIBE (a sidecar that cannot subscribe yet),
//! the testkit's `RedisProxy` holding back or dropping a sidecar's Redis replies and pushes,
//! its `FreezingProxy` cutting or silencing the mirror's gRPC connections, a version rewritten
//! in Redis by hand for reconciliation to correct.

mod common {
    pub mod acl;
}
mod conformance_support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coherence_client::{Client, Version, WatchEvent};
use coherence_sidecar::process::config::Settings;
use coherence_testkit::{
    eventually, Flow, FreezingProxy, Link, RedisProxy, RedisServer, TestSidecar, WAIT,
};
use common::acl::{allow_subscribe, sidecar_that_cannot_subscribe};
use conformance_support::{Driver, Mirror, Setup, Subject};
use futures::StreamExt;

/// What one mirror did in one situation: the superseded versions it answered current when
/// the rules forbid it (or, for the silent stream, the refresh that never came).
#[derive(Debug, Default)]
struct Outcome {
    violations: Vec<String>,
    /// Figures worth printing (own-writes counts, fence ages seen).
    notes: String,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    fn verdict(&self) -> &'static str {
        if self.passed() {
            "pass"
        } else {
            "FAIL"
        }
    }
}

/// Runs `scenario` for the Rust mirror, the Python mirror and the rule-breaking `variant`;
/// asserts the first two pass and the variant fails.
async fn conformance<F, Fut>(situation: &str, rules: &str, variant: &'static str, scenario: F)
where
    F: Fn(Subject, Arc<Driver>) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let driver = Driver::start().await;
    let rust = scenario(Subject::Rust, Arc::clone(&driver)).await;
    let python = scenario(Subject::Python("shipped"), Arc::clone(&driver)).await;
    let broken = scenario(Subject::Python(variant), Arc::clone(&driver)).await;
    println!(
        "CONFORMANCE | {situation} | rules {rules} | Rust {} | Python {} | variant {variant}: {} |",
        rust.verdict(),
        python.verdict(),
        broken.verdict()
    );
    for (subject, outcome) in [
        (Subject::Rust, &rust),
        (Subject::Python("shipped"), &python),
        (Subject::Python(variant), &broken),
    ] {
        println!(
            "  {subject}: {} violations {:?} {}",
            outcome.violations.len(),
            outcome.violations.iter().take(3).collect::<Vec<_>>(),
            outcome.notes
        );
    }
    assert!(
        rust.passed(),
        "{situation}: the Rust MirroredClient broke the protocol: {:?}",
        rust.violations
    );
    assert!(
        python.passed(),
        "{situation}: the Python MirroredClient broke the protocol: {:?}",
        python.violations
    );
    assert!(
        !broken.passed(),
        "{situation}: the variant {variant} (breaking rules {rules}) passed, so this case cannot \
         fail: {}",
        broken.notes
    );
}

/// The bound every mirror here answers within (its own, equal to the sidecar's default).
const BOUND: Duration = Duration::from_millis(500);

fn addr(sidecar: &TestSidecar) -> String {
    sidecar.grpc_addr.to_string()
}

async fn open(subject: Subject, addr: &str, setup: Setup, driver: &Arc<Driver>) -> Arc<Mirror> {
    let mirror = Mirror::open(subject, addr, setup, Some(driver)).await;
    assert!(
        mirror.wait_trusted(WAIT).await,
        "{subject}: the mirror never trusted its stream"
    );
    Arc::new(mirror)
}

async fn close(mirror: Arc<Mirror>) {
    match Arc::try_unwrap(mirror) {
        Ok(mirror) => mirror.close().await,
        Err(_) => panic!("the mirror is still in use"),
    }
}

async fn client_of(sidecar: &TestSidecar) -> Client {
    Client::connect(sidecar.grpc_url())
        .await
        .expect("connect to a sidecar")
}

/// `rounds` bounded checks of `old`, 10 ms apart, from `not_before` on (when the rules no
/// longer allow it current); each one answered current is a violation.
async fn judge(
    mirror: &Mirror,
    key: &str,
    old: &Version,
    not_before: Instant,
    rounds: usize,
) -> Vec<String> {
    tokio::time::sleep_until(not_before.into()).await;
    let mut violations = Vec::new();
    for _ in 0..rounds {
        let began = Instant::now();
        if mirror.is_current(key, old).await {
            violations.push(format!(
                "{key}@{old} answered current {:?} past the bound",
                began.duration_since(not_before)
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    violations
}

/// Waits until the mirror answers `key` at `version` locally as current.
async fn known_locally(mirror: &Mirror, key: &str, version: &Version) {
    assert!(
        eventually(WAIT, || async {
            mirror.is_current_local(key, version).await == Some(true)
        })
        .await,
        "{key}@{version} never answered locally"
    );
}

/// Whether Redis holds a version key for `key` (the first `Get` of a key writes one).
fn has_version_key(redis: &RedisServer, key: &str) -> bool {
    let found: Vec<String> = redis
        .cmd(&["KEYS", &format!("coh:*:v:{key}")])
        .expect("KEYS");
    !found.is_empty()
}

// ---------------------------------------------------------------------------------------------
// A sidecar not yet subscribed when the stream opens (rules 2 and 3).

async fn not_yet_subscribed(subject: Subject, driver: Arc<Driver>) -> Outcome {
    const KEY: &str = "early";
    let redis = RedisServer::start();
    let other = TestSidecar::start_named(&redis, "other").await;
    let early = sidecar_that_cannot_subscribe(&redis).await;
    let mirror = Mirror::open(subject, &addr(&early), Setup::default(), Some(&driver)).await;
    assert!(
        eventually(WAIT, || async { mirror.stats().await.connected >= 1 }).await,
        "{subject}: the Watch stream did not open on the sidecar that cannot subscribe"
    );
    // The mirror stamps through the sidecar that cannot subscribe (its command connection may
    // still be coming up): whether it may keep the answer is the point.
    let mut stamped = None;
    let deadline = Instant::now() + WAIT;
    while stamped.is_none() {
        match mirror.get(KEY).await {
            Ok(version) => stamped = Some(version),
            Err(err) => {
                assert!(Instant::now() < deadline, "Get never answered: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let stamped = stamped.expect("stamped");
    assert!(!early.is_ready(), "the sidecar became ready too soon");
    client_of(&other)
        .await
        .bump(&[KEY])
        .await
        .expect("bump elsewhere");
    let bumped_at = Instant::now();
    allow_subscribe(&redis);
    assert!(early.wait_ready(WAIT).await, "the sidecar never got ready");
    assert!(
        mirror.wait_trusted(WAIT).await,
        "{subject}: the mirror never trusted its stream"
    );
    let violations = judge(&mirror, KEY, &stamped, bumped_at + BOUND, 20).await;
    mirror.close().await;
    early.shutdown().await;
    other.shutdown().await;
    Outcome {
        violations,
        ..Outcome::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_not_yet_subscribed_when_the_stream_opens() {
    conformance(
        "sidecar not yet subscribed when the stream opens",
        "2/3",
        "fills_before_vouching",
        not_yet_subscribed,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// The stream drops and reopens (rule 4).

async fn reconnect(subject: Subject, driver: Arc<Driver>) -> Outcome {
    const KEY: &str = "reconnect";
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let b = TestSidecar::start_named(&redis, "b").await;
    let proxy = FreezingProxy::start(a.grpc_addr).await;
    let mirror = open(
        subject,
        &proxy.addr().to_string(),
        Setup::default(),
        &driver,
    )
    .await;
    let old = mirror.get(KEY).await.expect("stamp");
    known_locally(&mirror, KEY, &old).await;
    let opened = mirror.stats().await.connected;

    // The stream drops, and cannot come back until the bump is made.
    proxy.set_accepting(false);
    proxy.cut();
    client_of(&b)
        .await
        .bump(&[KEY])
        .await
        .expect("bump elsewhere");
    let bumped_at = Instant::now();
    proxy.set_accepting(true);
    assert!(
        eventually(WAIT, || async { mirror.stats().await.connected > opened }).await,
        "{subject}: the stream was never reopened"
    );
    assert!(
        mirror.wait_trusted(WAIT).await,
        "{subject}: the reopened stream never vouched"
    );
    let violations = judge(&mirror, KEY, &old, bumped_at + BOUND, 20).await;
    close(mirror).await;
    a.shutdown().await;
    b.shutdown().await;
    Outcome {
        violations,
        ..Outcome::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_drops_and_reopens() {
    conformance(
        "the stream drops and reopens",
        "4 (and 3)",
        "keeps_map_across_reconnect",
        reconnect,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// A Get answered before a bump arrives after its invalidation (rules 7 and 8), and the same
// with the key evicted meanwhile (rule 9).

/// A mirror on sidecar `a`, whose Redis replies pass through a proxy, and sidecar `b` to bump.
struct Proxied {
    redis: RedisServer,
    proxy: RedisProxy,
    a: TestSidecar,
    b: TestSidecar,
}

impl Proxied {
    async fn start(adjust: impl Fn(&mut Settings)) -> Proxied {
        let redis = RedisServer::start();
        let proxy = RedisProxy::start(redis.port()).await;
        let a = TestSidecar::builder(&proxy.url())
            .server_id("a")
            .settings(&adjust)
            .start()
            .await;
        let b = TestSidecar::builder(&redis.url())
            .server_id("b")
            .settings(&adjust)
            .start()
            .await;
        Proxied { redis, proxy, a, b }
    }

    async fn shutdown(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}

/// The mirror asks for `key`'s first version while sidecar a's Redis replies are held; another
/// server bumps it (and, with `evict`, another key that pushes it out of a one-entry map); the
/// invalidations reach the mirror; only then does the `Get` answer arrive, with the
/// superseded version.
async fn late_fill(subject: Subject, driver: Arc<Driver>, evict: bool) -> Outcome {
    const KEY: &str = "late";
    let fleet = Proxied::start(|_| {}).await;
    let setup = Setup {
        max_entries: if evict {
            1
        } else {
            Setup::default().max_entries
        },
        ..Setup::default()
    };
    let mirror = open(subject, &addr(&fleet.a), setup, &driver).await;
    let via_b = client_of(&fleet.b).await;
    let before = mirror.stats().await;

    fleet.proxy.set_flow(Link::Command, Flow::Stall);
    let asking = Arc::clone(&mirror);
    let get = tokio::spawn(async move { asking.get(KEY).await });
    assert!(
        eventually(WAIT, || async { has_version_key(&fleet.redis, KEY) }).await,
        "the Get never reached Redis"
    );
    let new = via_b.bump(&[KEY]).await.expect("bump elsewhere").remove(0);
    let bumped_at = Instant::now();
    let mut expected = before.invalidations + 2; // the key's first version, then the bump
    if evict {
        via_b.bump(&["late-other"]).await.expect("bump another key");
        expected += 1;
    }
    let arrived = eventually(WAIT, || async {
        let now = mirror.stats().await;
        now.invalidations >= expected && (!evict || now.evictions > before.evictions)
    })
    .await;
    fleet.proxy.set_flow(Link::Command, Flow::Pass);
    assert!(
        arrived,
        "{subject}: the invalidations never reached the mirror: {:?}",
        mirror.stats().await
    );
    let old = get
        .await
        .expect("the Get task")
        .expect("the held Get answers once released");
    assert_ne!(old, new, "the Get was answered after the bump");
    let violations = judge(&mirror, KEY, &old, bumped_at + BOUND, 20).await;
    close(mirror).await;
    fleet.shutdown().await;
    Outcome {
        violations,
        ..Outcome::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_answered_before_a_bump_arrives_after_its_invalidation() {
    conformance(
        "a Get answered before a bump arrives after its invalidation",
        "7/8",
        "fills_without_ordering",
        |subject, driver| late_fill(subject, driver, false),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_is_full_and_evicts_while_a_fill_is_in_flight() {
    conformance(
        "the map is full and evicts while a fill is in flight",
        "9",
        "evicts_without_floor",
        |subject, driver| late_fill(subject, driver, true),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Heartbeats keep coming with a growing fence age (rule 10).

/// Sidecar a's subscription is held back by the proxy: bumps elsewhere succeed, their
/// invalidations and a's own fences wait in the proxy, and a's heartbeats keep coming with a
/// finite, growing fence age (pausing Redis itself would stop the bump too: nothing could be
/// superseded).
async fn growing_fence_age(subject: Subject, driver: Arc<Driver>) -> Outcome {
    const KEY: &str = "stall";
    let fleet = Proxied::start(|_| {}).await;
    let mirror = open(subject, &addr(&fleet.a), Setup::default(), &driver).await;
    let old = mirror.get(KEY).await.expect("stamp");
    known_locally(&mirror, KEY, &old).await;
    // A raw stream on the same sidecar records the fence ages it is told.
    let mut raw = client_of(&fleet.a).await.watch(&[]).await.expect("watch");
    let stall = BOUND * 3;

    fleet.proxy.set_flow(Link::Subscription, Flow::Stall);
    client_of(&fleet.b)
        .await
        .bump(&[KEY])
        .await
        .expect("bump elsewhere");
    let bumped_at = Instant::now();
    let ages = tokio::spawn(async move {
        let mut oldest = Duration::ZERO;
        let until = tokio::time::Instant::now() + stall;
        while let Ok(Some(Ok(event))) = tokio::time::timeout_at(until, raw.next()).await {
            if let WatchEvent::Heartbeat {
                fence_age: Some(age),
                ..
            } = event
            {
                oldest = oldest.max(age);
            }
        }
        oldest
    });
    let rounds = ((stall - BOUND).as_millis() / 20) as usize;
    let violations = judge(&mirror, KEY, &old, bumped_at + BOUND, rounds).await;
    let oldest = ages.await.expect("the raw stream task");
    fleet.proxy.set_flow(Link::Subscription, Flow::Pass);
    assert!(
        oldest > BOUND,
        "the situation did not arise: no heartbeat vouched with a fence older than the bound \
         (oldest {oldest:?})"
    );
    close(mirror).await;
    fleet.shutdown().await;
    Outcome {
        violations,
        notes: format!("finite fence ages up to {oldest:?} while the subscription was held"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_coming_with_a_growing_fence_age() {
    conformance(
        "heartbeats keep coming with a growing fence age",
        "10",
        "trusts_any_finite_fence_age",
        growing_fence_age,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Own writes under concurrent checks and late invalidations (rules 8 and 14).

/// Deterministic half: an older bump's invalidation, held in the proxy, reaches the mirror
/// after the mirror's own newer bump returned (whose own invalidation is lost and comes back
/// only with the gap repair at the next fence, a second later). Then the racing half: the
/// mirror bumps a key over and over while its own checks (strong ones filling the map) and
/// another server's bumps race it.
async fn own_writes(subject: Subject, driver: Arc<Driver>) -> Outcome {
    const KEY: &str = "own";
    let mut violations = Vec::new();
    {
        let fleet = Proxied::start(|s| {
            s.heartbeat_interval_ms = 1_000;
            s.max_staleness_ms = 5_000;
        })
        .await;
        let setup = Setup {
            max_staleness: Duration::from_secs(5),
            ..Setup::default()
        };
        let mirror = open(subject, &addr(&fleet.a), setup, &driver).await;
        let proxy = &fleet.proxy;
        mirror.get(KEY).await.expect("stamp");
        proxy.set_flow(Link::Subscription, Flow::Stall);
        let seen = proxy.stats().invalidations_seen;
        let older = client_of(&fleet.b)
            .await
            .bump(&[KEY])
            .await
            .expect("bump elsewhere")
            .remove(0);
        assert!(
            eventually(WAIT, || async { proxy.stats().invalidations_seen > seen }).await,
            "the older invalidation did not reach the proxy"
        );
        proxy.drop_invalidations(true);
        let own = mirror.bump(KEY).await.expect("own bump");
        assert!(
            eventually(WAIT, || async {
                proxy.stats().invalidations_seen > seen + 1
            })
            .await,
            "the own bump's invalidation did not reach the proxy"
        );
        proxy.drop_invalidations(false);
        let applied = mirror.stats().await.invalidations;
        proxy.set_flow(Link::Subscription, Flow::Pass);
        assert!(
            eventually(WAIT, || async {
                mirror.stats().await.invalidations > applied
            })
            .await,
            "the older invalidation never reached the mirror"
        );
        for _ in 0..5 {
            if mirror.is_current(KEY, &older).await {
                violations.push(format!(
                    "{older} (superseded by the own bump to {own}) answered current after its late invalidation"
                ));
            }
        }
        close(mirror).await;
        fleet.shutdown().await;
    }

    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let b = TestSidecar::start_named(&redis, "b").await;
    let mirror = open(subject, &addr(&a), Setup::default(), &driver).await;
    let stranger = client_of(&b).await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stranger = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut bumps = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                stranger.bump(&[KEY]).await.expect("a stranger's bump");
                bumps += 1;
            }
            bumps
        })
    };
    let bumps = if subject == Subject::Rust { 1_000 } else { 300 };
    let race = mirror.own_writes(KEY, bumps).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let stranger_bumps = stranger.await.expect("stranger");
    assert!(
        race.checks >= 300,
        "{subject}: too few checks to prove anything: {race:?}"
    );
    if race.violations > 0 {
        violations.push(format!(
            "{} of {} checks answered a superseded own version current, e.g. {:?}",
            race.violations, race.checks, race.example
        ));
    }
    close(mirror).await;
    a.shutdown().await;
    b.shutdown().await;
    Outcome {
        violations,
        notes: format!(
            "OWN WRITES race: {} own bumps, {stranger_bumps} by another server, {} checks of superseded own versions, {} answered current",
            race.bumps, race.checks, race.violations
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_writes_under_concurrent_checks_and_late_invalidations() {
    conformance(
        "own writes under concurrent checks and late invalidations",
        "8/14",
        "ignores_positions",
        own_writes,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Reconciliation corrects a version with the shard's current sequence (rule 6).

async fn correction(subject: Subject, driver: Arc<Driver>) -> Outcome {
    const KEY: &str = "page:1";
    let redis = RedisServer::start();
    let a = TestSidecar::builder(&redis.url())
        .server_id("a")
        .settings(|s| s.reconcile_interval_ms = 200)
        .start()
        .await;
    let mirror = open(subject, &addr(&a), Setup::default(), &driver).await;
    let v1 = mirror.get(KEY).await.expect("stamp");
    // The key's first version was announced too: the mirror has seen its (shard, sequence).
    assert!(
        eventually(WAIT, || async {
            mirror.stats().await.invalidations >= 1
                && mirror.is_current_local(KEY, &v1).await == Some(true)
        })
        .await,
        "{subject}: the first version was never announced"
    );
    // Same epoch, same sequence, another token: only reconciliation can notice.
    let epoch = v1.token().split('.').next().unwrap_or_default().to_string();
    let keyspace = &a.state.keyspace;
    let vkey = keyspace.version_key(keyspace.shard_of(KEY), KEY);
    let _: () = redis
        .cmd(&["SET", &vkey, &format!("{epoch}.999999.byhand")])
        .expect("SET");
    assert!(
        eventually(WAIT, || async {
            a.state.metrics.reconcile_mismatches.get() >= 1
        })
        .await,
        "reconciliation never corrected the version"
    );
    let corrected_at = Instant::now();
    let violations = judge(&mirror, KEY, &v1, corrected_at + BOUND, 20).await;
    close(mirror).await;
    a.shutdown().await;
    Outcome {
        violations,
        ..Outcome::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_corrects_a_version_with_the_shards_current_sequence() {
    conformance(
        "reconciliation corrects a version with the shard's current sequence",
        "6",
        "dedupes_by_sequence",
        correction,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// The stream goes silent without closing (rule 5).

/// Every connection the mirror has open to its sidecar goes silent for good (TCP stays up);
/// new connections work. The mirror must not answer the superseded version past the bound,
/// and must give the silent stream up and be refreshed again: a bump made afterwards is
/// answered locally.
async fn silent_stream(subject: Subject, driver: Arc<Driver>) -> Outcome {
    const KEY: &str = "silent";
    let idle_timeout = Duration::from_millis(1_500);
    let redis = RedisServer::start();
    let a = TestSidecar::start_named(&redis, "a").await;
    let b = TestSidecar::start_named(&redis, "b").await;
    let proxy = FreezingProxy::start(a.grpc_addr).await;
    let setup = Setup {
        idle_timeout,
        call_timeout: Duration::from_millis(500),
        ..Setup::default()
    };
    let mirror = open(subject, &proxy.addr().to_string(), setup, &driver).await;
    let via_b = client_of(&b).await;
    let old = mirror.get(KEY).await.expect("stamp");
    known_locally(&mirror, KEY, &old).await;

    proxy.freeze();
    via_b.bump(&[KEY]).await.expect("bump elsewhere");
    let bumped_at = Instant::now();
    // Checks that reach the sidecar now wait out their deadline: a few suffice.
    let mut violations = judge(&mirror, KEY, &old, bumped_at + BOUND, 3).await;
    let limit = idle_timeout + Duration::from_secs(8);
    if !mirror.wait_trusted(limit).await {
        violations.push(format!(
            "never trusted again within {limit:?} of a silent stream: it was not given up"
        ));
    } else {
        let fresh = via_b.bump(&[KEY]).await.expect("bump elsewhere").remove(0);
        let refreshed = eventually(Duration::from_secs(5), || async {
            mirror.is_current_local(KEY, &fresh).await == Some(true)
        })
        .await;
        if !refreshed {
            violations.push("trusted again, but a later bump never reached the mirror".into());
        }
    }
    let stats = mirror.stats().await;
    close(mirror).await;
    a.shutdown().await;
    b.shutdown().await;
    Outcome {
        violations,
        notes: format!(
            "streams opened {}, connections frozen {}",
            stats.connected,
            proxy.stats().frozen
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_goes_silent_without_closing() {
    conformance(
        "the stream goes silent without closing",
        "5",
        "no_idle_timeout",
        silent_stream,
    )
    .await;
}
