//! The store conformance suite, on every store.

mod memory {
    tower_idempotency::store_conformance_tests!(async {
        Some(tower_idempotency::MemoryStore::new())
    });
}
