//! Deleting what a benchmark run wrote to a store outside the process.

/// Deletes the records whose key contains `marker` (a run's own) from the store `url`
/// names: Redis keys by `SCAN` and `DEL`, PostgreSQL rows of the default table.
pub(crate) async fn delete(url: &str, marker: &str) {
    #[cfg(feature = "redis")]
    if url.starts_with("redis") {
        return delete_redis(url, &format!("*{marker}*")).await;
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres") {
        return delete_postgres(url, marker).await;
    }
    let _ = (url, marker);
}

#[cfg(feature = "redis")]
async fn delete_redis(url: &str, pattern: &str) {
    let client = redis::Client::open(url).expect("a Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis reachable");
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .expect("SCAN");
        if !keys.is_empty() {
            let () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .expect("DEL");
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

#[cfg(feature = "postgres")]
async fn delete_postgres(url: &str, marker: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL reachable");
    let connection = tokio::spawn(connection);
    let table = tower_idempotency::store::PostgresStore::DEFAULT_TABLE;
    let pattern = format!("%{}%", marker.replace(['%', '_'], ""));
    client
        .execute(
            &format!("DELETE FROM {table} WHERE key LIKE $1"),
            &[&pattern],
        )
        .await
        .expect("DELETE");
    drop(client);
    let _ = connection.await;
}
