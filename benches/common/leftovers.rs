//! Deleting what a benchmark run wrote to a store outside the process.

/// Deletes the records whose key contains `marker` (a run's own) from the store `url`
/// names: Redis keys by `SCAN` and `DEL` (on each node of a `redis-cluster://`), PostgreSQL
/// rows of the default table.
pub(crate) async fn delete(url: &str, marker: &str) {
    #[cfg(feature = "redis")]
    if let Some(nodes) = url.strip_prefix("redis-cluster://") {
        // Each node holds its own keys: the same deletion on each (a `user:password@`
        // before the hosts applies to every node).
        let hosts = nodes.split(['/', '?']).next().unwrap_or_default();
        let (user, hosts) = match hosts.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), hosts),
        };
        for node in hosts.split(',') {
            delete_redis(&format!("redis://{user}{node}"), &format!("*{marker}*")).await;
        }
        return;
    }
    #[cfg(feature = "redis")]
    if url.starts_with("rediss-cluster://") {
        eprintln!("leftovers: the keys of this run on {url} are not deleted (a TLS cluster)");
        return;
    }
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
            // One `DEL` per key: a cluster node refuses one over keys of several slots.
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("DEL").arg(key).ignore();
            }
            let () = pipe.query_async(&mut connection).await.expect("DEL");
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
