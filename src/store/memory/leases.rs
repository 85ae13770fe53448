//! In-flight records by the end of their lease: a short queue kept in order. Claims end
//! in about the order they were made, so an entry is added and found near the back, in
//! fewer steps than a B-tree's insert and remove (this runs twice per fresh request);
//! the queue holds only what is in flight, not the completed records.

use std::{collections::VecDeque, sync::Arc};

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
            .iter()
            .rposition(|lease| (lease.deadline, lease.id) <= (deadline, id))
            .map_or(0, |before| before + 1);
        self.due.insert(at, Lease { deadline, id, key });
    }

    /// Takes out the record `id` whose lease ends at `deadline`, giving back its key.
    pub(super) fn take(&mut self, deadline: i64, id: u64) -> Option<Arc<str>> {
        let at = self
            .due
            .iter()
            .rposition(|lease| lease.id == id && lease.deadline == deadline)?;
        self.due.remove(at).map(|lease| lease.key)
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
