//! [`RecordQueue`]: records in the order of a moment of theirs: when they die (the end
//! of their TTL), or when they were last used. Records kept for one TTL die in the order
//! they completed, and uses come in the order of the store's clock, so each entry is
//! added at the back of a lane: a push, where a B-tree searched its height and split its
//! nodes (this runs once per fresh request, and once per replay with least-recently-used
//! eviction). Layers with other TTLs on the same store add lanes, each in order (an entry
//! goes to the first lane whose last entry is not later); past [`MAX_LANES`] an entry is
//! inserted in place.
//!
//! A lane is a queue of chunks of [`CHUNK`] entries, so it never moves its whole length
//! to grow while the store's lock is held. A record taken out before its turn (evicted,
//! found expired, or used again) is found by bisection and leaves a tombstone: its key
//! dropped, its place kept, so the order holds. A chunk more than half tombstones is
//! compacted (and merged with a neighbour it fits in one chunk with), and an empty one
//! dropped, but for the back one, which is kept for the entries to come: tombstones
//! never outnumber the live entries by more than a chunk.

use std::{collections::VecDeque, mem::size_of, sync::Arc};

/// Entries per chunk. (Eight in tests, so that a few thousand records cross many chunk
/// boundaries.)
#[cfg(not(test))]
const CHUNK: usize = 512;
#[cfg(test)]
const CHUNK: usize = 8;

/// Lanes kept in order before an entry is inserted in place instead.
const MAX_LANES: usize = 8;

/// The bytes one live entry ordered by `K` takes.
pub(super) const fn entry_bytes<K>() -> usize {
    size_of::<Entry<K>>()
}

struct Entry<K> {
    /// The moment (with the record's id for ties, where moments can be equal).
    due: K,
    /// `None`: a tombstone.
    key: Option<Arc<str>>,
}

struct Chunk<K> {
    entries: Vec<Entry<K>>,
    /// Every entry before this one is a tombstone.
    start: usize,
    /// Tombstones among `entries`.
    dead: usize,
}

impl<K> Default for Chunk<K> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            start: 0,
            dead: 0,
        }
    }
}

impl<K: Ord + Copy> Chunk<K> {
    fn last(&self) -> Option<K> {
        self.entries.last().map(|entry| entry.due)
    }

    /// The first live entry, past the tombstones at the front.
    fn first(&mut self) -> Option<(K, &Arc<str>)> {
        while self.entries.get(self.start)?.key.is_none() {
            self.start += 1;
        }
        let entry = &self.entries[self.start];
        entry.key.as_ref().map(|key| (entry.due, key))
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
struct Lane<K> {
    chunks: VecDeque<Chunk<K>>,
}

impl<K> Default for Lane<K> {
    fn default() -> Self {
        Self {
            chunks: VecDeque::new(),
        }
    }
}

impl<K: Ord + Copy> Lane<K> {
    fn last(&self) -> Option<K> {
        // Only the back chunk may be empty: the one before it then holds the last.
        self.chunks.iter().rev().find_map(Chunk::last)
    }

    fn push(&mut self, entry: Entry<K>) {
        match self.chunks.back_mut() {
            Some(chunk) if chunk.entries.len() < CHUNK => chunk.entries.push(entry),
            full => {
                // A lane's first chunk grows by doubling (a store of a few records keeps
                // room for a few); after a full one, a chunk is made whole, not copied as
                // it grows under the lock.
                let mut entries = Vec::with_capacity(if full.is_some() { CHUNK } else { 1 });
                entries.push(entry);
                self.chunks.push_back(Chunk {
                    entries,
                    ..Chunk::default()
                });
            }
        }
    }

    /// The chunk where `due` is or would go: the first whose last entry is not before it.
    fn chunk_of(&self, due: K) -> usize {
        self.chunks
            .partition_point(|chunk| chunk.last().is_some_and(|last| last < due))
    }

    /// Inserts `entry` in its place (out of the order entries are added in).
    fn insert(&mut self, entry: Entry<K>) {
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
                chunk.entries.shrink_to(CHUNK);
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
    fn take(&mut self, due: K) -> Option<Arc<str>> {
        let at = self.chunk_of(due);
        let back = at + 1 == self.chunks.len();
        let chunk = self.chunks.get_mut(at)?;
        let pos = chunk.entries.binary_search_by(|e| e.due.cmp(&due)).ok()?;
        let key = chunk.entries[pos].key.take()?;
        chunk.dead += 1;
        let (dead, len) = (chunk.dead, chunk.entries.len());
        if dead == len && back {
            // The back chunk is emptied, not dropped: entries are added to it.
            chunk.compact(false);
        } else if dead == len {
            self.chunks.remove(at);
        } else if dead * 2 > len {
            // The chunk entries are added to keeps its room.
            self.chunks[at].compact(!back);
            self.merge_around(at);
        }
        Some(key)
    }

    /// Merges the chunk `at` with a neighbour that it fits in one chunk with, so that
    /// records taken out here and there do not leave many sparse chunks.
    fn merge_around(&mut self, at: usize) {
        let len = |chunks: &VecDeque<Chunk<K>>, at: usize| chunks[at].entries.len();
        if at + 1 < self.chunks.len() && len(&self.chunks, at) + len(&self.chunks, at + 1) <= CHUNK
        {
            self.merge_into_previous(at + 1);
        }
        if at > 0 && len(&self.chunks, at - 1) + len(&self.chunks, at) <= CHUNK {
            self.merge_into_previous(at);
        }
    }

    /// Appends the chunk `at` to the one before it (whose entries all come first).
    fn merge_into_previous(&mut self, at: usize) {
        let Some(next) = self.chunks.remove(at) else {
            return;
        };
        let back = at == self.chunks.len();
        let previous = &mut self.chunks[at - 1];
        previous.dead += next.dead;
        if back {
            // Now the back chunk, filled to a whole chunk by pushes: room for that, not
            // for what doubling its length as it grew would leave.
            previous
                .entries
                .reserve_exact(CHUNK.saturating_sub(previous.entries.len()));
        }
        previous.entries.extend(next.entries);
        if !back {
            previous.entries.shrink_to_fit();
        }
    }

    fn first(&mut self) -> Option<(K, &Arc<str>)> {
        // A chunk emptied of live entries is dropped when its last one is taken, except
        // the back one, which is emptied: the front one holds the first live entry, or
        // is that empty back chunk.
        self.chunks.front_mut()?.first()
    }
}

/// Records by a moment of theirs, `K` (unique per record), earliest first.
pub(super) struct RecordQueue<K> {
    lanes: Vec<Lane<K>>,
}

impl<K> Default for RecordQueue<K> {
    fn default() -> Self {
        Self { lanes: Vec::new() }
    }
}

impl<K: Ord + Copy> RecordQueue<K> {
    /// Adds the record under `key` whose moment is `due`.
    pub(super) fn add(&mut self, due: K, key: Arc<str>) {
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

    /// Takes out the record whose moment is `due`, giving back its key.
    pub(super) fn take(&mut self, due: K) -> Option<Arc<str>> {
        self.lanes.iter_mut().find_map(|lane| lane.take(due))
    }

    /// The record whose moment comes first: the moment, and its key.
    pub(super) fn first(&mut self) -> Option<(K, &Arc<str>)> {
        self.lanes
            .iter_mut()
            .filter_map(Lane::first)
            .min_by_key(|&(due, _)| due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Due = (i64, u64);
    type Expiries = RecordQueue<Due>;

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
        let chunks = &expiries.lanes[0].chunks;
        assert!(
            chunks.len() == 1 && chunks[0].entries.is_empty(),
            "emptied chunks dropped, but the back one kept for what comes next"
        );
    }

    #[test]
    fn records_taken_out_here_and_there_leave_no_sparse_chunks() {
        // Least-recently-used eviction of all but a few records used again: the live
        // entries end up one in a chunk's length apart.
        let mut queue = Expiries::default();
        let n = 64 * CHUNK as u64;
        for i in 0..n {
            queue.add((i as i64, i), key(i));
        }
        let kept = |i: u64| i % CHUNK as u64 == 7;
        for i in (0..n).filter(|&i| !kept(i)) {
            assert!(queue.take((i as i64, i)).is_some(), "{i}");
        }
        let live = (0..n).filter(|&i| kept(i)).count();
        let lane = &queue.lanes[0];
        let room: usize = lane.chunks.iter().map(|c| c.entries.capacity()).sum();
        // Each chunk costs its own allocation and its slot in the lane, however few it
        // holds: the few live entries end up in a few chunks, not one chunk each.
        assert!(
            lane.chunks.len() <= 2 * live.div_ceil(CHUNK) + 1 && room <= 2 * live + CHUNK,
            "{room} entries of room in {} chunks for {live} live",
            lane.chunks.len()
        );
        let rest: Vec<Due> = (0..n).filter(|&i| kept(i)).map(|i| (i as i64, i)).collect();
        assert_eq!(drain(&mut queue, due_of(&rest)), rest);
    }

    #[test]
    fn a_record_used_again_and_again_keeps_one_chunk() {
        let mut queue = RecordQueue::<u64>::default();
        queue.add(0, key(0));
        queue.add(1, key(1));
        // Records used in turn, as replays under least-recently-used eviction move them.
        for used in 2..3 * CHUNK as u64 {
            let last = used - 2;
            let key = queue.take(last).expect("present");
            queue.add(used, key);
            assert_eq!(queue.first().map(|(at, _)| at), Some(last + 1));
        }
        let chunks = &queue.lanes[0].chunks;
        assert!(chunks.len() <= 2, "{} chunks", chunks.len());
    }

    #[test]
    fn behind_an_emptied_back_chunk_the_order_holds() {
        let mut expiries = Expiries::default();
        let n = CHUNK as u64 + 1;
        for i in 0..n {
            expiries.add((i as i64 * 10, i), key(i));
        }
        // The back chunk held one entry: emptied, it is kept, and the last entry of the
        // lane is now the full chunk's.
        expiries.take(((n - 1) as i64 * 10, n - 1));
        let early = (15, n);
        expiries.add(early, key(n));
        let mut dues: Vec<Due> = (0..n - 1).map(|i| (i as i64 * 10, i)).collect();
        dues.push(early);
        let drained = drain(&mut expiries, due_of(&dues));
        dues.sort();
        assert_eq!(drained, dues);
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
            Some(((4, 4), "k4".to_owned()))
        );
    }

    /// One step of a random run: a record added with one of a dozen TTLs (more than the
    /// lanes), a record taken out (`pick` among those present, or one that is not), or
    /// a look at the first.
    #[derive(Debug, Clone)]
    enum Op {
        Add(u8),
        Take(usize, bool),
        First,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            5 => (0u8..12).prop_map(Op::Add),
            4 => (any::<usize>(), proptest::bool::weighted(0.95)).prop_map(|(pick, present)| Op::Take(pick, present)),
            1 => Just(Op::First),
        ]
    }

    /// The structure's own promises: each lane in order across its chunks, every chunk
    /// but the back one holding a live entry, `dead` and `start` true, no chunk more
    /// than half tombstones, and none past twice a chunk's length.
    fn check_invariants(queue: &RecordQueue<Due>) {
        for lane in &queue.lanes {
            let dues: Vec<Due> = lane
                .chunks
                .iter()
                .flat_map(|chunk| chunk.entries.iter().map(|e| e.due))
                .collect();
            assert!(dues.windows(2).all(|w| w[0] < w[1]), "a lane in order");
            for (at, chunk) in lane.chunks.iter().enumerate() {
                let dead = chunk.entries.iter().filter(|e| e.key.is_none()).count();
                assert_eq!(chunk.dead, dead, "dead counted");
                assert!(chunk.entries[..chunk.start].iter().all(|e| e.key.is_none()));
                assert!(2 * dead <= chunk.entries.len(), "at most half tombstones");
                assert!(chunk.entries.len() < 2 * CHUNK, "a chunk's length bounded");
                let back = at + 1 == lane.chunks.len();
                assert!(back || dead < chunk.entries.len(), "a live entry");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_config(64))]

        #[test]
        fn agrees_with_an_ordered_map(ops in proptest::collection::vec(op(), 1..4_000)) {
            const TTLS: [i64; 12] = [0, 3, 7, 50, 51, 400, 900, 901, 2_000, 5, 70, 6_000];
            let mut queue = RecordQueue::<Due>::default();
            let mut model = std::collections::BTreeMap::<Due, Arc<str>>::new();
            for (step, op) in ops.into_iter().enumerate() {
                let now = step as i64;
                match op {
                    Op::Add(ttl) => {
                        let due = (now + TTLS[usize::from(ttl)], step as u64);
                        queue.add(due, key(due.1));
                        model.insert(due, key(due.1));
                    }
                    Op::Take(pick, present) => {
                        let due = match model.keys().nth(pick % model.len().max(1)) {
                            Some(&due) if present => due,
                            _ => (pick as i64 % 10_000, u64::MAX - pick as u64 % 7),
                        };
                        proptest::prop_assert_eq!(queue.take(due), model.remove(&due));
                    }
                    Op::First => {}
                }
                let first = queue.first().map(|(due, key)| (due, key.clone()));
                let expected = model.first_key_value().map(|(&due, key)| (due, key.clone()));
                proptest::prop_assert_eq!(first, expected);
                if step % 97 == 0 {
                    check_invariants(&queue);
                }
            }
            check_invariants(&queue);
            // Drained, it gives the records back in the order of the map.
            while let Some((due, _)) = queue.first() {
                let expected = model.pop_first().map(|(due, _)| due);
                proptest::prop_assert_eq!(Some(due), expected);
                queue.take(due);
            }
            proptest::prop_assert!(model.is_empty());
        }
    }
}
