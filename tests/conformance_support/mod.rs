//! The mirrors under test, behind one interface, for `tests/conformance.rs`: the Rust
//! [`MirroredClient`] in this process, and Python mirrors (the package's own, or a
//! rule-breaking variant of `clients/python/tests/mirror_variants.py`) in a Python process
//! that runs `clients/python/tests/conformance_driver.py` and answers JSON lines.

pub mod driver;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coherence_client::{Client, Consistency, MirrorEvent, MirrorOptions, MirroredClient, Version};
use serde_json::{json, Value};

pub use driver::Driver;

/// Which mirror a scenario drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// `coherence_client::MirroredClient`.
    Rust,
    /// `coherence_client.MirroredClient` (Python), "shipped" or a rule-breaking variant.
    Python(&'static str),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Rust => f.write_str("Rust MirroredClient"),
            Subject::Python("shipped") => f.write_str("Python MirroredClient"),
            Subject::Python(variant) => write!(f, "Python variant {variant}"),
        }
    }
}

/// How a mirror is set up (the same for both languages).
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub max_staleness: Duration,
    pub idle_timeout: Duration,
    pub max_entries: usize,
    /// Per-call deadline of the client underneath.
    pub call_timeout: Duration,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            max_staleness: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            max_entries: 1_000_000,
            call_timeout: Duration::from_secs(2),
        }
    }
}

/// What a mirror reports of itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub invalidations: u64,
    pub evictions: u64,
    #[expect(dead_code, reason = "read only through Debug, in failure messages")]
    pub reconnects: u64,
    /// Streams opened (every `Connected` event).
    pub connected: u64,
}

/// The result of the concurrent own-writes run.
#[derive(Debug, Clone, Default)]
pub struct OwnWrites {
    pub bumps: u64,
    pub checks: u64,
    pub violations: u64,
    pub example: Option<String>,
}

/// One mirror under test.
pub enum Mirror {
    Rust {
        mirror: MirroredClient,
        connected: Arc<AtomicU64>,
    },
    Python {
        driver: Arc<Driver>,
        name: String,
    },
}

static NAMES: AtomicU64 = AtomicU64::new(0);

impl Mirror {
    /// Opens a mirror of `subject` on the sidecar at `addr` (`host:port`).
    pub async fn open(
        subject: Subject,
        addr: &str,
        setup: Setup,
        driver: Option<&Arc<Driver>>,
    ) -> Mirror {
        match subject {
            Subject::Rust => {
                let connected = Arc::new(AtomicU64::new(0));
                let count = Arc::clone(&connected);
                let options = MirrorOptions::default()
                    .max_staleness(setup.max_staleness)
                    .idle_timeout(setup.idle_timeout)
                    .max_entries(setup.max_entries)
                    .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
                    .on_event(move |event| {
                        if matches!(event, MirrorEvent::Connected { .. }) {
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                let client = Client::connect_lazy(format!("http://{addr}"))
                    .expect("a valid address")
                    .with_timeout(setup.call_timeout);
                Mirror::Rust {
                    mirror: client.with_mirror(options),
                    connected,
                }
            }
            Subject::Python(variant) => {
                let driver = Arc::clone(driver.expect("a Python driver for a Python mirror"));
                let name = format!("m{}", NAMES.fetch_add(1, Ordering::Relaxed));
                driver
                    .call(
                        "open",
                        json!({
                            "mirror": name,
                            "address": addr,
                            "variant": variant,
                            "max_staleness_ms": setup.max_staleness.as_millis() as u64,
                            "idle_timeout_ms": setup.idle_timeout.as_millis() as u64,
                            "max_entries": setup.max_entries,
                            "timeout_ms": setup.call_timeout.as_millis() as u64,
                        }),
                    )
                    .await
                    .expect("the Python mirror opens");
                Mirror::Python { driver, name }
            }
        }
    }

    async fn py(&self, op: &str, mut args: Value) -> Result<Value, String> {
        let Mirror::Python { driver, name } = self else {
            unreachable!("only Python mirrors are driven")
        };
        args["mirror"] = json!(name);
        driver.call(op, args).await
    }

    /// Stamps `key` through the mirror (a `Get`, whose answer the mirror may fill).
    pub async fn get(&self, key: &str) -> Result<Version, String> {
        match self {
            Mirror::Rust { mirror, .. } => mirror
                .get_with(&[key], Consistency::Bounded)
                .await
                .map(|mut v| v.remove(0))
                .map_err(|e| e.to_string()),
            Mirror::Python { .. } => self
                .py("get", json!({ "key": key }))
                .await
                .map(|v| Version::from_token(v.as_str().unwrap_or_default())),
        }
    }

    /// An own bump through the mirror.
    pub async fn bump(&self, key: &str) -> Result<Version, String> {
        match self {
            Mirror::Rust { mirror, .. } => mirror
                .bump(&[key])
                .await
                .map(|mut v| v.remove(0))
                .map_err(|e| e.to_string()),
            Mirror::Python { .. } => self
                .py("bump", json!({ "key": key }))
                .await
                .map(|v| Version::from_token(v.as_str().unwrap_or_default())),
        }
    }

    /// A bounded check (answered locally when the mirror can).
    pub async fn is_current(&self, key: &str, version: &Version) -> bool {
        match self {
            Mirror::Rust { mirror, .. } => mirror.is_current(key, version).await,
            Mirror::Python { .. } => self
                .py(
                    "is_current",
                    json!({ "key": key, "version": version.token() }),
                )
                .await
                .expect("the driver answers")
                .as_bool()
                .expect("a boolean"),
        }
    }

    /// The local answer only.
    pub async fn is_current_local(&self, key: &str, version: &Version) -> Option<bool> {
        match self {
            Mirror::Rust { mirror, .. } => mirror.is_current_local(key, version),
            Mirror::Python { .. } => self
                .py(
                    "is_current_local",
                    json!({ "key": key, "version": version.token() }),
                )
                .await
                .expect("the driver answers")
                .as_bool(),
        }
    }

    pub async fn wait_trusted(&self, limit: Duration) -> bool {
        match self {
            Mirror::Rust { mirror, .. } => mirror.wait_trusted(limit).await,
            Mirror::Python { .. } => self
                .py(
                    "wait_trusted",
                    json!({ "timeout_ms": limit.as_millis() as u64 }),
                )
                .await
                .expect("the driver answers")
                .as_bool()
                .unwrap_or(false),
        }
    }

    pub async fn stats(&self) -> Stats {
        match self {
            Mirror::Rust { mirror, connected } => {
                let s = mirror.stats();
                Stats {
                    invalidations: s.invalidations,
                    evictions: s.evictions,
                    reconnects: s.reconnects,
                    connected: connected.load(Ordering::SeqCst),
                }
            }
            Mirror::Python { .. } => {
                let s = self
                    .py("stats", json!({}))
                    .await
                    .expect("the driver answers");
                let n = |field: &str| s[field].as_u64().unwrap_or(0);
                Stats {
                    invalidations: n("invalidations"),
                    evictions: n("evictions"),
                    reconnects: n("reconnects"),
                    connected: n("connected"),
                }
            }
        }
    }

    /// Guarantee 7 under concurrency: this mirror bumps `key` `bumps` times while checkers
    /// (two of them filling the mirror with strong checks that race the bumps) check the
    /// version each own bump replaced; counts those answered current. Another server may bump
    /// the key meanwhile (the caller's business), so older bumps' invalidations arrive late.
    pub async fn own_writes(&self, key: &str, bumps: u64) -> OwnWrites {
        match self {
            Mirror::Rust { mirror, .. } => rust_own_writes(mirror, key, bumps).await,
            Mirror::Python { .. } => {
                let r = self
                    .py("own_writes", json!({ "key": key, "bumps": bumps }))
                    .await
                    .expect("the driver runs the own-writes race");
                OwnWrites {
                    bumps: r["bumps"].as_u64().unwrap_or(0),
                    checks: r["checks"].as_u64().unwrap_or(0),
                    violations: r["violations"].as_u64().unwrap_or(0),
                    example: r["example"].as_str().map(str::to_string),
                }
            }
        }
    }

    pub async fn close(self) {
        if let Mirror::Python { .. } = &self {
            self.py("close", json!({}))
                .await
                .expect("the Python mirror closes");
        }
    }
}

/// The Rust twin of the driver's `own_writes` (and of client/tests/mirror.rs
/// own_bumps_stay_visible_under_concurrent_checks_and_late_invalidations).
async fn rust_own_writes(mirror: &MirroredClient, key: &str, bumps: u64) -> OwnWrites {
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    let first = mirror.get_one(key).await.expect("stamp");
    let own: Arc<Mutex<Vec<Version>>> = Arc::new(Mutex::new(vec![first]));
    let done = Arc::new(AtomicBool::new(false));
    let mut checkers = Vec::new();
    for strong in [true, true, false, false] {
        let (mirror, own, done, key) = (
            mirror.clone(),
            Arc::clone(&own),
            Arc::clone(&done),
            key.to_string(),
        );
        checkers.push(tokio::spawn(async move {
            let (mut checks, mut violations) = (0u64, Vec::new());
            while !done.load(Ordering::SeqCst) {
                let (latest, superseded) = {
                    let own = own.lock().expect("own versions");
                    let n = own.len();
                    (own[n - 1].clone(), n.checked_sub(2).map(|i| own[i].clone()))
                };
                if strong {
                    mirror
                        .is_current_with(&key, &latest, Consistency::Strong)
                        .await;
                }
                if let Some(old) = superseded {
                    checks += 1;
                    if mirror.is_current(&key, &old).await {
                        violations.push(old);
                    }
                }
                tokio::task::yield_now().await;
            }
            (checks, violations)
        }));
    }
    for _ in 0..bumps {
        let bumped = mirror.bump(&[key]).await.expect("own bump").remove(0);
        own.lock().expect("own versions").push(bumped);
    }
    done.store(true, Ordering::SeqCst);
    let mut result = OwnWrites {
        bumps,
        ..OwnWrites::default()
    };
    for checker in checkers {
        let (checks, violations) = checker.await.expect("checker");
        result.checks += checks;
        result.violations += violations.len() as u64;
        if result.example.is_none() {
            result.example = violations.first().map(|v| v.token().to_string());
        }
    }
    result
}
