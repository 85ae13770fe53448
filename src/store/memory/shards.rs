//! The memory store's records by key, split over many small tables. A hash table grows by
//! doubling, moving every entry while the store's lock is held: one table of a million
//! records stalls a claim for as long as that takes. Each shard grows alone, at a
//! [`SHARDS`]th of the cost, and moves only 16-byte slots (the key's hash and a pointer
//! to the record), never rehashing a key. The key is hashed once per call, for the shard
//! and its table; a record takes exactly its own size, not a table slot's share of the
//! free room a doubling leaves.

use std::{
    hash::{BuildHasher, RandomState},
    sync::Arc,
};

use hashbrown::HashTable;

/// How many tables the records are split over.
pub(super) const SHARDS: usize = 16;

/// A table slot: the key's hash, so growing never rehashes, and the record.
pub(super) struct Slot<V> {
    hash: u64,
    record: Box<(Arc<str>, V)>,
}

/// A key and its hash: a store call hashes its key once, for every lookup it makes.
#[derive(Clone, Copy)]
pub(super) struct Hashed<'k> {
    pub(super) key: &'k str,
    hash: u64,
}

/// Records by key, in [`SHARDS`] tables.
pub(super) struct Shards<V> {
    hasher: RandomState,
    tables: Box<[HashTable<Slot<V>>]>,
    len: usize,
}

impl<V> Default for Shards<V> {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            tables: (0..SHARDS).map(|_| HashTable::new()).collect(),
            len: 0,
        }
    }
}

impl<V> Shards<V> {
    /// `key` with its hash, for the calls below.
    pub(super) fn hashed<'k>(&self, key: &'k str) -> Hashed<'k> {
        Hashed {
            key,
            hash: self.hasher.hash_one(key),
        }
    }

    /// The shard of `hash`: bits the table itself does not use for its slots (the low
    /// bits) nor for its tags (the top seven).
    fn shard(hash: u64) -> usize {
        (hash >> 32) as usize % SHARDS
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, key: Hashed<'_>) -> Option<&V> {
        let Hashed { key, hash } = key;
        self.tables[Self::shard(hash)]
            .find(hash, |slot| slot.hash == hash && &*slot.record.0 == key)
            .map(|slot| &slot.record.1)
    }

    pub(super) fn get_mut(&mut self, key: Hashed<'_>) -> Option<&mut V> {
        let Hashed { key, hash } = key;
        self.tables[Self::shard(hash)]
            .find_mut(hash, |slot| slot.hash == hash && &*slot.record.0 == key)
            .map(|slot| &mut slot.record.1)
    }

    /// Inserts `value` under `key` (the same key as `hashed`), which must not be present.
    pub(super) fn insert(&mut self, hashed: Hashed<'_>, key: Arc<str>, value: V) {
        debug_assert_eq!(hashed.key, &*key);
        let hash = hashed.hash;
        let slot = Slot {
            hash,
            record: Box::new((key, value)),
        };
        self.tables[Self::shard(hash)].insert_unique(hash, slot, |slot| slot.hash);
        self.len += 1;
    }

    pub(super) fn remove(&mut self, key: Hashed<'_>) -> Option<V> {
        let Hashed { key, hash } = key;
        let found = self.tables[Self::shard(hash)]
            .find_entry(hash, |slot| slot.hash == hash && &*slot.record.0 == key)
            .ok()?;
        let (slot, _) = found.remove();
        self.len -= 1;
        Some(slot.record.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_removed_and_counted_across_shards() {
        let mut shards = Shards::default();
        for i in 0..1000 {
            let key: Arc<str> = Arc::from(format!("k{i}"));
            let hashed = shards.hashed(&key);
            shards.insert(hashed, Arc::clone(&key), i);
        }
        let k7 = shards.hashed("k7");
        assert_eq!(shards.len(), 1000);
        assert_eq!(shards.get(k7), Some(&7));
        *shards.get_mut(k7).unwrap() = 70;
        assert_eq!(shards.get(k7), Some(&70));
        assert_eq!(shards.remove(k7), Some(70));
        assert_eq!(shards.remove(k7), None);
        assert_eq!(shards.get(k7), None);
        assert_eq!(shards.len(), 999);
        assert_eq!(shards.get(shards.hashed("k999")), Some(&999));
        let used = shards.tables.iter().filter(|t| !t.is_empty()).count();
        assert!(used > SHARDS / 2, "keys spread over the shards: {used}");
    }
}
