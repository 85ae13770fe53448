//! In-flight records by the end of their lease: a queue kept in order, searched by
//! bisection. Leases of one length end in the order they were taken, so an entry is
//! added at the back and, with few claims in flight, taken near it: fewer steps than a
//! B-tree's insert and remove (this runs twice per fresh request). The queue holds only
//! what is in flight, not the completed records, and gives back its room after a burst.

use std::{collections::VecDeque, sync::Arc};

/// Below this many entries of room, the queue keeps what it has.
const MIN_ROOM: usize = 64;

/// In-flight records, earliest lease end first (ties by record id).
#[derive(Default)]
pub(super) struct Leases {
    due: VecDeque<Lease>,
}

struct Lease {
    /// The lease's end, as a moment of the store's clock.
    deadline: i64,
    /// The record's id.
    id: u64,
    key: Arc<str>,
}

impl Leases {
    /// Adds the record `id` under `key`, whose lease ends at `deadline`.
    pub(super) fn add(&mut self, deadline: i64, id: u64, key: Arc<str>) {
        // Usually at the back: leases of one length end in the order they were taken.
        let at = self
            .due
            .partition_point(|lease| (lease.deadline, lease.id) <= (deadline, id));
        self.due.insert(at, Lease { deadline, id, key });
    }

    /// Takes out the record `id` whose lease ends at `deadline`, giving back its key.
    pub(super) fn take(&mut self, deadline: i64, id: u64) -> Option<Arc<str>> {
        let at = self
            .due
            .binary_search_by(|lease| (lease.deadline, lease.id).cmp(&(deadline, id)))
            .ok()?;
        let key = self.due.remove(at).map(|lease| lease.key);
        // After a burst of claims, the room is given back (a copy of what is left, a
        // quarter of the room at most: paid for by the takes that emptied it).
        if self.due.capacity() > MIN_ROOM && self.due.len() < self.due.capacity() / 4 {
            self.due.shrink_to(self.due.capacity() / 2);
        }
        key
    }

    /// The lease that ends first, and its record's key.
    pub(super) fn first(&self) -> Option<(i64, &Arc<str>)> {
        self.due.front().map(|lease| (lease.deadline, &lease.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn leases_come_out_earliest_first_whatever_the_order_they_were_added() {
        let mut leases = Leases::default();
        leases.add(30, 1, key("a"));
        leases.add(10, 2, key("b"));
        leases.add(20, 3, key("c"));
        leases.add(20, 4, key("d"));
        let mut order = Vec::new();
        while let Some((deadline, key)) = leases.first() {
            let key = key.clone();
            let id = match &*key {
                "a" => 1,
                "b" => 2,
                "c" => 3,
                _ => 4,
            };
            order.push((deadline, key.to_string()));
            assert_eq!(leases.take(deadline, id).as_deref(), Some(&*key));
        }
        assert_eq!(
            order,
            [(10, "b"), (20, "c"), (20, "d"), (30, "a")].map(|(d, k)| (d, k.to_owned()))
        );
    }

    #[test]
    fn many_leases_in_flight_are_taken_in_any_order_and_their_room_given_back() {
        let mut leases = Leases::default();
        // Two lengths of lease interleaved: every other add lands before the back.
        let due = |i: u64| {
            if i.is_multiple_of(2) {
                1_000 + i
            } else {
                10 + i
            }
        };
        for i in 0..10_000 {
            leases.add(due(i) as i64, i, key("k"));
        }
        let peak = leases.due.capacity();
        assert!(leases
            .due
            .iter()
            .zip(leases.due.iter().skip(1))
            .all(|(a, b)| (a.deadline, a.id) < (b.deadline, b.id)));
        // Oldest first (the front), as completions of many slow requests come.
        for i in 0..9_990 {
            assert!(leases.take(due(i) as i64, i).is_some(), "lease {i}");
        }
        assert_eq!(leases.due.len(), 10);
        assert!(leases.due.capacity() < peak / 8, "room given back");
        for i in 9_990..10_000 {
            assert!(leases.take(due(i) as i64, i).is_some(), "lease {i}");
        }
        assert!(leases.first().is_none());
    }

    #[test]
    fn only_the_lease_named_is_taken() {
        let mut leases = Leases::default();
        leases.add(10, 1, key("a"));
        leases.add(10, 2, key("b"));
        // Another deadline or another id is not this lease.
        assert_eq!(leases.take(11, 1), None);
        assert_eq!(leases.take(10, 3), None);
        assert_eq!(leases.take(10, 1).as_deref(), Some("a"));
        assert_eq!(leases.take(10, 1), None);
        assert_eq!(
            leases.first().map(|(d, k)| (d, k.to_string())),
            Some((10, "b".to_owned()))
        );
    }
}
