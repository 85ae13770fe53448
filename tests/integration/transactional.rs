//! Completion inside the handler's own transaction (PostgreSQL): the order and the record
//! commit together, over tokio-postgres (deadpool) and sqlx; a lost claim commits nothing;
//! the first caller and every retry get the recorded bytes.

use std::time::Duration;

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use serde::Deserialize;
use tower_idempotency::{
    axum::Json,
    store::{IdempotencyStore, PostgresStore, RecordKey, RecordState},
    IdempotencyKey, IdempotencyLayer, Outcome,
};

use crate::{
    backends::{server_addr, url, url_via},
    postgres_store::Postgres,
    proxy::{Protocol, Proxy},
    support::{post_with_key, send, unique},
};

/// An `orders` table of this test's own, dropped with it.
struct Orders {
    url: String,
    table: String,
}

impl Orders {
    async fn create(url: &str) -> Self {
        let table = format!("orders_{}", uuid::Uuid::new_v4().simple());
        let orders = Self {
            url: url.to_owned(),
            table,
        };
        orders
            .sql(&format!(
                "CREATE TABLE {} (id bigserial PRIMARY KEY, item text NOT NULL)",
                orders.table
            ))
            .await;
        orders
    }

    async fn sql(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client.query(sql, &[]).await.unwrap()
    }

    async fn count(&self) -> i64 {
        self.sql(&format!("SELECT count(*) FROM {}", self.table))
            .await[0]
            .get(0)
    }

    async fn drop_table(self) {
        self.sql(&format!("DROP TABLE {}", self.table)).await;
    }
}

#[derive(Clone)]
struct App {
    store: PostgresStore,
    table: String,
    /// What the test does inside the handler, between the insert and the completion.
    meddle: Meddle,
}

#[derive(Clone, Copy, PartialEq)]
enum Meddle {
    None,
    /// Another request takes the claim over (as after a lapsed lease).
    StealClaim,
    /// After the commit, the handler returns something else, then (next request) panics.
    AnswerOtherwise,
    PanicAfterCommit,
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
}

fn created(id: i64, item: &str) -> Response {
    (
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": id, "item": item })),
    )
        .into_response()
}

/// Takes the claim from under the request, as another request does after its lease ran out.
async fn steal(key: &IdempotencyKey) {
    let sql = format!(
        "UPDATE {} SET token = '\\x00000000000000000000000000000000' WHERE key = $1",
        PostgresStore::DEFAULT_TABLE
    );
    let url = std::env::var("DATABASE_URL").unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let record = RecordKey::new("idem", key.scope(), key.as_str());
    assert_eq!(client.execute(&sql, &[&record.as_str()]).await.unwrap(), 1);
}

/// Over tokio-postgres: a transaction on the store's own deadpool pool.
async fn tokio_order(
    State(app): State<App>,
    key: IdempotencyKey,
    Json(order): Json<NewOrder>,
) -> Response {
    let mut client = app
        .store
        .pool()
        .expect("a deadpool store")
        .get()
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    let insert = format!("INSERT INTO {} (item) VALUES ($1) RETURNING id", app.table);
    let statement = tx.prepare_cached(&insert).await.unwrap();
    let id: i64 = tx
        .query_one(&statement, &[&order.item])
        .await
        .unwrap()
        .get(0);
    if app.meddle == Meddle::StealClaim {
        steal(&key).await;
    }
    let committed = match app
        .store
        .complete_and_commit(tx, &key, created(id, &order.item))
        .await
    {
        Ok(committed) => committed,
        Err(err) => return err.into_response(),
    };
    match app.meddle {
        Meddle::AnswerOtherwise => (StatusCode::IM_A_TEAPOT, "something else").into_response(),
        Meddle::PanicAfterCommit => panic!("the handler fails after its commit"),
        _ => committed.into_response(),
    }
}

/// Over sqlx: a transaction on the application's pool, which the store shares.
#[cfg(feature = "sqlx")]
async fn sqlx_order(
    State(app): State<App>,
    key: IdempotencyKey,
    Json(order): Json<NewOrder>,
) -> Result<tower_idempotency::Committed, tower_idempotency::CommitError> {
    let pool = app.store.sqlx_pool().expect("an sqlx store");
    let mut tx = pool.begin().await.unwrap();
    let insert = format!("INSERT INTO {} (item) VALUES ($1) RETURNING id", app.table);
    let id: i64 = sqlx::query_scalar(&insert)
        .bind(&order.item)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    if app.meddle == Meddle::StealClaim {
        steal(&key).await;
    }
    app.store
        .complete_and_commit(tx, &key, created(id, &order.item))
        .await
}

fn router(store: PostgresStore, table: &str, meddle: Meddle, sqlx: bool) -> Router {
    // Advertising the expiry: the handler's own record carries it too.
    let layer = IdempotencyLayer::new(store.clone()).advertise_expiry(true);
    let app = App {
        store,
        table: table.to_owned(),
        meddle,
    };
    let handler = if sqlx {
        #[cfg(feature = "sqlx")]
        {
            post(sqlx_order)
        }
        #[cfg(not(feature = "sqlx"))]
        unreachable!("sqlx tests run with the sqlx feature")
    } else {
        post(tokio_order)
    };
    Router::new()
        .route("/orders", handler)
        .layer(layer)
        .with_state(app)
}

async fn tokio_store(url: &str) -> PostgresStore {
    PostgresStore::connect(url)
        .await
        .expect("DATABASE_URL reachable")
}

#[cfg(feature = "sqlx")]
async fn sqlx_store(url: &str) -> PostgresStore {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .expect("DATABASE_URL reachable");
    let store = PostgresStore::from_sqlx(pool, PostgresStore::DEFAULT_TABLE).unwrap();
    store.migrate().await.unwrap();
    store
}

/// The order and its record commit in one transaction; the record holds exactly the
/// response the first caller got, and every retry replays it; one row.
async fn commits_the_order_and_the_record_together(store: PostgresStore, url: &str, sqlx: bool) {
    let orders = Orders::create(url).await;
    let app = router(store.clone(), &orders.table, Meddle::None, sqlx);
    let key = unique("tx");
    let first = send(&app, post_with_key("/orders", &key, r#"{"item":"lamp"}"#)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(first.outcome, Some(Outcome::Fresh));
    assert_eq!(first.json()["item"], "lamp");
    let record = store
        .get(&RecordKey::new("idem", "", &key))
        .await
        .unwrap()
        .expect("a record");
    let RecordState::Completed(stored) = record.state else {
        panic!("completed in the handler's transaction: {record:?}");
    };
    assert_eq!(stored.body.as_deref(), Some(&first.body[..]));
    let expires = &first.headers[tower_idempotency::protocol::IDEMPOTENCY_EXPIRES];
    assert_eq!(
        stored
            .headers
            .get(tower_idempotency::protocol::IDEMPOTENCY_EXPIRES),
        Some(expires)
    );
    for _ in 0..2 {
        let retry = send(&app, post_with_key("/orders", &key, r#"{"item":"lamp"}"#)).await;
        assert!(retry.replayed());
        assert_eq!(retry.body, first.body);
        assert_eq!(
            &retry.headers[tower_idempotency::protocol::IDEMPOTENCY_EXPIRES],
            expires
        );
    }
    assert_eq!(orders.count().await, 1);
    orders.drop_table().await;
}

#[cfg_attr(database_url_unset, ignore = "DATABASE_URL is not set")]
#[tokio::test]
async fn tokio_postgres_completion_commits_the_order_and_the_record_together() {
    let url = url::<Postgres>("tokio-postgres completion");
    commits_the_order_and_the_record_together(tokio_store(&url).await, &url, false).await;
}

#[cfg(feature = "sqlx")]
#[cfg_attr(database_url_unset, ignore = "DATABASE_URL is not set")]
#[tokio::test]
async fn sqlx_completion_commits_the_order_and_the_record_together() {
    let url = url::<Postgres>("sqlx completion");
    commits_the_order_and_the_record_together(sqlx_store(&url).await, &url, true).await;
}

/// The claim was taken over before the handler's completion: its transaction commits
/// nothing, and the answer says the key is in progress (never recorded by this request).
async fn a_lost_claim_commits_nothing(store: PostgresStore, url: &str, sqlx: bool) {
    let orders = Orders::create(url).await;
    let app = router(store, &orders.table, Meddle::StealClaim, sqlx);
    let answer = send(
        &app,
        post_with_key("/orders", &unique("stolen"), r#"{"item":"x"}"#),
    )
    .await;
    answer.assert_problem(StatusCode::CONFLICT, "in-progress");
    assert_eq!(answer.outcome, Some(Outcome::NotExecuted));
    assert_eq!(orders.count().await, 0, "the order was rolled back");
    orders.drop_table().await;
}

#[cfg_attr(database_url_unset, ignore = "DATABASE_URL is not set")]
#[tokio::test]
async fn tokio_postgres_a_lost_claim_commits_nothing() {
    let url = url::<Postgres>("tokio-postgres lost claim");
    a_lost_claim_commits_nothing(tokio_store(&url).await, &url, false).await;
}

#[cfg(feature = "sqlx")]
#[cfg_attr(database_url_unset, ignore = "DATABASE_URL is not set")]
#[tokio::test]
async fn sqlx_a_lost_claim_commits_nothing() {
    let url = url::<Postgres>("sqlx lost claim");
    a_lost_claim_commits_nothing(sqlx_store(&url).await, &url, true).await;
}

/// Whatever the handler does after its commit (another answer, a panic), the first caller
/// gets the recorded response, a retry replays it, and the handler never runs again.
#[cfg_attr(database_url_unset, ignore = "DATABASE_URL is not set")]
#[tokio::test]
async fn after_the_commit_the_record_is_the_answer() {
    let url = url::<Postgres>("answer after commit");
    let store = tokio_store(&url).await;
    let orders = Orders::create(&url).await;
    let otherwise = router(store.clone(), &orders.table, Meddle::AnswerOtherwise, false);
    let key = unique("otherwise");
    let first = send(
        &otherwise,
        post_with_key("/orders", &key, r#"{"item":"a"}"#),
    )
    .await;
    assert_eq!(
        first.status,
        StatusCode::CREATED,
        "the recorded answer, not the teapot"
    );
    let retry = send(
        &otherwise,
        post_with_key("/orders", &key, r#"{"item":"a"}"#),
    )
    .await;
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);

    let panics = router(store, &orders.table, Meddle::PanicAfterCommit, false);
    let key = unique("panics");
    let crashed = tokio::spawn({
        let (app, key) = (panics.clone(), key.clone());
        async move { send(&app, post_with_key("/orders", &key, r#"{"item":"b"}"#)).await }
    })
    .await;
    assert!(crashed.is_err(), "the panic goes on up");
    let retry = send(&panics, post_with_key("/orders", &key, r#"{"item":"b"}"#)).await;
    assert!(retry.replayed(), "{retry:?}");
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.json()["item"], "b");
    assert_eq!(orders.count().await, 2, "each order once");
    orders.drop_table().await;
}

/// A fresh request with transactional completion costs the claim and the handler's own
/// transaction (BEGIN, INSERT, the fenced completion, COMMIT): no completion of the
/// layer's own after it.
#[cfg_attr(database_url_unset, ignore = "DATABASE_URL is not set")]
#[tokio::test]
async fn transactional_completion_costs_no_round_trip_of_the_layers_own() {
    let url = url::<Postgres>("transactional round trips");
    let proxy = Proxy::start(server_addr(&url), Protocol::Postgres).await;
    let store = tokio_store(&url_via(&url, proxy.addr())).await;
    let orders = Orders::create(&url).await;
    let app = router(store, &orders.table, Meddle::None, false);
    let body = r#"{"item":"warm"}"#;
    send(&app, post_with_key("/orders", &unique("warm"), body)).await;
    let key = unique("trips");
    let before = proxy.messages();
    let fresh = send(&app, post_with_key("/orders", &key, body)).await;
    assert_eq!(fresh.outcome, Some(Outcome::Fresh));
    // The claim, then BEGIN, INSERT, complete, COMMIT.
    assert_eq!(proxy.messages() - before, 5);
    let before = proxy.messages();
    let replay = send(&app, post_with_key("/orders", &key, body)).await;
    assert!(replay.replayed());
    assert_eq!(proxy.messages() - before, 1);
    orders.drop_table().await;
}

/// An outer layer on PostgreSQL, an inner one on another store: the handler gets the outer
/// layer's key and completes in its transaction; the inner layer records in its own store
/// as usual. Retries replay from either, and the order commits once.
#[cfg_attr(database_url_unset, ignore = "DATABASE_URL is not set")]
#[tokio::test]
async fn nested_under_a_layer_on_another_store_the_outer_key_is_the_handlers() {
    let url = url::<Postgres>("nested transactional");
    let store = tokio_store(&url).await;
    let orders = Orders::create(&url).await;
    let inner = tower_idempotency::MemoryStore::new();
    let app = App {
        store: store.clone(),
        table: orders.table.clone(),
        meddle: Meddle::None,
    };
    let router = Router::new()
        .route("/orders", post(tokio_order))
        .layer(IdempotencyLayer::new(inner.clone()))
        .layer(IdempotencyLayer::new(store.clone()))
        .with_state(app);
    let key = unique("nested-tx");
    let first = send(&router, post_with_key("/orders", &key, r#"{"item":"n"}"#)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let record = RecordKey::new("idem", "", &key);
    for state in [
        store.get(&record).await.unwrap().map(|r| r.state),
        inner.get(&record).await.unwrap().map(|r| r.state),
    ] {
        assert!(
            matches!(&state, Some(RecordState::Completed(r)) if r.body.as_deref() == Some(&first.body[..])),
            "{state:?}"
        );
    }
    let retry = send(&router, post_with_key("/orders", &key, r#"{"item":"n"}"#)).await;
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);
    assert_eq!(orders.count().await, 1);
    orders.drop_table().await;
}
