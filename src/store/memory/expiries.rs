//! Completed records by the moment they die (the end of their TTL). Records kept for
//! one TTL die in the order they completed, so each is added at the back of a lane: a
//! push, where a B-tree searched its height and split its nodes (this runs once per
//! fresh request). Layers with other TTLs on the same store add lanes, each in order (an
//! entry goes to the first lane whose last entry dies no later); past [`MAX_LANES`] an
//! entry is inserted in place.
//!
//! A lane is a queue of chunks of [`CHUNK`] entries, so it never moves its whole length
//! to grow while the store's lock is held. A record removed before it dies (evicted, or
//! found expired) is looked up by bisection and leaves a tombstone: its key dropped, its
//! place kept, so the order holds. A chunk more than half tombstones is compacted, and an
//! empty one dropped: tombstones never outnumber the live entries by more than a chunk.

use std::{collections::VecDeque, mem::size_of, sync::Arc};

/// Entries per chunk.
const CHUNK: usize = 512;

/// Lanes kept in order before an entry is inserted in place instead.
const MAX_LANES: usize = 8;

/// When an entry dies, as a moment of the store's clock, and its record's id (ties).
pub(super) type Due = (i64, u64);

/// The bytes one live entry takes.
pub(super) const ENTRY_BYTES: usize = size_of::<Entry>();

struct Entry {
    due: Due,
    /// `None`: a tombstone.
    key: Option<Arc<str>>,
}

#[derive(Default)]
struct Chunk {
    entries: Vec<Entry>,
    /// Every entry before this one is a tombstone.
    start: usize,
    /// Tombstones among `entries`.
    dead: usize,
}

impl Chunk {
    fn last(&self) -> Option<Due> {
        self.entries.last().map(|entry| entry.due)
    }

    /// The first live entry, past the tombstones at the front.
    fn first(&mut self) -> Option<(i64, &Arc<str>)> {
        while self.entries.get(self.start)?.key.is_none() {
            self.start += 1;
        }
        let entry = &self.entries[self.start];
        entry.key.as_ref().map(|key| (entry.due.0, key))
    }

    /// Drops the tombstones; `fit`: gives back the room they took too.
    fn compact(&mut self, fit: bool) {
        self.entries.retain(|entry| entry.key.is_some());
        (self.start, self.dead) = (0, 0);
        if fit {
            self.entries.shrink_to_fit();
        }
    }
}

/// Entries in order of `due`.
#[derive(Default)]
struct Lane {
    chunks: VecDeque<Chunk>,
}

impl Lane {
    fn last(&self) -> Option<Due> {
        self.chunks.back().and_then(Chunk::last)
    }

    fn push(&mut self, entry: Entry) {
        match self.chunks.back_mut() {
            Some(chunk) if chunk.entries.len() < CHUNK => chunk.entries.push(entry),
            _ => {
                let mut entries = Vec::with_capacity(CHUNK);
                entries.push(entry);
                self.chunks.push_back(Chunk {
                    entries,
                    ..Chunk::default()
                });
            }
        }
    }

    /// The chunk where `due` is or would go: the first whose last entry is not before it.
    fn chunk_of(&self, due: Due) -> usize {
        self.chunks
            .partition_point(|chunk| chunk.last().is_some_and(|last| last < due))
    }

    /// Inserts `entry` in its place (out of the order entries are added in).
    fn insert(&mut self, entry: Entry) {
        let at = self.chunk_of(entry.due);
        let Some(chunk) = self.chunks.get_mut(at) else {
            return self.push(entry);
        };
        let pos = chunk.entries.partition_point(|e| e.due < entry.due);
        chunk.entries.insert(pos, entry);
        chunk.start = chunk.start.min(pos);
        if chunk.entries.len() >= 2 * CHUNK {
            // Split in two, without tombstones: neither half may be all tombstones.
            chunk.compact(false);
            if chunk.entries.len() >= 2 * CHUNK {
                let entries = chunk.entries.split_off(CHUNK);
                self.chunks.insert(
                    at + 1,
                    Chunk {
                        entries,
                        ..Chunk::default()
                    },
                );
            }
        }
    }

    /// Takes out the entry `due`, leaving a tombstone; gives back its key.
    fn take(&mut self, due: Due) -> Option<Arc<str>> {
        let at = self.chunk_of(due);
        let chunk = self.chunks.get_mut(at)?;
        let pos = chunk.entries.binary_search_by(|e| e.due.cmp(&due)).ok()?;
        let key = chunk.entries[pos].key.take()?;
        chunk.dead += 1;
        let (dead, len) = (chunk.dead, chunk.entries.len());
        if dead == len {
            self.chunks.remove(at);
        } else if dead * 2 > len {
            // The chunk entries are added to keeps its room.
            let fit = at + 1 < self.chunks.len();
            self.chunks[at].compact(fit);
        }
        Some(key)
    }

    fn first(&mut self) -> Option<(i64, &Arc<str>)> {
        // Only the front chunk can be all tombstones before its first live entry is
        // searched for: an emptied chunk is dropped when its last entry is taken.
        self.chunks.front_mut()?.first()
    }
}

/// Completed records by the moment they die.
#[derive(Default)]
pub(super) struct Expiries {
    lanes: Vec<Lane>,
}

impl Expiries {
    /// Adds the record under `key` that dies at `due`.
    pub(super) fn add(&mut self, due: Due, key: Arc<str>) {
        let entry = Entry {
            due,
            key: Some(key),
        };
        if let Some(lane) = self
            .lanes
            .iter_mut()
            .find(|lane| lane.last().is_none_or(|last| last <= due))
        {
            return lane.push(entry);
        }
        if self.lanes.len() < MAX_LANES {
            let mut lane = Lane::default();
            lane.push(entry);
            return self.lanes.push(lane);
        }
        self.lanes[0].insert(entry);
    }

    /// Takes out the record that dies at `due`, giving back its key.
    pub(super) fn take(&mut self, due: Due) -> Option<Arc<str>> {
        self.lanes.iter_mut().find_map(|lane| lane.take(due))
    }

    /// The record that dies first: when, and its key.
    pub(super) fn first(&mut self) -> Option<(i64, &Arc<str>)> {
        self.lanes
            .iter_mut()
            .filter_map(Lane::first)
            .min_by_key(|&(deadline, _)| deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> Arc<str> {
        Arc::from(format!("k{i}"))
    }

    /// Takes every record out, first to die first.
    fn drain(expiries: &mut Expiries, ids: impl Fn(&str) -> Due) -> Vec<Due> {
        let mut order = Vec::new();
        while let Some((_, key)) = expiries.first() {
            let due = ids(key);
            order.push(due);
            assert_eq!(expiries.take(due).as_deref(), Some(&*format!("k{}", due.1)));
        }
        order
    }

    fn due_of(dues: &[Due]) -> impl Fn(&str) -> Due + '_ {
        |key| {
            let id: u64 = key[1..].parse().unwrap();
            *dues.iter().find(|due| due.1 == id).unwrap()
        }
    }

    #[test]
    fn records_of_several_ttls_die_in_order_of_their_deadlines() {
        // Three TTLs interleaved, as three layers on one store would add them.
        let dues: Vec<Due> = (0..6_000u64)
            .map(|i| ((i as i64) + [0, 5_000, 700][(i % 3) as usize], i))
            .collect();
        let mut expiries = Expiries::default();
        for &due in &dues {
            expiries.add(due, key(due.1));
        }
        assert!(expiries.lanes.len() <= 3, "one lane per TTL");
        let mut sorted = dues.clone();
        sorted.sort();
        assert_eq!(drain(&mut expiries, due_of(&dues)), sorted);
    }

    #[test]
    fn past_the_lanes_entries_are_inserted_in_place() {
        // Deadlines falling each time: every add would need a lane of its own.
        let dues: Vec<Due> = (0..3 * CHUNK as u64)
            .map(|i| (10_000 - i as i64 * 3, i))
            .collect();
        let mut expiries = Expiries::default();
        for &due in &dues {
            expiries.add(due, key(due.1));
        }
        assert_eq!(expiries.lanes.len(), MAX_LANES);
        assert!(expiries.lanes[0]
            .chunks
            .iter()
            .all(|c| c.entries.len() < 2 * CHUNK));
        let mut sorted = dues.clone();
        sorted.sort();
        assert_eq!(drain(&mut expiries, due_of(&dues)), sorted);
    }

    #[test]
    fn records_taken_early_leave_no_more_tombstones_than_a_chunk_holds() {
        let mut expiries = Expiries::default();
        let n = 20 * CHUNK as u64;
        for i in 0..n {
            expiries.add((i as i64, i), key(i));
        }
        // Evict all but every tenth, out of order (as least recently used would).
        for i in (0..n).rev().filter(|i| i % 10 != 0) {
            assert!(expiries.take((i as i64, i)).is_some(), "{i}");
        }
        assert_eq!(expiries.take((5, 5)), None, "taken already");
        assert_eq!(expiries.take((5, 6)), None, "no such entry");
        let lane = &expiries.lanes[0];
        let (len, dead): (usize, usize) = lane
            .chunks
            .iter()
            .fold((0, 0), |(l, d), c| (l + c.entries.len(), d + c.dead));
        assert_eq!(len - dead, (n / 10) as usize);
        assert!(dead <= len / 2 + CHUNK, "{dead} tombstones of {len}");
        let room: usize = lane.chunks.iter().map(|c| c.entries.capacity()).sum();
        assert!(room <= 2 * len + CHUNK, "room given back: {room} for {len}");
        let rest: Vec<Due> = (0..n)
            .filter(|i| i % 10 == 0)
            .map(|i| (i as i64, i))
            .collect();
        assert_eq!(drain(&mut expiries, due_of(&rest)), rest);
        assert!(
            expiries.lanes[0].chunks.is_empty(),
            "emptied chunks dropped"
        );
    }

    #[test]
    fn the_first_to_die_skips_the_tombstones_before_it() {
        let mut expiries = Expiries::default();
        for i in 0..10 {
            expiries.add((i, i as u64), key(i as u64));
        }
        for i in 0..4 {
            expiries.take((i, i as u64));
        }
        assert_eq!(
            expiries.first().map(|(at, key)| (at, key.to_string())),
            Some((4, "k4".to_owned()))
        );
    }
}
