//! The store conformance suite, on every store.

mod memory {
    tower_idempotency::store_conformance_tests!(async {
        Some(tower_idempotency::MemoryStore::new())
    });
}

/// A store behind a replay cache (copies only of what it replayed, so every check sees the
/// store's own answers or the same ones).
mod replay_cache {
    tower_idempotency::store_conformance_tests!(async {
        Some(tower_idempotency::store::ReplayCache::new(
            tower_idempotency::MemoryStore::new(),
        ))
    });
}

/// A store chosen at run time: the memory store behind `BoxedStore`, and a `BoxedStore`
/// boxed again (taken as it is, not boxed twice).
mod boxed {
    tower_idempotency::store_conformance_tests!(async {
        Some(tower_idempotency::store::BoxedStore::new(
            tower_idempotency::MemoryStore::new(),
        ))
    });

    #[test]
    fn boxing_a_boxed_store_keeps_it() {
        use tower_idempotency::store::BoxedStore;
        let once = BoxedStore::new(tower_idempotency::MemoryStore::new());
        let twice = BoxedStore::new(once.clone());
        assert_eq!(format!("{twice:?}"), format!("{once:?}"));
        assert!(format!("{twice:?}").contains("MemoryStore"), "{twice:?}");
    }
}

/// `PostgresStore` over an sqlx pool (its tokio-postgres pool is checked with the other
/// backend tests).
#[cfg(feature = "sqlx")]
mod postgres_over_sqlx {
    tower_idempotency::store_conformance_tests!(
        #[cfg_attr(database_url_unset, ignore = "DATABASE_URL is not set")]
        async {
            let url = std::env::var("DATABASE_URL")
                .ok()
                .filter(|url| !url.is_empty())
                .expect("DATABASE_URL is set");
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(std::time::Duration::from_secs(2))
                .connect(&url)
                .await
                .unwrap_or_else(|err| {
                    panic!("DATABASE_URL is set but {url} is unreachable: {err}")
                });
            let store = tower_idempotency::store::PostgresStore::from_sqlx(
                pool,
                tower_idempotency::store::PostgresStore::DEFAULT_TABLE,
            )
            .unwrap();
            store.migrate().await.unwrap();
            Some(crate::cleanup::Tracked::<crate::postgres_store::Postgres>::new(store, &url))
        }
    );
}
