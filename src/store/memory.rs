//! [`MemoryStore`]: records in the process, bounded by bytes and entries.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    Begin, Fingerprint, IdempotencyStore, LockToken, Record, RecordKey, RecordState, StoreError,
    StoreErrorKind, StoredResponse,
};

/// Bytes charged to every record on top of its key and response: the map entry, the two
/// index entries and the fingerprint. An estimate; it keeps a flood of tiny records from
/// slipping past the byte bound.
const RECORD_OVERHEAD: usize = 160;

/// The in-process store: the default, for one process, tests and the examples.
///
/// Bounded twice, by bytes and by entries (see [`MemoryStore::builder`]). When a new
/// claim needs room, expired records go first, then the least recently used completed
/// records. An in-flight claim is never evicted: when the store is full of live claims,
/// [`begin`](IdempotencyStore::begin) fails with
/// [`StoreErrorKind::CapacityExhausted`] (the layer answers `503`) rather than forget one.
///
/// ```
/// use tower_idempotency::MemoryStore;
///
/// let store = MemoryStore::builder()
///     .max_bytes(16 * 1024 * 1024)
///     .max_entries(100_000)
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

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_bytes: usize,
    max_entries: usize,
}

#[derive(Default)]
struct State {
    records: HashMap<Arc<str>, Entry>,
    /// Every record by the instant it dies (lease end or TTL end).
    by_deadline: BTreeMap<(Instant, u64), Arc<str>>,
    /// Completed records by last use, oldest first.
    by_use: BTreeMap<u64, Arc<str>>,
    bytes: usize,
    clock: u64,
}

struct Entry {
    fingerprint: Fingerprint,
    phase: Phase,
    deadline: Instant,
    /// Unique per record; ties `by_deadline` entries to it.
    id: u64,
    /// Last use, the key in `by_use` (completed records only).
    used: u64,
    size: usize,
}

enum Phase {
    InFlight(LockToken),
    Completed(StoredResponse),
}

impl MemoryStore {
    /// The default byte bound: 64 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

    /// The default bound on the number of records: 1,000,000.
    pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

    /// A store with the default bounds, [`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES) and
    /// [`DEFAULT_MAX_ENTRIES`](Self::DEFAULT_MAX_ENTRIES).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a store with other bounds. The bounds are fixed when the store is
    /// built: a store in use cannot change them.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            limits: Limits {
                max_bytes: Self::DEFAULT_MAX_BYTES,
                max_entries: Self::DEFAULT_MAX_ENTRIES,
            },
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

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // breaks the invariants we rely on more than losing the store would.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Builds a [`MemoryStore`] with bounds of its own; from [`MemoryStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    limits: Limits,
}

impl MemoryStoreBuilder {
    /// The byte bound: keys, responses and a per-record overhead (default
    /// [`MemoryStore::DEFAULT_MAX_BYTES`]).
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.limits.max_bytes = max_bytes;
        self
    }

    /// The bound on the number of records (default [`MemoryStore::DEFAULT_MAX_ENTRIES`]).
    pub fn max_entries(mut self, max_entries: usize) -> Self {
        self.limits.max_entries = max_entries;
        self
    }

    /// The store, empty.
    pub fn build(self) -> MemoryStore {
        MemoryStore {
            shared: Arc::new(Shared {
                state: Mutex::default(),
                limits: self.limits,
            }),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStore")
            .field("records", &state.records.len())
            .field("bytes", &state.bytes)
            .field("max_bytes", &self.shared.limits.max_bytes)
            .field("max_entries", &self.shared.limits.max_entries)
            .finish()
    }
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The live entry under `key`; an expired one is removed on the way.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        let expired = self.records.get(key)?.deadline <= now;
        if expired {
            self.remove(key);
            return None;
        }
        self.records.get_mut(key)
    }

    /// The live in-flight entry under `key` held with `token`.
    fn owned(
        &mut self,
        key: &str,
        token: &LockToken,
        now: Instant,
    ) -> Result<&mut Entry, StoreError> {
        match self.live(key, now) {
            Some(entry) if matches!(&entry.phase, Phase::InFlight(t) if t == token) => Ok(entry),
            _ => Err(StoreError::fenced()),
        }
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.records.remove(key)?;
        self.by_deadline.remove(&(entry.deadline, entry.id));
        if matches!(entry.phase, Phase::Completed(_)) {
            self.by_use.remove(&entry.used);
        }
        self.bytes -= entry.size;
        Some(entry)
    }

    fn set_deadline(&mut self, key: &str, deadline: Instant) {
        let entry = self.records.get_mut(key).expect("entry present");
        let shared_key = self
            .by_deadline
            .remove(&(entry.deadline, entry.id))
            .expect("deadline indexed");
        entry.deadline = deadline;
        self.by_deadline.insert((deadline, entry.id), shared_key);
    }

    /// Evicts until `extra` more bytes and `extra_entries` more records fit: expired
    /// records first, then least recently used completed ones. Never an in-flight claim.
    fn make_room(
        &mut self,
        limits: Limits,
        extra: usize,
        extra_entries: usize,
        now: Instant,
    ) -> bool {
        while self.bytes + extra > limits.max_bytes
            || self.records.len() + extra_entries > limits.max_entries
        {
            let victim = match self.by_deadline.first_key_value() {
                Some((&(deadline, _), key)) if deadline <= now => Arc::clone(key),
                _ => match self.by_use.first_key_value() {
                    Some((_, key)) => Arc::clone(key),
                    None => return false,
                },
            };
            self.remove(&victim);
        }
        true
    }
}

/// `now + duration`, or a date too far to matter when that would overflow the clock.
fn later(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 60 * 60))
}

fn entry_size(key: &str, response: Option<&StoredResponse>) -> usize {
    RECORD_OVERHEAD + key.len() + response.map_or(0, StoredResponse::size)
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
        let used = state.tick();
        if let Some(entry) = state.live(key.as_str(), now) {
            if matches!(&entry.phase, Phase::InFlight(owner) if owner == token) {
                return Ok(Begin::OwnClaim);
            }
            if entry.fingerprint != *fingerprint {
                return Ok(Begin::Conflict);
            }
            return Ok(match &entry.phase {
                Phase::InFlight(_) => Begin::InProgress,
                Phase::Completed(response) => {
                    let response = response.clone();
                    let last = std::mem::replace(&mut entry.used, used);
                    let shared_key = state.by_use.remove(&last).expect("completed indexed");
                    state.by_use.insert(used, shared_key);
                    Begin::Completed(response)
                }
            });
        }
        let size = entry_size(key.as_str(), None);
        if !state.make_room(self.shared.limits, size, 1, now) {
            return Err(StoreError::from_kind(StoreErrorKind::CapacityExhausted));
        }
        let shared_key: Arc<str> = Arc::from(key.as_str());
        let deadline = later(now, lease);
        state
            .by_deadline
            .insert((deadline, used), Arc::clone(&shared_key));
        state.bytes += size;
        state.records.insert(
            shared_key,
            Entry {
                fingerprint: *fingerprint,
                phase: Phase::InFlight(*token),
                deadline,
                id: used,
                used,
                size,
            },
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
        let mut guard = self.lock();
        let state = &mut *guard;
        let old_size = state.owned(key.as_str(), token, now)?.size;
        let mut response = response.clone();
        let mut size = entry_size(key.as_str(), Some(&response));
        if !state.make_room(self.shared.limits, size.saturating_sub(old_size), 0, now) {
            // No room for the body even after evicting every completed record: keep the
            // outcome without it, so a retry gets a clear error instead of running again.
            response.headers.clear();
            response.body = None;
            size = entry_size(key.as_str(), Some(&response));
        }
        let used = state.tick();
        let entry = state.records.get_mut(key.as_str()).expect("owned entry");
        entry.phase = Phase::Completed(response);
        entry.used = used;
        entry.size = size;
        state.bytes = state.bytes - old_size + size;
        let shared_key = Arc::clone(
            state
                .by_deadline
                .get(&(entry.deadline, entry.id))
                .expect("indexed"),
        );
        state.by_use.insert(used, shared_key);
        state.set_deadline(key.as_str(), later(now, ttl));
        Ok(())
    }

    async fn release(&self, key: &RecordKey, token: &LockToken) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.owned(key.as_str(), token, Instant::now())?;
        state.remove(key.as_str());
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
        state.owned(key.as_str(), token, now)?;
        state.set_deadline(key.as_str(), later(now, lease));
        Ok(())
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        let mut state = self.lock();
        Ok(state
            .live(key.as_str(), Instant::now())
            .map(|entry| Record {
                fingerprint: entry.fingerprint,
                state: match &entry.phase {
                    Phase::InFlight(_) => RecordState::InFlight,
                    Phase::Completed(response) => RecordState::Completed(response.clone()),
                },
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_shows_the_default_bounds() {
        let readme = include_str!("../../README.md").replace('\n', " ");
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
        }
    }

    fn key(i: usize) -> RecordKey {
        RecordKey::new("t", "", &format!("key-{i}"))
    }

    const FP: Fingerprint = Fingerprint::from_bytes([1; 32]);

    async fn claim(store: &MemoryStore, i: usize) -> Result<LockToken, StoreError> {
        let token = LockToken::generate();
        match store.begin(&key(i), &FP, &token, LEASE).await? {
            Begin::Claimed => Ok(token),
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_flood_of_fresh_completed_keys_stays_within_the_byte_bound() {
        let store = MemoryStore::builder().max_bytes(64 * 1024).build();
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
    }

    #[tokio::test]
    async fn in_flight_claims_are_never_evicted_and_a_full_store_says_so() {
        let store = MemoryStore::builder().max_entries(10).build();
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
    }
}
