//! [`MemoryStore`]: records in the process, bounded by bytes and entries.

mod builder;
mod kept;
mod leases;
mod record_queue;
mod replays;
mod shards;
mod state;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;

pub use self::builder::{Eviction, MemoryStoreBuilder};
use self::{
    builder::Limits,
    kept::Kept,
    state::{record_size, Phase, State},
};
use super::{
    Begin, Fingerprint, IdempotencyStore, LockToken, Record, RecordKey, RecordState, StoreError,
    StoreErrorKind, StoredResponse,
};

/// The in-process store: the default, for one process, tests and the examples.
///
/// Bounded by bytes and by entries (see [`MemoryStore::builder`]); the byte count is
/// within a few percent of the records' real size (each body copied into an allocation
/// of exactly its length, the headers into a slice, plus the key and the store's
/// per-record structures; `cargo bench --bench memory` prints both). The records are
/// split over 16 tables, so no claim waits for a whole-store resize.
///
/// **When it is full**, a new claim first evicts expired records. If that does not make
/// room, the claim is refused ([`StoreErrorKind::CapacityExhausted`]: the layer answers
/// `503` with `Retry-After`, and nothing runs). An unexpired completed record is never
/// evicted by default, since its retry would then run its write again: the store trades
/// availability under a flood for never running a write twice.
/// [`Eviction::LeastRecentlyUsed`] makes the other trade, explicitly. An in-flight claim
/// is never evicted.
///
/// **Fair shares.** With a [`scope`](crate::IdempotencyLayer::scope) configured, the records
/// of one scope may hold at most [`max_scope_bytes`](MemoryStoreBuilder::max_scope_bytes)
/// and [`max_scope_entries`](MemoryStoreBuilder::max_scope_entries) (a quarter of the
/// store by default): a caller that floods the store is refused before
/// anyone else is. [`stats`](Self::stats) counts refusals and evictions.
///
/// A response that does not fit when it is recorded (the handler has run) is kept
/// without its body, so its retry gets "processed, response not stored" rather than a
/// second run; that body-less record is kept even if it takes the store (or the scope)
/// a few dozen bytes past its bound.
///
/// ```
/// use tower_idempotency::{store::Eviction, MemoryStore};
///
/// let store = MemoryStore::builder()
///     .max_bytes(16 * 1024 * 1024)
///     .max_entries(100_000)
///     .max_scope_bytes(1024 * 1024)
///     .eviction(Eviction::ExpiredOnly)
///     .build();
/// assert_eq!(store.len(), 0);
/// ```
///
/// Cloning is cheap and shares the records.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    limits: Limits,
}

impl Shared {
    fn new(limits: Limits) -> Self {
        Self {
            state: Mutex::new(State::new(
                limits.eviction == Eviction::LeastRecentlyUsed,
                limits.emits,
            )),
            limits,
        }
    }
}

/// What a [`MemoryStore`] holds and what it did to stay within its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Records held, expired ones not yet evicted included.
    pub records: usize,
    /// Bytes held, by the measure of [`MemoryStoreBuilder::max_bytes`].
    pub bytes: usize,
    /// Claims refused because the store (or the caller's scope) was full.
    pub refused_claims: u64,
    /// Unexpired completed records evicted to make room (only with
    /// [`Eviction::LeastRecentlyUsed`]).
    pub evicted: u64,
    /// Expired records removed.
    pub expired: u64,
    /// Responses kept without their body because the body did not fit.
    pub bodies_dropped: u64,
}

impl MemoryStore {
    /// The default byte bound: 64 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

    /// The default bound on the number of records: 1,000,000.
    pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

    /// A store with the default bounds, [`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES) and
    /// [`DEFAULT_MAX_ENTRIES`](Self::DEFAULT_MAX_ENTRIES), a quarter of the bytes per
    /// scope, and no eviction of unexpired records.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a store with other bounds. The bounds are fixed when the store is
    /// built: a store in use cannot change them.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_scope_bytes: None,
            max_scope_entries: None,
            eviction: Eviction::default(),
        }
    }

    /// How many records the store holds, expired ones not yet evicted included.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many bytes the store accounts for, by the same measure as
    /// [`MemoryStoreBuilder::max_bytes`].
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// What the store holds, and what it refused or evicted to stay within its bounds.
    pub fn stats(&self) -> MemoryStats {
        let state = self.lock();
        MemoryStats {
            records: state.records.len(),
            bytes: state.bytes,
            refused_claims: state.stats.refused,
            evicted: state.stats.evicted,
            expired: state.stats.expired,
            bodies_dropped: state.stats.bodies_dropped,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // breaks the invariants we rely on more than losing the store would.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("stats", &self.stats())
            .field("limits", &self.shared.limits)
            .finish()
    }
}

/// `now + duration`, or a date too far to matter when that would overflow the clock.
fn later(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 60 * 60))
}

/// The length of the scope partition at the front of `key` (0: no scope).
fn partition(key: &RecordKey) -> usize {
    key.scope_partition().map_or(0, str::len)
}

impl IdempotencyStore for MemoryStore {
    async fn begin(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        token: &LockToken,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        let now = Instant::now();
        let mut guard = self.lock();
        let state = &mut *guard;
        let hashed = state.records.hashed(key.as_str());
        if let Some(entry) = state.live(hashed, now) {
            if matches!(&entry.phase, Phase::InFlight(owner) if owner == token) {
                return Ok(Begin::OwnClaim);
            }
            if entry.fingerprint != *fingerprint {
                return Ok(Begin::Conflict(entry.fingerprint));
            }
            let response = match &entry.phase {
                Phase::InFlight(_) => return Ok(Begin::InProgress),
                Phase::Completed(response) => response.to_response(),
            };
            state.touch(hashed);
            return Ok(Begin::Completed(response));
        }
        let (shared_key, partition) = (key.shared(), partition(key));
        let size = record_size(key.as_str(), None);
        if !state.make_room(&self.shared.limits, key.as_str(), partition, size, 1, now) {
            state.stats.refused += 1;
            if self.shared.limits.emits {
                crate::telemetry::emit::memory_refused_claim();
            }
            return Err(StoreError::from_kind(StoreErrorKind::CapacityExhausted));
        }
        let deadline = later(now, lease);
        state.insert(
            hashed,
            shared_key,
            partition,
            *fingerprint,
            *token,
            deadline,
        );
        Ok(Begin::Claimed)
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: &LockToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut kept = Kept::new(response);
        let mut guard = self.lock();
        let state = &mut *guard;
        let hashed = state.records.hashed(key.as_str());
        let held = state.owned(hashed, token, now)?.size_now(key.as_str());
        let (key_str, partition) = (key.as_str(), partition(key));
        let extra = record_size(key_str, Some(&kept)).saturating_sub(held);
        if !state.make_room(&self.shared.limits, key_str, partition, extra, 0, now) {
            // No room for the body: keep the outcome without it, so a retry gets a clear
            // error instead of running again.
            state.stats.bodies_dropped += 1;
            kept = Kept::without_body(response.status);
        }
        state.complete(hashed, kept, later(now, ttl));
        Ok(())
    }

    async fn release(&self, key: &RecordKey, token: &LockToken) -> Result<(), StoreError> {
        let mut state = self.lock();
        let hashed = state.records.hashed(key.as_str());
        state.owned(hashed, token, Instant::now())?;
        state.remove(hashed);
        Ok(())
    }

    async fn renew(
        &self,
        key: &RecordKey,
        token: &LockToken,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        let hashed = state.records.hashed(key.as_str());
        state.owned(hashed, token, now)?;
        state.renew(hashed, later(now, lease));
        Ok(())
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        let mut state = self.lock();
        let hashed = state.records.hashed(key.as_str());
        let Some(entry) = state.live(hashed, Instant::now()) else {
            return Ok(None);
        };
        Ok(Some(Record {
            fingerprint: entry.fingerprint,
            state: match &entry.phase {
                Phase::InFlight(_) => RecordState::InFlight,
                Phase::Completed(response) => RecordState::Completed(response.to_response()),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_shows_the_default_bounds() {
        let readme = include_str!("../../../README.md").replace('\n', " ");
        assert_eq!(MemoryStore::DEFAULT_MAX_BYTES, 64 * 1024 * 1024);
        assert!(readme.contains("`MemoryStore::DEFAULT_MAX_BYTES` (64 MiB)"));
        assert_eq!(MemoryStore::DEFAULT_MAX_ENTRIES, 1_000_000);
        assert!(readme.contains("`DEFAULT_MAX_ENTRIES` (1,000,000)"));
    }
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    const LEASE: Duration = Duration::from_secs(30);
    const TTL: Duration = Duration::from_secs(3600);

    fn response(body_len: usize) -> StoredResponse {
        StoredResponse {
            status: StatusCode::CREATED,
            headers: HeaderMap::new(),
            body: Some(Bytes::from(vec![b'x'; body_len])),
            trailers: None,
        }
    }

    fn key(i: usize) -> RecordKey {
        RecordKey::new("t", "", &format!("key-{i}"))
    }

    const FP: Fingerprint = Fingerprint::from_bytes([1; 64]);

    async fn claim(store: &MemoryStore, i: usize) -> Result<LockToken, StoreError> {
        let token = LockToken::generate();
        match store.begin(&key(i), &FP, &token, LEASE).await? {
            Begin::Claimed => Ok(token),
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn with_lru_eviction_a_flood_stays_within_the_byte_bound() {
        let store = MemoryStore::builder()
            .max_bytes(64 * 1024)
            .eviction(Eviction::LeastRecentlyUsed)
            .build();
        for i in 0..10_000 {
            let token = claim(&store, i).await.unwrap();
            store
                .complete(&key(i), &token, &response(100), TTL)
                .await
                .unwrap();
            assert!(store.bytes() <= 64 * 1024);
        }
        // The most recent records are still there; the oldest were evicted.
        assert!(matches!(
            store
                .begin(&key(9_999), &FP, &LockToken::generate(), LEASE)
                .await
                .unwrap(),
            Begin::Completed(_)
        ));
        assert!(store.get(&key(0)).await.unwrap().is_none());
        assert!(store.len() < 10_000);
        assert_eq!(store.stats().evicted as usize, 10_000 - store.len());
    }

    #[tokio::test(start_paused = true)]
    async fn by_default_a_full_store_refuses_claims_and_keeps_every_completed_record() {
        let store = MemoryStore::builder().max_bytes(64 * 1024).build();
        let mut kept = 0;
        while let Ok(token) = claim(&store, kept).await {
            store
                .complete(&key(kept), &token, &response(100), TTL)
                .await
                .unwrap();
            assert!(store.bytes() <= 64 * 1024);
            kept += 1;
        }
        assert!(kept > 50, "the store held only {kept} records");
        let err = claim(&store, kept + 1).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::CapacityExhausted);
        for i in 0..kept {
            assert!(
                matches!(
                    store
                        .begin(&key(i), &FP, &LockToken::generate(), LEASE)
                        .await
                        .unwrap(),
                    Begin::Completed(_)
                ),
                "record {i} was kept"
            );
        }
        let stats = store.stats();
        assert_eq!(
            (stats.records, stats.evicted, stats.refused_claims),
            (kept, 0, 2)
        );
        // Once the records expire, there is room again.
        tokio::time::advance(TTL).await;
        claim(&store, kept + 2).await.unwrap();
    }

    #[tokio::test]
    async fn size_and_emptiness_are_reported_as_held() {
        let store = MemoryStore::new();
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
        let token = claim(&store, 0).await.unwrap();
        assert!(!store.is_empty());
        let key_len = key(0).as_str().len();
        assert_eq!(store.bytes(), state::PER_RECORD + key_len);
        let reply = response(300);
        store.complete(&key(0), &token, &reply, TTL).await.unwrap();
        let kept = Kept::new(&reply);
        assert_eq!(kept.body_len(), Some(300));
        assert!(store.bytes() >= state::PER_RECORD + key_len + 300);
        assert_eq!(store.bytes(), record_size(key(0).as_str(), Some(&kept)));
        assert!(store.bytes() > 300 + state::PER_RECORD);
        let debug = format!("{store:?}");
        assert!(
            debug.contains("records: 1") && debug.contains("max_bytes"),
            "{debug}"
        );
        store.release(&key(0), &token).await.unwrap_err();
        assert!(!store.is_empty(), "a completed record is not released");
    }

    #[test]
    fn a_far_future_duration_lands_far_in_the_future() {
        let now = Instant::now();
        let far = later(now, Duration::MAX);
        assert!(far >= now + Duration::from_secs(99 * 365 * 24 * 60 * 60));
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }

    #[tokio::test]
    async fn a_store_with_room_keeps_every_record() {
        let store = MemoryStore::builder()
            .eviction(Eviction::LeastRecentlyUsed)
            .build();
        for i in 0..2_000 {
            let token = claim(&store, i).await.unwrap();
            store
                .complete(&key(i), &token, &response(500), TTL)
                .await
                .unwrap();
        }
        assert_eq!(store.len(), 2_000);
        for i in 0..2_000 {
            assert!(store.get(&key(i)).await.unwrap().is_some(), "record {i}");
        }
        assert_eq!(store.stats().evicted, 0);
    }

    #[tokio::test]
    async fn one_scope_cannot_fill_the_store() {
        let store = MemoryStore::builder()
            .max_bytes(64 * 1024)
            .max_scope_bytes(16 * 1024)
            .build();
        let in_scope = |scope: &str, i: usize| RecordKey::new("t", scope, &format!("k{i}"));
        let mut flooded = 0;
        loop {
            let token = LockToken::generate();
            let key = in_scope("greedy", flooded);
            match store.begin(&key, &FP, &token, LEASE).await {
                Ok(_) => {
                    store
                        .complete(&key, &token, &response(200), TTL)
                        .await
                        .unwrap();
                    flooded += 1;
                }
                Err(err) => {
                    assert_eq!(err.kind(), StoreErrorKind::CapacityExhausted);
                    break;
                }
            }
        }
        assert!(
            store.bytes() <= 16 * 1024,
            "the greedy scope kept to its share"
        );
        // Others still claim: another scope, and the unscoped.
        for key in [in_scope("modest", 0), key(0)] {
            let token = LockToken::generate();
            assert_eq!(
                store.begin(&key, &FP, &token, LEASE).await.unwrap(),
                Begin::Claimed
            );
        }
        // And every greedy record is still there.
        for i in 0..flooded {
            assert!(store.get(&in_scope("greedy", i)).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn in_flight_claims_are_never_evicted_and_a_full_store_says_so() {
        let store = MemoryStore::builder()
            .max_entries(10)
            .eviction(Eviction::LeastRecentlyUsed)
            .build();
        let tokens: Vec<_> = claim_all(&store, 10).await;
        let err = claim(&store, 10).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::CapacityExhausted);
        for (i, token) in tokens.iter().enumerate() {
            assert!(matches!(
                store.get(&key(i)).await.unwrap().unwrap().state,
                RecordState::InFlight
            ));
            store.renew(&key(i), token, LEASE).await.unwrap();
        }
        // Completing one makes it evictable, so the next claim succeeds by evicting it.
        store
            .complete(&key(3), &tokens[3], &response(10), TTL)
            .await
            .unwrap();
        claim(&store, 10).await.unwrap();
        assert!(store.get(&key(3)).await.unwrap().is_none());
    }

    async fn claim_all(store: &MemoryStore, n: usize) -> Vec<LockToken> {
        let mut tokens = Vec::new();
        for i in 0..n {
            tokens.push(claim(store, i).await.unwrap());
        }
        tokens
    }

    #[tokio::test(start_paused = true)]
    async fn expired_records_are_evicted_before_live_ones() {
        let store = MemoryStore::builder().max_entries(3).build();
        let t0 = claim(&store, 0).await.unwrap();
        store
            .complete(&key(0), &t0, &response(1), Duration::from_secs(1))
            .await
            .unwrap();
        let t1 = claim(&store, 1).await.unwrap();
        store
            .complete(&key(1), &t1, &response(1), TTL)
            .await
            .unwrap();
        // key 0 is the most recently used, but it expires.
        store
            .begin(&key(0), &FP, &LockToken::generate(), LEASE)
            .await
            .unwrap();
        claim(&store, 2).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        claim(&store, 3).await.unwrap();
        assert!(
            store.get(&key(0)).await.unwrap().is_none(),
            "expired one went"
        );
        assert!(
            store.get(&key(1)).await.unwrap().is_some(),
            "live completed one stayed"
        );
        assert_eq!(store.stats().expired, 1);
        assert_eq!(store.stats().evicted, 0);
    }

    /// Lapsed claims and expired completed records are one order: whichever died first
    /// makes room first, and a live one, in flight or completed, stays.
    #[tokio::test(start_paused = true)]
    async fn the_first_to_die_goes_first_whether_in_flight_or_completed() {
        for lease_ends_first in [true, false] {
            let (lease, ttl) = if lease_ends_first {
                (Duration::from_secs(1), Duration::from_secs(3))
            } else {
                (Duration::from_secs(3), Duration::from_secs(1))
            };
            let store = MemoryStore::builder().max_entries(2).build();
            store
                .begin(&key(0), &FP, &LockToken::generate(), lease)
                .await
                .unwrap();
            let t1 = claim(&store, 1).await.unwrap();
            store
                .complete(&key(1), &t1, &response(1), ttl)
                .await
                .unwrap();
            tokio::time::advance(Duration::from_secs(2)).await;
            claim(&store, 2).await.unwrap();
            let (gone, kept) = if lease_ends_first { (0, 1) } else { (1, 0) };
            assert!(
                store.get(&key(gone)).await.unwrap().is_none(),
                "{gone} died first"
            );
            assert!(
                store.get(&key(kept)).await.unwrap().is_some(),
                "{kept} lives"
            );
            assert_eq!(store.stats().expired, 1);
            // With both gone, a fourth claim fits only once the survivor dies too.
            assert_eq!(
                claim(&store, 3).await.unwrap_err().kind(),
                StoreErrorKind::CapacityExhausted
            );
            tokio::time::advance(Duration::from_secs(2)).await;
            claim(&store, 3).await.unwrap();
            assert!(store.get(&key(kept)).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn lru_eviction_spares_the_record_replayed_last() {
        let store = MemoryStore::builder()
            .max_entries(2)
            .eviction(Eviction::LeastRecentlyUsed)
            .build();
        for i in 0..2 {
            let token = claim(&store, i).await.unwrap();
            store
                .complete(&key(i), &token, &response(1), TTL)
                .await
                .unwrap();
        }
        // Key 0 is older, but replayed now: key 1 is the least recently used.
        store
            .begin(&key(0), &FP, &LockToken::generate(), LEASE)
            .await
            .unwrap();
        claim(&store, 2).await.unwrap();
        assert!(
            store.get(&key(0)).await.unwrap().is_some(),
            "replayed one stayed"
        );
        assert!(
            store.get(&key(1)).await.unwrap().is_none(),
            "unused one went"
        );
        assert_eq!(store.stats().evicted, 1);
    }

    #[tokio::test]
    async fn the_bounds_are_inclusive() {
        // Exactly two in-flight records fit in bytes and entries; a third does not.
        let one = state::PER_RECORD + key(0).as_str().len();
        let store = MemoryStore::builder()
            .max_bytes(2 * one)
            .max_entries(2)
            .build();
        claim(&store, 0).await.unwrap();
        claim(&store, 1).await.unwrap();
        assert!(claim(&store, 2).await.is_err());
        let scoped = |i: usize| RecordKey::new("t", "s", &format!("key-{i}"));
        let per_scope = state::PER_RECORD + scoped(0).as_str().len();
        let store = MemoryStore::builder()
            .max_scope_bytes(2 * per_scope)
            .max_scope_entries(2)
            .build();
        for i in 0..2 {
            let key = scoped(i);
            assert_eq!(
                store
                    .begin(&key, &FP, &LockToken::generate(), LEASE)
                    .await
                    .unwrap(),
                Begin::Claimed
            );
        }
        assert!(store
            .begin(&scoped(2), &FP, &LockToken::generate(), LEASE)
            .await
            .is_err());
        assert_eq!(store.stats().refused_claims, 1);
    }

    #[tokio::test]
    async fn an_in_flight_claim_answers_only_its_own_token() {
        let store = MemoryStore::new();
        let token = claim(&store, 0).await.unwrap();
        let other = LockToken::generate();
        assert_eq!(
            store
                .renew(&key(0), &other, LEASE)
                .await
                .unwrap_err()
                .kind(),
            StoreErrorKind::Fenced
        );
        assert_eq!(
            store.release(&key(0), &other).await.unwrap_err().kind(),
            StoreErrorKind::Fenced
        );
        store.renew(&key(0), &token, LEASE).await.unwrap();
        store.release(&key(0), &token).await.unwrap();
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn a_response_too_large_for_the_store_is_kept_without_its_body() {
        let store = MemoryStore::builder().max_bytes(2 * 1024).build();
        let token = claim(&store, 0).await.unwrap();
        store
            .complete(&key(0), &token, &response(10 * 1024), TTL)
            .await
            .unwrap();
        let Begin::Completed(kept) = store
            .begin(&key(0), &FP, &LockToken::generate(), LEASE)
            .await
            .unwrap()
        else {
            panic!("completed record expected");
        };
        assert_eq!(kept.status, StatusCode::CREATED);
        assert_eq!(kept.body, None);
        assert!(store.bytes() <= 2 * 1024);
        assert_eq!(store.stats().bodies_dropped, 1);
    }

    #[tokio::test]
    async fn a_response_that_just_fits_is_kept_whole() {
        let reply = response(1000);
        let exact = record_size(key(0).as_str(), Some(&Kept::new(&reply)));
        let store = MemoryStore::builder().max_bytes(exact).build();
        let token = claim(&store, 0).await.unwrap();
        store.complete(&key(0), &token, &reply, TTL).await.unwrap();
        assert_eq!(
            store.bytes(),
            exact,
            "the in-flight record's bytes are replaced, not added"
        );
        assert_eq!(store.stats().bodies_dropped, 0);
        let record = store.get(&key(0)).await.unwrap().unwrap();
        assert_eq!(record.state, RecordState::Completed(reply));
    }

    #[tokio::test]
    async fn by_default_a_scope_may_hold_a_quarter_of_the_store() {
        let store = MemoryStore::builder().max_bytes(64 * 1024).build();
        for i in 0.. {
            let key = RecordKey::new("t", "one", &format!("k{i}"));
            let token = LockToken::generate();
            if store.begin(&key, &FP, &token, LEASE).await.is_err() {
                break;
            }
            store
                .complete(&key, &token, &response(100), TTL)
                .await
                .unwrap();
        }
        let held = store.bytes();
        assert!(
            held <= 16 * 1024 && held > 12 * 1024,
            "the scope held {held} bytes"
        );
    }

    #[tokio::test]
    async fn one_scope_cannot_take_every_entry_either() {
        let store = MemoryStore::builder().max_entries(40).build();
        let mut held = 0;
        while store
            .begin(
                &RecordKey::new("t", "greedy", &format!("k{held}")),
                &FP,
                &LockToken::generate(),
                LEASE,
            )
            .await
            .is_ok()
        {
            held += 1;
        }
        assert_eq!(held, 10, "a quarter of the entries");
        let other = RecordKey::new("t", "modest", "k");
        assert_eq!(
            store
                .begin(&other, &FP, &LockToken::generate(), LEASE)
                .await
                .unwrap(),
            Begin::Claimed
        );
    }

    #[test]
    fn the_per_record_overhead_covers_the_store_structures() {
        use std::mem::size_of;
        // The boxed record and its table slot, and the deadline index's entry.
        let slot = size_of::<(std::sync::Arc<str>, state::Entry)>()
            + size_of::<shards::Slot<state::Entry>>();
        let indices = record_queue::entry_bytes::<(i64, u64)>();
        assert!(state::PER_RECORD >= slot + indices, "{}", state::PER_RECORD);
        assert!(
            state::PER_RECORD <= 2 * (slot + indices),
            "{}",
            state::PER_RECORD
        );
    }

    #[tokio::test]
    async fn a_released_claim_gives_back_its_bytes() {
        let store = MemoryStore::new();
        let token = claim(&store, 0).await.unwrap();
        assert!(store.bytes() > 0);
        store.release(&key(0), &token).await.unwrap();
        assert_eq!((store.bytes(), store.len()), (0, 0));
        let token = claim(&store, 0).await.unwrap();
        store.release(&key(0), &token).await.unwrap();
        assert_eq!(store.bytes(), 0, "no drift over claims and releases");
    }

    #[tokio::test]
    async fn with_lru_eviction_a_full_scope_still_evicts_no_one() {
        let store = MemoryStore::builder()
            .max_bytes(64 * 1024)
            .max_scope_bytes(16 * 1024)
            .eviction(Eviction::LeastRecentlyUsed)
            .build();
        let in_scope = |scope: &str, i: usize| RecordKey::new("t", scope, &format!("k{i}"));
        let modest = in_scope("modest", 0);
        let token = LockToken::generate();
        store.begin(&modest, &FP, &token, LEASE).await.unwrap();
        store
            .complete(&modest, &token, &response(200), TTL)
            .await
            .unwrap();
        let mut refused = false;
        for i in 0..10_000 {
            let (key, token) = (in_scope("greedy", i), LockToken::generate());
            match store.begin(&key, &FP, &token, LEASE).await {
                Ok(_) => store
                    .complete(&key, &token, &response(200), TTL)
                    .await
                    .unwrap(),
                Err(err) => {
                    assert_eq!(err.kind(), StoreErrorKind::CapacityExhausted);
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused, "a full scope is refused, not made room for");
        assert!(
            store.get(&modest).await.unwrap().is_some(),
            "another caller's record stays"
        );
        assert_eq!(store.stats().evicted, 0);
    }

    #[tokio::test]
    async fn a_scope_gets_its_room_back_when_its_claims_are_released() {
        let store = MemoryStore::builder().max_entries(8).build();
        let scoped = RecordKey::new("t", "tenant", "k");
        for round in 0..10 {
            let token = LockToken::generate();
            let begun = store.begin(&scoped, &FP, &token, LEASE).await;
            assert!(
                matches!(begun, Ok(Begin::Claimed)),
                "round {round}: {begun:?}"
            );
            store.release(&scoped, &token).await.unwrap();
        }
        assert_eq!((store.len(), store.bytes()), (0, 0));
    }

    #[tokio::test]
    async fn a_responses_headers_are_counted_by_their_entries() {
        let store = MemoryStore::new();
        let mut with_headers = response(10);
        for i in 0..20 {
            let name = http::HeaderName::try_from(format!("x-h{i}")).unwrap();
            with_headers
                .headers
                .insert(name, http::HeaderValue::from_static("v"));
        }
        for (i, reply) in [response(10), with_headers].iter().enumerate() {
            let token = claim(&store, i).await.unwrap();
            store.complete(&key(i), &token, reply, TTL).await.unwrap();
        }
        let bare = record_size(key(0).as_str(), Some(&Kept::new(&response(10))));
        let entry = std::mem::size_of::<(http::HeaderName, http::HeaderValue)>();
        let headed = store.bytes() - bare;
        assert!(
            headed >= bare + 20 * entry,
            "20 headers cost at least their 20 map entries: {headed} vs {bare}"
        );
        assert!(headed <= bare + 20 * 4 * entry, "{headed} vs {bare}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_record_is_counted_when_it_is_dropped() {
        let store = MemoryStore::new();
        let token = claim(&store, 0).await.unwrap();
        store
            .complete(&key(0), &token, &response(1), Duration::from_secs(1))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        claim(&store, 0).await.unwrap();
        assert_eq!(store.stats().expired, 1);
        assert_eq!(store.len(), 1, "the new claim only");
    }

    /// The conformance suite, in the library's own tests too (so mutation testing of the
    /// memory store runs it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_memory_store_passes_the_conformance_suite() {
        crate::store::conformance::run_all(&MemoryStore::new()).await;
    }
}
