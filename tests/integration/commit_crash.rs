//! Real `orders` processes on PostgreSQL, each order committed together with its record:
//! SIGKILL after the commit → the retry on another process replays the order; SIGKILL
//! before it → after the lease the retry runs once. One row either way.

use std::time::Duration;

use axum::http::StatusCode;

use crate::{
    backends::url,
    postgres_store::Postgres,
    processes::Shop,
    support::{eventually, unique},
};

async fn rows(url: &str, table: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let sql = format!("SELECT count(*) FROM {table}");
    client.query_one(&sql, &[]).await.unwrap().get(0)
}

/// Kills `a` (SIGKILL) once `condition` holds, and checks its client never got an answer.
async fn kill_when(
    mut a: crate::processes::Orders,
    key: &str,
    body: &'static str,
    what: &str,
    condition: impl AsyncFnMut() -> bool,
) {
    let first = tokio::spawn({
        let key = key.to_owned();
        let addr = a.addr;
        async move { crate::processes::post_to(addr, &key, body).await.is_err() }
    });
    eventually(what, condition).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert!(first.await.unwrap(), "the killed process never answered");
}

#[cfg_attr(database_url_unset, ignore = "DATABASE_URL is not set")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_commit_the_retry_replays_the_order() {
    let url = url::<Postgres>("killed after the commit");
    let shop = Shop::new(&url);
    let a = shop.start(2);
    let b = shop.start(2);
    let key = unique("after-commit");
    let body = r#"{"item":"kettle","quantity":1,"pause_after_commit_ms":5000}"#;
    let table = shop.table.clone();
    kill_when(a, &key, body, "the order is committed", async || {
        rows(&url, &table).await == 1
    })
    .await;

    // Well past the lease: a claim left in flight would now run again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let retry = b.post(&key, body).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert!(retry.replayed(), "the order committed with its record");
    assert_eq!(retry.json()["item"], "kettle");
    assert_eq!(rows(&url, &table).await, 1, "one order");
    shop.clean_up().await;
}

#[cfg_attr(database_url_unset, ignore = "DATABASE_URL is not set")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_commit_the_retry_runs_once_after_the_lease() {
    let url = url::<Postgres>("killed before the commit");
    let shop = Shop::new(&url);
    let a = shop.start(2);
    let b = shop.start(2);
    let key = unique("before-commit");
    let body = r#"{"item":"toaster","quantity":1,"delay_ms":5000}"#;
    let store = tower_idempotency::store::PostgresStore::connect(&url)
        .await
        .unwrap();
    let record = tower_idempotency::store::RecordKey::new("idem", "", &key);
    kill_when(a, &key, body, "the key is claimed", async || {
        use tower_idempotency::store::IdempotencyStore;
        store.get(&record).await.unwrap().is_some()
    })
    .await;
    assert_eq!(rows(&url, &shop.table).await, 0, "nothing committed");

    b.post(&key, body)
        .await
        .assert_problem(StatusCode::CONFLICT, "in-progress");
    let retry = b.post_until_not_in_progress(&key, body).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert!(!retry.replayed(), "it ran, once, after the lease");
    assert_eq!(rows(&url, &shop.table).await, 1, "one order");
    let again = b.post(&key, body).await;
    assert!(again.replayed());
    assert_eq!(again.body, retry.body);
    shop.clean_up().await;
}
