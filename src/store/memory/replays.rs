//! What a [`ReplayCache`](crate::store::ReplayCache) asks of the memory store that holds its
//! records: a completed record's answer without writing anything, and a completed record
//! written whole, with no claim before it.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{
    builder::Limits,
    kept::Kept,
    later,
    state::{record_size, Phase},
    Eviction, MemoryStore, Shared,
};
use crate::store::{Begin, Fingerprint, LockToken, RecordKey, StoredResponse};

impl MemoryStore {
    /// A store for a replay cache's records: at most `max_entries` records and `max_bytes`,
    /// the least recently used evicted to make room (each is a copy of a record a shared
    /// store holds), and no metrics of its own. Copies are kept outside any scope (see
    /// [`remember`](Self::remember)), so the scope bounds never apply.
    pub(in crate::store) fn for_replays(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            shared: Arc::new(Shared::new(Limits {
                max_bytes,
                max_entries,
                max_scope_bytes: max_bytes,
                max_scope_entries: max_entries,
                eviction: Eviction::LeastRecentlyUsed,
                emits: false,
            })),
        }
    }

    /// The response of the live completed record of `fingerprint` under `key`
    /// ([`Begin::Completed`]), marked used; `None` when there is none, or when the record
    /// is another request's (the store behind answers that: a copy may have outlived its
    /// record, and the key may now hold this very request). Writes nothing else.
    pub(in crate::store) fn replay(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
    ) -> Option<Begin> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let hashed = state.records.hashed(key.as_str());
        let entry = state.live(hashed, Instant::now())?;
        let Phase::Completed(kept) = &entry.phase else {
            return None;
        };
        if entry.fingerprint != *fingerprint {
            return None;
        }
        let response = kept.to_response();
        state.touch(hashed);
        Some(Begin::Completed(response))
    }

    /// Keeps `response` as the completed record of `fingerprint` under `key` for `ttl`,
    /// evicting the least recently used copies to make room. Nothing is written when a
    /// live record is there already or the record does not fit. A copy belongs to no
    /// scope here (the key still holds its scope): one busy scope's copies evict the
    /// others' rather than stop the cache.
    pub(in crate::store) fn remember(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        response: &StoredResponse,
        ttl: Duration,
    ) {
        let now = Instant::now();
        let kept = Kept::new(response);
        let mut guard = self.lock();
        let state = &mut *guard;
        let hashed = state.records.hashed(key.as_str());
        if state.live(hashed, now).is_some() {
            return;
        }
        let (key_str, partition) = (key.as_str(), 0);
        let size = record_size(key_str, Some(&kept));
        if !state.make_room(&self.shared.limits, key_str, partition, size, 1, now) {
            return;
        }
        let deadline = later(now, ttl);
        let token = LockToken::generate();
        state.insert(
            hashed,
            key.shared(),
            partition,
            *fingerprint,
            token,
            deadline,
        );
        state.complete(hashed, kept, deadline);
    }
}
