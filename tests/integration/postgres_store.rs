//! `PostgresStore` against the real server at `DATABASE_URL`.

use tower_idempotency::store::{PostgresStore, RecordKey, StoreError};

use crate::{backends::Backend, cleanup::Written, proxy::Protocol};

pub(crate) struct Postgres;

/// Runs one statement on a connection of its own.
async fn execute(
    url: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> u64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.execute(sql, params).await.unwrap()
}

const TABLE: &str = PostgresStore::DEFAULT_TABLE;

impl Backend for Postgres {
    type Store = PostgresStore;
    const VAR: &'static str = "DATABASE_URL";
    const PROTOCOL: Protocol = Protocol::Postgres;

    async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect(url).await
    }

    async fn truncate_response(url: &str, key: &RecordKey) {
        let sql = format!("UPDATE {TABLE} SET response = substring(response from 1 for 5) WHERE key = $1 AND response IS NOT NULL");
        assert_eq!(execute(url, &sql, &[&key.as_str()]).await, 1);
    }

    async fn put_foreign(url: &str, key: &RecordKey) {
        let sql = format!(
            "INSERT INTO {TABLE} (key, fingerprint, token, response, version, expires_at)
             VALUES ($1, 'not a fingerprint', NULL, 'garbage', 99, now() + interval '1 minute')"
        );
        execute(url, &sql, &[&key.as_str()]).await;
    }

    async fn put_record(url: &str, key: &RecordKey, fingerprint: &[u8; 64], response: &[u8]) {
        let sql = format!(
            "INSERT INTO {TABLE} (key, fingerprint, token, response, version, expires_at)
             VALUES ($1, $2, NULL, $3, 2, now() + interval '1 minute')
             ON CONFLICT (key) DO UPDATE SET fingerprint = $2, token = NULL, response = $3,
                 version = 2, expires_at = now() + interval '1 minute'"
        );
        execute(url, &sql, &[&key.as_str(), &&fingerprint[..], &response]).await;
    }

    async fn put_neither(url: &str, key: &RecordKey) {
        let sql = format!(
            "INSERT INTO {TABLE} (key, fingerprint, token, response, version, expires_at)
             VALUES ($1, $2, NULL, NULL, 2, now() + interval '1 minute')"
        );
        execute(url, &sql, &[&key.as_str(), &&[7u8; 64][..]]).await;
    }

    async fn remove(url: &str, written: &Written) {
        let exact: Vec<&str> = written.exact.iter().map(String::as_str).collect();
        let containing: Vec<String> = written
            .containing
            .iter()
            .map(|part| {
                let escaped = part
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                format!("%{escaped}%")
            })
            .collect();
        let sql = format!("DELETE FROM {TABLE} WHERE key = ANY($1) OR key LIKE ANY($2)");
        execute(url, &sql, &[&exact, &containing]).await;
    }
}

crate::backends::backend_tests!(
    crate::postgres_store::Postgres,
    #[cfg_attr(database_url_unset, ignore = "DATABASE_URL is not set")]
);

#[cfg_attr(database_url_unset, ignore = "DATABASE_URL is not set")]
#[tokio::test]
async fn a_custom_table_is_created_and_expired_rows_are_swept() {
    let url = crate::backends::url::<Postgres>("custom table");
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.connect_timeout(std::time::Duration::from_secs(2));
    let pool = deadpool_postgres::Pool::builder(deadpool_postgres::Manager::new(
        config,
        tokio_postgres::NoTls,
    ))
    .max_size(2)
    .build()
    .unwrap();
    assert!(PostgresStore::with_pool(pool.clone(), "bad; name").is_err());
    let table = format!("idem_custom_{}", uuid::Uuid::new_v4().simple());
    let store = PostgresStore::with_pool(pool, &table).unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap(); // idempotent
    tower_idempotency::store::conformance::completed_record_expires(&store).await;
    // That check left an expired row behind (or took it over); make sure one is there.
    let expired = format!(
        "INSERT INTO {table} (key, fingerprint, token, response, version, expires_at)
         VALUES ('stale', '\\x00', NULL, NULL, 1, now() - interval '1 minute')"
    );
    execute(&url, &expired, &[]).await;
    assert!(store.sweep().await.unwrap() >= 1);
    assert_eq!(store.sweep().await.unwrap(), 0);

    // More expired rows than one batch holds, beside live ones: all the expired go, in
    // several batches, and only they.
    for (prefix, expires) in [
        ("stale", "- interval '1 minute'"),
        ("live", "+ interval '1 hour'"),
    ] {
        let rows = if prefix == "stale" { 2500 } else { 10 };
        let insert = format!(
            "INSERT INTO {table} (key, fingerprint, version, expires_at)
             SELECT '{prefix}-' || g, '\\x00', 2, now() {expires} FROM generate_series(1, {rows}) g"
        );
        execute(&url, &insert, &[]).await;
    }
    // A row a claim is taking over (locked in its transaction) is skipped, not waited
    // for; the next sweep takes it.
    let (mut locker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let claim = locker.transaction().await.unwrap();
    let lock = format!("SELECT 1 FROM {table} WHERE key = 'stale-1' FOR UPDATE");
    assert_eq!(claim.execute(&lock, &[]).await.unwrap(), 1);
    let swept = tokio::time::timeout(std::time::Duration::from_secs(30), store.sweep())
        .await
        .expect("the sweep does not wait for the locked row");
    assert_eq!(swept.unwrap(), 2499);
    claim.rollback().await.unwrap();
    assert_eq!(store.sweep().await.unwrap(), 1);
    let delete_live = format!("DELETE FROM {table} WHERE key LIKE 'live-%'");
    assert_eq!(
        execute(&url, &delete_live, &[]).await,
        10,
        "the live rows stay"
    );
    execute(&url, &format!("DROP TABLE {table}"), &[]).await;
}
