//! The records of one memory store and their indices, under its one lock: lookup, the
//! expiry orders (leases, TTLs) and last-use order, the byte counts, and eviction.

use std::{collections::HashMap, mem::size_of, sync::Arc};

use tokio::time::Instant;

use super::{
    builder::{Eviction, Limits},
    kept::Kept,
    leases::Leases,
    record_queue::{entry_bytes, RecordQueue},
    shards::{Hashed, Shards},
};
use crate::{
    store::{Fingerprint, LockToken, StoreError},
    telemetry::emit,
};

/// The bytes of the store's own structures per record, on top of the key and the
/// response: the record itself, its table slot (a table is between seven-sixteenths and
/// seven-eighths full as it grows by doubling: two-thirds on average), the key's `Arc`
/// header, and the two index entries: the record's places in `expiries` and `by_use`
/// (queues of chunks, full as they fill and at least half full of live entries as
/// records leave early: a half more on average; an in-flight record's entry in `leases`
/// is as large, in a queue that gives back room beyond four times its length).
/// `cargo bench --bench memory` prints this count beside the real heap.
pub(super) const PER_RECORD: usize = size_of::<(Arc<str>, Entry)>()
    + size_of::<super::shards::Slot<Entry>>() * 3 / 2
    + 2 * size_of::<usize>()
    + (entry_bytes::<(i64, u64)>() + entry_bytes::<u64>()) * 3 / 2;

pub(super) struct State {
    /// What instants are measured from: each record and index entry keeps an `i64` of
    /// nanoseconds since (or before), half an `Instant`.
    epoch: Instant,
    pub(super) records: Shards<Entry>,
    /// In-flight records by the end of their lease.
    leases: Leases,
    /// Completed records by the moment they die (TTL end).
    expiries: RecordQueue<(i64, u64)>,
    /// Completed records by last use, oldest first: kept only for least-recently-used
    /// eviction (`track_use`).
    by_use: RecordQueue<u64>,
    track_use: bool,
    /// Whether evictions are emitted as metrics (not for a replay cache's records, which
    /// a shared store still holds).
    emits: bool,
    /// What each non-empty scope's records hold.
    by_scope: HashMap<Box<str>, Held>,
    pub(super) bytes: usize,
    clock: u64,
    pub(super) stats: Counts,
}

/// The bytes and records one scope holds.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    bytes: usize,
    records: usize,
}

/// What the store did to stay within its bounds.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    pub(super) refused: u64,
    pub(super) evicted: u64,
    pub(super) expired: u64,
    pub(super) bodies_dropped: u64,
}

pub(super) struct Entry {
    pub(super) fingerprint: Fingerprint,
    pub(super) phase: Phase,
    /// When it dies, as a moment (nanoseconds since the store's epoch).
    deadline: i64,
    /// Unique per record; ties `leases` and `expiries` entries to it.
    id: u64,
    /// Last use, the key in `by_use` (completed records only).
    used: u64,
    /// The length of the scope partition at the front of the key (0: no scope).
    partition: usize,
}

impl Entry {
    /// The bytes this entry, under `key`, holds now (computed, not kept: a record is
    /// smaller without the field).
    pub(super) fn size_now(&self, key: &str) -> usize {
        match &self.phase {
            Phase::InFlight(_) => record_size(key, None),
            Phase::Completed(kept) => record_size(key, Some(kept)),
        }
    }
}

pub(super) enum Phase {
    InFlight(LockToken),
    /// The response, kept compact.
    Completed(Kept),
}

/// An eviction, as a metric when the store `emits` them.
fn emit_eviction(emits: bool, reason: &'static str) {
    if emits {
        emit::memory_eviction(reason);
    }
}

/// The bytes one record holds: the store's structures, the key, and the response.
pub(super) fn record_size(key: &str, response: Option<&Kept>) -> usize {
    PER_RECORD + key.len() + response.map_or(0, Kept::size)
}

impl State {
    /// An empty state; `track_use` keeps the last-use order that least-recently-used
    /// eviction needs, and `emits` emits its evictions as metrics.
    pub(super) fn new(track_use: bool, emits: bool) -> Self {
        Self {
            epoch: Instant::now(),
            records: Shards::default(),
            leases: Leases::default(),
            expiries: RecordQueue::default(),
            by_use: RecordQueue::default(),
            track_use,
            emits,
            by_scope: HashMap::new(),
            bytes: 0,
            clock: 0,
            stats: Counts::default(),
        }
    }

    /// `at` as nanoseconds since the epoch, negative before it (saturating).
    fn moment(&self, at: Instant) -> i64 {
        // Signed: an instant before the epoch (another clock, or one that stepped back)
        // stays before it, in order, rather than collapsing onto it.
        let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match at.checked_duration_since(self.epoch) {
            Some(after) => nanos(after),
            None => -nanos(self.epoch.duration_since(at)),
        }
    }

    pub(super) fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The live entry under `key`; an expired one is removed on the way.
    pub(super) fn live(&mut self, key: Hashed<'_>, now: Instant) -> Option<&mut Entry> {
        let expired = self.records.get(key)?.deadline <= self.moment(now);
        if expired {
            self.remove(key);
            self.stats.expired += 1;
            emit_eviction(self.emits, "expired");
            return None;
        }
        self.records.get_mut(key)
    }

    /// The live in-flight entry under `key` held with `token`.
    pub(super) fn owned(
        &mut self,
        key: Hashed<'_>,
        token: &LockToken,
        now: Instant,
    ) -> Result<&mut Entry, StoreError> {
        match self.live(key, now) {
            Some(entry) if matches!(&entry.phase, Phase::InFlight(t) if t == token) => Ok(entry),
            _ => Err(StoreError::fenced()),
        }
    }

    /// Marks a completed entry used now, for least-recently-used eviction.
    pub(super) fn touch(&mut self, key: Hashed<'_>) {
        if !self.track_use {
            return;
        }
        let used = self.tick();
        let entry = self.records.get_mut(key).expect("entry present");
        let last = std::mem::replace(&mut entry.used, used);
        let shared_key = self.by_use.take(last).expect("completed indexed");
        self.by_use.add(used, shared_key);
    }

    /// Adds an in-flight record.
    pub(super) fn insert(
        &mut self,
        hashed: Hashed<'_>,
        shared_key: Arc<str>,
        partition: usize,
        fingerprint: Fingerprint,
        token: LockToken,
        deadline: Instant,
    ) {
        let key = hashed.key;
        debug_assert_eq!(key, &*shared_key);
        let id = self.tick();
        let deadline = self.moment(deadline);
        let size = record_size(key, None);
        self.leases.add(deadline, id, Arc::clone(&shared_key));
        self.charge(key, partition, size as isize, 1);
        self.records.insert(
            hashed,
            shared_key,
            Entry {
                fingerprint,
                phase: Phase::InFlight(token),
                deadline,
                id,
                used: id,
                partition,
            },
        );
    }

    /// Turns the in-flight entry under `key` into a completed one holding `response`.
    pub(super) fn complete(&mut self, hashed: Hashed<'_>, response: Kept, deadline: Instant) {
        let key = hashed.key;
        let used = self.tick();
        let deadline = self.moment(deadline);
        let size = record_size(key, Some(&response));
        let entry = self.records.get_mut(hashed).expect("owned entry");
        let (old, partition) = (entry.size_now(key), entry.partition);
        let shared_key = self
            .leases
            .take(entry.deadline, entry.id)
            .expect("in flight, leased");
        entry.phase = Phase::Completed(response);
        entry.used = used;
        entry.deadline = deadline;
        if self.track_use {
            self.by_use.add(used, Arc::clone(&shared_key));
        }
        self.expiries.add((deadline, entry.id), shared_key);
        self.charge(key, partition, size as isize - old as isize, 0);
    }

    pub(super) fn remove(&mut self, hashed: Hashed<'_>) -> Option<Entry> {
        let key = hashed.key;
        let entry = self.records.remove(hashed)?;
        match &entry.phase {
            Phase::InFlight(_) => {
                self.leases.take(entry.deadline, entry.id);
            }
            Phase::Completed(_) => {
                self.expiries.take((entry.deadline, entry.id));
            }
        }
        // An in-flight entry's `used` is its own id, a tick no completion took: removing
        // it from the last-use order is a no-op.
        if self.track_use {
            self.by_use.take(entry.used);
        }
        self.charge(key, entry.partition, -(entry.size_now(key) as isize), -1);
        Some(entry)
    }

    /// Moves the lease of the in-flight entry under `key` to end at `deadline`.
    pub(super) fn renew(&mut self, key: Hashed<'_>, deadline: Instant) {
        let deadline = self.moment(deadline);
        let entry = self.records.get_mut(key).expect("entry present");
        debug_assert!(matches!(entry.phase, Phase::InFlight(_)));
        let shared_key = self
            .leases
            .take(entry.deadline, entry.id)
            .expect("in flight, leased");
        entry.deadline = deadline;
        self.leases.add(deadline, entry.id, shared_key);
    }

    /// Adds `delta` bytes and `records` records to the store's count and to the scope's.
    fn charge(&mut self, key: &str, partition: usize, delta: isize, records: isize) {
        self.bytes = self.bytes.checked_add_signed(delta).expect("byte count");
        if partition == 0 {
            return;
        }
        let scope = &key[..partition];
        let held = self.by_scope.entry(scope.into()).or_default();
        held.bytes = held
            .bytes
            .checked_add_signed(delta)
            .expect("scope byte count");
        held.records = held
            .records
            .checked_add_signed(records)
            .expect("scope record count");
        if held.records == 0 {
            self.by_scope.remove(scope);
        }
    }

    fn scope_held(&self, key: &str, partition: usize) -> Held {
        if partition == 0 {
            return Held::default();
        }
        self.by_scope
            .get(&key[..partition])
            .copied()
            .unwrap_or_default()
    }

    /// Makes room for `extra` more bytes and `extra_entries` more records, in the store
    /// and in the scope of `key`: expired records go first, then (only when the policy
    /// allows) least recently used completed ones. Never an in-flight claim. Returns
    /// whether it fits.
    pub(super) fn make_room(
        &mut self,
        limits: &Limits,
        key: &str,
        partition: usize,
        extra: usize,
        extra_entries: usize,
        now: Instant,
    ) -> bool {
        loop {
            let store_full = self.bytes + extra > limits.max_bytes
                || self.records.len() + extra_entries > limits.max_entries;
            let scope = self.scope_held(key, partition);
            let scope_full = partition > 0
                && (scope.bytes + extra > limits.max_scope_bytes
                    || scope.records + extra_entries > limits.max_scope_entries);
            if !store_full && !scope_full {
                return true;
            }
            let now_moment = self.moment(now);
            // The first to die of the in-flight records and of the completed ones.
            let first = match (self.leases.first(), self.expiries.first()) {
                (Some(leased), Some(((completed, _), key))) if completed < leased.0 => {
                    Some((completed, key))
                }
                (Some(leased), _) => Some(leased),
                (None, completed) => completed.map(|((deadline, _), key)| (deadline, key)),
            };
            let victim = match first {
                Some((deadline, victim)) if deadline <= now_moment => {
                    self.stats.expired += 1;
                    emit_eviction(self.emits, "expired");
                    Arc::clone(victim)
                }
                // A full scope is its own caller's problem: it never evicts others.
                _ if scope_full || limits.eviction == Eviction::ExpiredOnly => return false,
                _ => match self.by_use.first() {
                    Some((_, victim)) => {
                        self.stats.evicted += 1;
                        emit_eviction(self.emits, "lru");
                        Arc::clone(victim)
                    }
                    None => return false,
                },
            };
            self.remove(self.records.hashed(&victim));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn instants_before_the_epoch_keep_their_order() {
        let state = State::new(false, true);
        let epoch = state.epoch;
        let earlier = epoch.checked_sub(Duration::from_secs(2)).unwrap();
        let early = epoch.checked_sub(Duration::from_secs(1)).unwrap();
        assert!(state.moment(earlier) < state.moment(early));
        assert!(state.moment(early) < state.moment(epoch));
        assert_eq!(state.moment(epoch), 0);
        assert!(state.moment(epoch + Duration::from_secs(1)) > 0);
    }
}
