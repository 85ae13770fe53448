//! [`ReplayCache`]: the completed records a shared store answered with, kept in the
//! process, so that the next retry of the same request is replayed without a round trip.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use super::{
    Begin, Fingerprint, IdempotencyStore, LockToken, MemoryStore, Record, RecordKey, StoreError,
    StoredResponse,
};

/// A store in front of another (a `RedisStore` or a `PostgresStore`, features `redis` and
/// `postgres`, shared by many instances) that keeps in the
/// process the completed records that store replayed, and replays them again from there.
///
/// A completed record does not change until it expires, so a copy of it answers a
/// retry of the same request as the shared store would: with the same response. The first
/// retry that reaches this instance is answered by the shared store; the next ones (a
/// client that retries again, a retry storm after an outage) by the copy, with no round
/// trip, and still while the shared store is unreachable. Every other call goes to the
/// shared store as before: a claim of a free key, a key in flight, a request that differs
/// from the copy's (its conflict, or a new claim if the record expired), completions,
/// releases, renewals and `get`. Nothing a claim decides is taken from a copy.
///
/// **The trade.** A copy is kept for at most [`max_age`](Self::max_age) (default
/// [`DEFAULT_MAX_AGE`](Self::DEFAULT_MAX_AGE), 60 s) from when it was read. The copy does not
/// know the record's remaining TTL, so for up to `max_age` after the shared store expired
/// the record, this instance may still replay it to the same request, where the shared
/// store would have let the key run afresh: the one exception to the store contract's
/// "expired records are absent". That is the safe direction: a write is never run again
/// because of the cache, only replayed a little longer. Choose a `max_age` well below the
/// layer's [`ttl`](crate::IdempotencyLayer::ttl). A record deleted from the shared store
/// by hand is likewise replayed by the copy until it ages out.
///
/// **Metrics** (feature `metrics`): the layer labels this store's calls
/// `ReplayCache<RedisStore>` (its [`IdempotencyStore::metrics_name`], with the name of the
/// store behind), so that a hit, answered in the process, is never timed as a round trip
/// of that store; `idempotency_replay_cache_lookups_total` (labelled `store` and `result`:
/// `hit` or `miss`) counts the hits.
///
/// The copies are bounded by entries and bytes (by the [`MemoryStore`]'s measure; default
/// [`DEFAULT_MAX_ENTRIES`](Self::DEFAULT_MAX_ENTRIES) and
/// [`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES)), the least recently used evicted first: a
/// copy evicted is only a round trip more. The bounds are set before the store is used:
/// setting one gives this value new, empty copies and counts of its own.
///
/// ```
/// use std::time::Duration;
/// use tower_idempotency::{
///     store::{Begin, Fingerprint, IdempotencyStore, LockToken, RecordKey, ReplayCache},
///     MemoryStore,
/// };
/// # use tower_idempotency::store::StoredResponse;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// // In production the store behind it is shared: `ReplayCache::new(RedisStore::…)`.
/// let store = ReplayCache::new(MemoryStore::new())
///     .max_age(Duration::from_secs(30))
///     .max_entries(50_000);
/// let (key, fp) = (RecordKey::new("idem", "", "order-1"), Fingerprint::new([1; 32], [2; 32]));
/// let lease = Duration::from_secs(30);
/// let token = LockToken::generate();
/// assert_eq!(store.begin(&key, &fp, &token, lease).await?, Begin::Claimed);
/// # let response = StoredResponse { status: http::StatusCode::CREATED, headers: Default::default(), body: None, trailers: None };
/// store.complete(&key, &token, &response, Duration::from_secs(3600)).await?;
///
/// // The first replay is the shared store's; the second, the copy's.
/// for _ in 0..2 {
///     let again = store.begin(&key, &fp, &LockToken::generate(), lease).await?;
///     assert!(matches!(again, Begin::Completed(_)));
/// }
/// assert_eq!(store.stats().hits, 1);
/// # Ok::<(), tower_idempotency::store::StoreError>(())
/// # }).unwrap();
/// ```
///
/// Cloning is cheap: a clone shares the copies and their counts (and clones the store
/// behind it).
#[derive(Clone)]
pub struct ReplayCache<S> {
    store: S,
    copies: MemoryStore,
    max_age: Duration,
    max_entries: usize,
    max_bytes: usize,
    counts: Arc<Counts>,
    /// `ReplayCache<…>`, made once.
    name: Arc<OnceLock<&'static str>>,
}

#[derive(Default)]
struct Counts {
    lookups: AtomicU64,
    hits: AtomicU64,
}

/// What a [`ReplayCache`] holds and how often it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayCacheStats {
    /// Claims looked up in the cache (every `begin`).
    pub lookups: u64,
    /// Claims the cache answered (with a replay) without the store behind it.
    pub hits: u64,
    /// Copies held, expired ones not yet removed included.
    pub records: usize,
    /// Bytes the copies hold, by the [`MemoryStore`]'s measure.
    pub bytes: usize,
    /// Copies evicted, least recently used first, to make room for others.
    pub evicted: u64,
    /// Copies removed because they reached their `max_age`.
    pub expired: u64,
}

impl<S> ReplayCache<S> {
    /// How long a copy is kept by default: 60 s.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
    /// The default bound on the copies held: 10,000.
    pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
    /// The default bound on the copies' bytes: 16 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 16 * 1024 * 1024;

    /// `store` with a cache of the records it replays, with the default bounds.
    pub fn new(store: S) -> Self {
        Self {
            store,
            copies: MemoryStore::for_replays(Self::DEFAULT_MAX_ENTRIES, Self::DEFAULT_MAX_BYTES),
            max_age: Self::DEFAULT_MAX_AGE,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            counts: Arc::default(),
            name: Arc::default(),
        }
    }

    /// How long a copy is kept from when the store behind replayed it (see the trade
    /// above); `Duration::ZERO` keeps none.
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The most copies held (the cache starts empty again).
    #[must_use]
    pub fn max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self.emptied()
    }

    /// The most bytes the copies hold, by the [`MemoryStore`]'s measure (the cache starts
    /// empty again).
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self.emptied()
    }

    /// New copies within the bounds, and counts of their own.
    fn emptied(mut self) -> Self {
        self.copies = MemoryStore::for_replays(self.max_entries, self.max_bytes);
        self.counts = Arc::default();
        self
    }

    /// The store behind the cache.
    pub fn get_ref(&self) -> &S {
        &self.store
    }

    /// What the cache holds and how often it answered.
    pub fn stats(&self) -> ReplayCacheStats {
        let held = self.copies.stats();
        ReplayCacheStats {
            lookups: self.counts.lookups.load(Ordering::Relaxed),
            hits: self.counts.hits.load(Ordering::Relaxed),
            records: held.records,
            bytes: held.bytes,
            evicted: held.evicted,
            expired: held.expired,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ReplayCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayCache")
            .field("store", &self.store)
            .field("max_age", &self.max_age)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S: IdempotencyStore> IdempotencyStore for ReplayCache<S> {
    async fn begin(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        token: &LockToken,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        self.counts.lookups.fetch_add(1, Ordering::Relaxed);
        let name = self.metrics_name();
        if let Some(answer) = self.copies.replay(key, fingerprint) {
            self.counts.hits.fetch_add(1, Ordering::Relaxed);
            crate::telemetry::emit::replay_cache_lookup(name, true);
            return Ok(answer);
        }
        crate::telemetry::emit::replay_cache_lookup(name, false);
        let answer = self.store.begin(key, fingerprint, token, lease).await?;
        if let Begin::Completed(response) = &answer {
            if !self.max_age.is_zero() {
                self.copies
                    .remember(key, fingerprint, response, self.max_age);
            }
        }
        Ok(answer)
    }

    fn complete(
        &self,
        key: &RecordKey,
        token: &LockToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        self.store.complete(key, token, response, ttl)
    }

    fn release(
        &self,
        key: &RecordKey,
        token: &LockToken,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        self.store.release(key, token)
    }

    fn renew(
        &self,
        key: &RecordKey,
        token: &LockToken,
        lease: Duration,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        self.store.renew(key, token, lease)
    }

    fn get(
        &self,
        key: &RecordKey,
    ) -> impl std::future::Future<Output = Result<Option<Record>, StoreError>> + Send {
        self.store.get(key)
    }

    fn metrics_name(&self) -> &'static str {
        self.name
            .get_or_init(|| interned(format!("ReplayCache<{}>", self.store.metrics_name())))
    }
}

/// `name` as a `&'static str`: the same string each time it is asked for (one per store
/// type behind a cache, kept for the life of the process).
fn interned(name: String) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = names.iter().find(|known| **known == name) {
        return known;
    }
    let name: &'static str = Box::leak(name.into_boxed_str());
    names.push(name);
    name
}
