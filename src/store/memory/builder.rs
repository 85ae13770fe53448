//! [`MemoryStoreBuilder`]: the memory store's bounds and eviction policy, fixed when it is
//! built.

use std::sync::Arc;

use super::{MemoryStore, Shared};

/// What the memory store may do when a new claim needs room it does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Eviction {
    /// Evict only expired records; when they do not make room, refuse the new claim (the
    /// layer answers `503` with `Retry-After`; nothing runs). No caller can make another
    /// caller's retry run twice. The default.
    #[default]
    ExpiredOnly,
    /// ⚠️ When expired records do not make room, also evict unexpired completed records,
    /// least recently used first. The store stays available under a flood, but a retry
    /// whose record was evicted runs its write again.
    LeastRecentlyUsed,
}

/// The bounds one store keeps to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_bytes: usize,
    pub(super) max_entries: usize,
    /// The most bytes and records one non-empty scope may hold.
    pub(super) max_scope_bytes: usize,
    pub(super) max_scope_entries: usize,
    pub(super) eviction: Eviction,
    /// Whether refusals and evictions are emitted as metrics (not for a replay cache).
    pub(super) emits: bool,
}

/// Builds a [`MemoryStore`] with bounds of its own; from [`MemoryStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    pub(super) max_bytes: usize,
    pub(super) max_entries: usize,
    pub(super) max_scope_bytes: Option<usize>,
    pub(super) max_scope_entries: Option<usize>,
    pub(super) eviction: Eviction,
}

impl MemoryStoreBuilder {
    /// The byte bound: the records' own bytes (response body and headers, key, and the store's
    /// per-record structures) (default [`MemoryStore::DEFAULT_MAX_BYTES`]).
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The bound on the number of records (default [`MemoryStore::DEFAULT_MAX_ENTRIES`]).
    pub fn max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// The most bytes the records of one scope may hold (records with an empty scope are
    /// bound only by the whole store), so that one caller cannot fill the store and
    /// starve the others: its own new claims are refused first (default: a quarter of
    /// [`max_bytes`](Self::max_bytes)). Scopes come from the layer's
    /// [`scope`](crate::IdempotencyLayer::scope).
    pub fn max_scope_bytes(mut self, max_scope_bytes: usize) -> Self {
        self.max_scope_bytes = Some(max_scope_bytes);
        self
    }

    /// The most records one scope may hold, for the same reason (default: a quarter of
    /// [`max_entries`](Self::max_entries)).
    pub fn max_scope_entries(mut self, max_scope_entries: usize) -> Self {
        self.max_scope_entries = Some(max_scope_entries);
        self
    }

    /// What the store may evict when full (default [`Eviction::ExpiredOnly`]). See
    /// [`Eviction`] for the trade-off between availability and a second run.
    pub fn eviction(mut self, eviction: Eviction) -> Self {
        self.eviction = eviction;
        self
    }

    /// The store, empty.
    pub fn build(self) -> MemoryStore {
        MemoryStore {
            shared: Arc::new(Shared::new(Limits {
                max_bytes: self.max_bytes,
                max_entries: self.max_entries,
                max_scope_bytes: self.max_scope_bytes.unwrap_or(self.max_bytes / 4),
                max_scope_entries: self.max_scope_entries.unwrap_or(self.max_entries / 4),
                eviction: self.eviction,
                emits: true,
            })),
        }
    }
}
