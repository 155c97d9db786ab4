//! `CoherentCache`: the app's side of the protocol, done once and right.
//!
//! Apps should not have to remember the rules of docs/design.md each time they cache something:
//! stamp before load (read the version, then load, then store the value with that version),
//! serve a value only while its version is current, one load per key at a time (single
//! flight, so an invalidation does not stampede the database), never cache what no version
//! vouches for, and bump after writing with a bounded retry. [`CoherentCache`] does all of
//! that on a bounded [`moka`] cache and a [`MirroredClient`], so almost every hit costs a
//! local map lookup.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use moka::ops::compute::Op;

use crate::client::{Consistency, Version};
use crate::error::Error;
use crate::freshness::Freshness;
use crate::mirror::MirroredClient;

/// Times `get_or_load` goes round (entry stale, a joined load already stale) before it loads
/// without the cache.
const MAX_ROUNDS: usize = 3;

/// A cached value and the version read before it was loaded.
struct Stamped<V> {
    version: Version,
    value: V,
}

/// How a load shared by concurrent callers ended, when it did not produce a cache entry.
enum Uncached<V, E> {
    /// No version could be read: the value is returned but not cached.
    Unstamped(V),
    /// The loader failed.
    Failed(Arc<E>),
}

/// Maps an app key to the coherence key whose version guards it.
type KeyFn<K> = Arc<dyn Fn(&K) -> String + Send + Sync>;

/// A bounded in-process cache whose entries are served only while the coherence version they
/// were stamped with is current. Cheap to clone; clones share the cache.
///
/// ```no_run
/// # async fn load_name(id: i64) -> Result<String, std::io::Error> { Ok(format!("item {id}")) }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use coherence_client::{Client, CoherentCache, MirrorOptions};
///
/// let mirrored = Client::connect("http://127.0.0.1:50051").await?.with_mirror(MirrorOptions::default());
/// let items: CoherentCache<i64, String> = CoherentCache::builder(mirrored, |id: &i64| format!("item:{id}"))
///     .max_capacity(10_000)
///     .build();
/// // The loader's own error (here io::Error) comes back as Arc<io::Error>: `?` it into the
/// // app's error type; it is not the sidecar's error.
/// let name = items.get_or_load(42, move || load_name(42)).await?;
/// // After writing item 42 to the database:
/// let report = items.invalidate_after_write(&[42]).await;
/// assert!(report.is_complete());
/// # Ok(()) }
/// ```
pub struct CoherentCache<K, V> {
    client: MirroredClient,
    entries: moka::future::Cache<K, Arc<Stamped<V>>>,
    key_fn: KeyFn<K>,
    bump_attempts: u32,
    bump_backoff: Duration,
    counters: Arc<CacheCounters>,
}

impl<K, V> Clone for CoherentCache<K, V> {
    fn clone(&self) -> Self {
        CoherentCache {
            client: self.client.clone(),
            entries: self.entries.clone(),
            key_fn: Arc::clone(&self.key_fn),
            bump_attempts: self.bump_attempts,
            bump_backoff: self.bump_backoff,
            counters: Arc::clone(&self.counters),
        }
    }
}

impl<K, V> CoherentCache<K, V> {
    /// The mirrored client underneath, without the bounds the cache's other methods need.
    pub(crate) fn mirrored(&self) -> &MirroredClient {
        &self.client
    }
}

impl<K, V> std::fmt::Debug for CoherentCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoherentCache")
            .field("client", &self.client)
            .field("entries", &self.entries.entry_count())
            .field("bump_attempts", &self.bump_attempts)
            .field("bump_backoff", &self.bump_backoff)
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct CacheCounters {
    hits: AtomicU64,
    loads: AtomicU64,
    uncached_loads: AtomicU64,
    stale: AtomicU64,
    unverifiable: AtomicU64,
}

impl CacheCounters {
    fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            uncached_loads: self.uncached_loads.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            unverifiable: self.unverifiable.load(Ordering::Relaxed),
        }
    }

    /// Counts an entry dropped because it was not [`Freshness::Current`].
    fn count_dropped(&self, freshness: Freshness) {
        let counter = match freshness {
            Freshness::Current => return,
            Freshness::Stale => &self.stale,
            Freshness::Unverifiable => &self.unverifiable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of one [`CoherentCache`], from [`CoherentCache::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Gets served from the cache (the entry's version was current).
    pub hits: u64,
    /// Loader calls whose result was cached.
    pub loads: u64,
    /// Loader calls whose result was returned but not cached (no version, or a joined load
    /// was already stale too often).
    pub uncached_loads: u64,
    /// Entries dropped because a newer version exists (superseded by a write).
    pub stale: u64,
    /// Entries dropped only because nothing could vouch for their version (sidecar or Redis
    /// unreachable, deadline passed): they may have been current. A rise here is an outage,
    /// not a burst of writes.
    pub unverifiable: u64,
}

/// What [`CoherentCache::invalidate_after_write`] achieved.
///
/// ```
/// use coherence_client::BumpReport;
/// let report = BumpReport { not_bumped: vec!["item:7".into()], ..BumpReport::default() };
/// assert!(!report.is_complete());
/// ```
#[derive(Debug, Clone, Default)]
pub struct BumpReport {
    /// Coherence keys bumped.
    pub bumped: Vec<String>,
    /// Coherence keys that could not be bumped after every retry: other servers may serve
    /// their old data until they are bumped. Retry, alert, or bump them later.
    pub not_bumped: Vec<String>,
    /// The last error, when some key could not be bumped.
    pub last_error: Option<Error>,
}

impl BumpReport {
    /// Whether every key was bumped.
    pub fn is_complete(&self) -> bool {
        self.not_bumped.is_empty()
    }
}

/// Builds a [`CoherentCache`]; from [`CoherentCache::builder`].
pub struct CoherentCacheBuilder<K, V> {
    client: MirroredClient,
    key_fn: KeyFn<K>,
    max_capacity: u64,
    time_to_live: Option<Duration>,
    bump_attempts: u32,
    bump_backoff: Duration,
    _value: std::marker::PhantomData<fn() -> V>,
}

impl<K, V> std::fmt::Debug for CoherentCacheBuilder<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoherentCacheBuilder")
            .field("client", &self.client)
            .field("max_capacity", &self.max_capacity)
            .field("time_to_live", &self.time_to_live)
            .field("bump_attempts", &self.bump_attempts)
            .field("bump_backoff", &self.bump_backoff)
            .finish_non_exhaustive()
    }
}

impl<K, V> CoherentCacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Most entries kept (default 10,000); the least useful are evicted past it.
    pub fn max_capacity(mut self, max_capacity: u64) -> Self {
        self.max_capacity = max_capacity;
        self
    }

    /// Entries older than this are reloaded even while current (default: no limit).
    pub fn time_to_live(mut self, time_to_live: Duration) -> Self {
        self.time_to_live = Some(time_to_live);
        self
    }

    /// Attempts per bump in [`CoherentCache::invalidate_after_write`] and the pause before the
    /// first retry, doubled each time (defaults 3 and 50 ms).
    pub fn bump_retry(mut self, attempts: u32, backoff: Duration) -> Self {
        self.bump_attempts = attempts.max(1);
        self.bump_backoff = backoff;
        self
    }

    /// The cache.
    pub fn build(self) -> CoherentCache<K, V> {
        let mut builder = moka::future::Cache::builder().max_capacity(self.max_capacity);
        if let Some(ttl) = self.time_to_live {
            builder = builder.time_to_live(ttl);
        }
        CoherentCache {
            client: self.client,
            entries: builder.build(),
            key_fn: self.key_fn,
            bump_attempts: self.bump_attempts,
            bump_backoff: self.bump_backoff,
            counters: Arc::default(),
        }
    }
}

impl<K, V> CoherentCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A builder. `coherence_key` names the coherence key guarding each app key: one per
    /// entity (`item:42`) for fine-grained invalidation, or one per type (`items`) for the
    /// Umbraco-style "any write drops them all".
    pub fn builder(
        client: MirroredClient,
        coherence_key: impl Fn(&K) -> String + Send + Sync + 'static,
    ) -> CoherentCacheBuilder<K, V> {
        CoherentCacheBuilder {
            client,
            key_fn: Arc::new(coherence_key),
            max_capacity: 10_000,
            time_to_live: None,
            bump_attempts: 3,
            bump_backoff: Duration::from_millis(50),
            _value: std::marker::PhantomData,
        }
    }

    /// A cache with the default settings (see [`CoherentCache::builder`]).
    pub fn new(
        client: MirroredClient,
        coherence_key: impl Fn(&K) -> String + Send + Sync + 'static,
    ) -> Self {
        CoherentCache::builder(client, coherence_key).build()
    }

    /// The mirrored client underneath.
    pub fn client(&self) -> &MirroredClient {
        &self.client
    }

    /// The cached value of `key` if there is one and its version is current (bounded
    /// staleness); `None` otherwise (a stale entry is dropped).
    pub async fn get(&self, key: &K) -> Option<V> {
        let entry = self.entries.get(key).await?;
        let freshness = self
            .client
            .freshness(&(self.key_fn)(key), &entry.version, Consistency::Bounded)
            .await;
        if freshness.is_current() {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Some(entry.value.clone());
        }
        self.drop_if_same(key, &entry, freshness).await;
        None
    }

    /// The value of `key`: from the cache while its version is current, else from `loader`.
    ///
    /// The usual loader is a `move` closure around an `async move` block, with whatever it
    /// needs (a pool handle, the id) moved in:
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # struct Db;
    /// # impl Db { async fn item_name(&self, _id: i64) -> Result<String, std::io::Error> { Ok(String::new()) } }
    /// # async fn demo(items: coherence_client::CoherentCache<i64, String>, db: Arc<Db>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let id = 7;
    /// let db = Arc::clone(&db);
    /// let name = items.get_or_load(id, move || async move { db.item_name(id).await }).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// **Stamp before load**: the version is read *before* `loader` runs and the value is
    /// stored with it, so a bump that races the load leaves the new entry stale, as it must.
    ///
    /// **How often `loader` runs**: at most once per call (it is `FnOnce`), and never while
    /// another call loads the same key (single flight). Precisely:
    /// - not at all when the cached entry is current (a hit), or when this call joins a load
    ///   another call of the same key has in progress and that load's version is still
    ///   current when it finishes;
    /// - once, its value cached, when this call performs the load and the version could be
    ///   read first;
    /// - once, its value returned but **not cached**, when no version could be read (sidecar
    ///   or Redis down: fail closed), or after this call joined three loads in a row whose
    ///   versions were already superseded by the time they finished (a key written faster
    ///   than it loads).
    ///
    /// **Errors**: a loader error is returned, as `Arc<E>`, to every call that shared the
    /// load, and nothing is cached. `Arc<E>` implements [`std::error::Error`] when `E` does, so
    /// `?` converts it into `Box<dyn Error>`, `anyhow::Error`, or an app error enum with a
    /// `From<Arc<E>>` variant. The sidecar's own failures never surface here: without a
    /// version the value is simply not cached.
    pub async fn get_or_load<F, Fut, E>(&self, key: K, loader: F) -> Result<V, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        self.get_or_load_with(key, Consistency::Bounded, loader)
            .await
    }

    /// [`CoherentCache::get_or_load`] with an explicit consistency. `Strong` checks the cached
    /// entry's version (and stamps a load) through the sidecar and Redis, so the value
    /// reflects every write whose bump completed before the call began — one round trip
    /// instead of a local lookup; use it where reading your own or another server's write at
    /// once matters (e.g. right after a redirect from an edit form). The loader runs as
    /// described for [`CoherentCache::get_or_load`].
    pub async fn get_or_load_with<F, Fut, E>(
        &self,
        key: K,
        consistency: Consistency,
        loader: F,
    ) -> Result<V, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let coherence_key = (self.key_fn)(&key);
        // The loader is taken by the one round whose load this call performs (after which the
        // call returns) or, if no round did, by the uncached load at the end. A std mutex,
        // never held across an await, keeps the future `Send`.
        let slot = Mutex::new(Some(loader));
        let take_loader = || {
            slot.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .expect("the loader runs at most once per call")
        };
        for _ in 0..MAX_ROUNDS {
            if let Some(entry) = self.entries.get(&key).await {
                let freshness = self
                    .client
                    .freshness(&coherence_key, &entry.version, consistency)
                    .await;
                if freshness.is_current() {
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(entry.value.clone());
                }
                self.drop_if_same(&key, &entry, freshness).await;
            }
            let loaded_here = AtomicBool::new(false);
            let init = async {
                loaded_here.store(true, Ordering::Relaxed);
                self.stamp_and_load(&coherence_key, consistency, take_loader())
                    .await
            };
            match self.entries.try_get_with(key.clone(), init).await {
                Ok(entry) => {
                    // A load we joined may have been stamped long before this call began:
                    // serve it only if it is still current.
                    if loaded_here.load(Ordering::Relaxed)
                        || self
                            .client
                            .is_current_with(&coherence_key, &entry.version, consistency)
                            .await
                    {
                        return Ok(entry.value.clone());
                    }
                }
                Err(shared) => {
                    return match &*shared {
                        Uncached::Unstamped(value) => Ok(value.clone()),
                        Uncached::Failed(err) => Err(Arc::clone(err)),
                    }
                }
            }
        }
        self.counters.uncached_loads.fetch_add(1, Ordering::Relaxed);
        take_loader()().await.map_err(Arc::new)
    }

    /// Stamp before load: version first, then the loader.
    async fn stamp_and_load<F, Fut, E>(
        &self,
        coherence_key: &str,
        consistency: Consistency,
        loader: F,
    ) -> Result<Arc<Stamped<V>>, Uncached<V, E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        let stamp = match consistency {
            Consistency::Bounded => self.client.get_one(coherence_key).await,
            Consistency::Strong => self
                .client
                .get_with(&[coherence_key], Consistency::Strong)
                .await
                .and_then(|mut v| v.pop().ok_or(Error::Malformed("Get answered no version"))),
        };
        match stamp {
            Ok(version) => {
                let value = loader().await.map_err(|e| Uncached::Failed(Arc::new(e)))?;
                self.counters.loads.fetch_add(1, Ordering::Relaxed);
                Ok(Arc::new(Stamped { version, value }))
            }
            Err(err) => {
                tracing::debug!(error = %err, key = coherence_key, "no version; loading without caching");
                let value = loader().await.map_err(|e| Uncached::Failed(Arc::new(e)))?;
                self.counters.uncached_loads.fetch_add(1, Ordering::Relaxed);
                Err(Uncached::Unstamped(value))
            }
        }
    }

    /// Removes `key` only if it still holds `stale` (not a fresh entry another task stored),
    /// counting it by why it goes.
    async fn drop_if_same(&self, key: &K, stale: &Arc<Stamped<V>>, freshness: Freshness) {
        self.counters.count_dropped(freshness);
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let op = match current {
                    Some(entry) if Arc::ptr_eq(entry.value(), stale) => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Call after a write to the source of truth has committed: drops `keys` here and bumps
    /// their coherence keys so every server drops them, retrying a failed bump a bounded
    /// number of times. Keys that could not be bumped are reported, never silently lost.
    ///
    /// ```no_run
    /// # async fn demo(items: coherence_client::CoherentCache<i64, String>) {
    /// let report = items.invalidate_after_write(&[7, 8]).await;
    /// if !report.is_complete() {
    ///     eprintln!("could not bump {:?}: {:?}", report.not_bumped, report.last_error);
    /// }
    /// # }
    /// ```
    pub async fn invalidate_after_write(&self, keys: &[K]) -> BumpReport {
        let mut coherence_keys: Vec<String> = keys.iter().map(|k| (self.key_fn)(k)).collect();
        coherence_keys.sort();
        coherence_keys.dedup();
        for key in keys {
            self.entries.invalidate(key).await;
        }
        let refs: Vec<&str> = coherence_keys.iter().map(String::as_str).collect();
        let mut backoff = self.bump_backoff;
        let mut last_error = None;
        for attempt in 1..=self.bump_attempts {
            match self.client.bump(&refs).await {
                Ok(_) => {
                    return BumpReport {
                        bumped: coherence_keys,
                        not_bumped: Vec::new(),
                        last_error: None,
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, attempt, keys = ?coherence_keys, "bump failed");
                    last_error = Some(err);
                }
            }
            if attempt < self.bump_attempts {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        BumpReport {
            bumped: Vec::new(),
            not_bumped: coherence_keys,
            last_error,
        }
    }

    /// Drops every entry of this process (other servers are not told; use
    /// [`CoherentCache::invalidate_after_write`] after a write).
    pub fn clear_local(&self) {
        self.entries.invalidate_all();
    }

    /// The cache's counters.
    pub fn stats(&self) -> CacheStats {
        self.counters.snapshot()
    }
}
