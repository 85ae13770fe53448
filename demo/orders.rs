//! Where the demo keeps its orders: in memory, or (with `--store postgres://…`) in a
//! PostgreSQL table, each order inserted and its idempotency record completed in one
//! transaction.

use std::sync::{Arc, Mutex};

use axum::response::Response;
#[cfg(feature = "postgres")]
use axum::{http::StatusCode, response::IntoResponse};
use serde::Serialize;
use tower_idempotency::IdempotencyKey;
#[cfg(feature = "postgres")]
use tower_idempotency::NotExecuted;

#[derive(Clone, Serialize)]
pub(crate) struct Order {
    pub(crate) id: i64,
    pub(crate) item: String,
    pub(crate) quantity: i32,
}

#[derive(Clone)]
pub(crate) enum Orders {
    Memory(Arc<Mutex<Vec<Order>>>),
    #[cfg(feature = "postgres")]
    Postgres {
        store: tower_idempotency::store::PostgresStore,
        table: Arc<str>,
    },
}

/// The database failed before anything committed: say so, and let the retry run.
#[cfg(feature = "postgres")]
fn unavailable(err: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %err, "database error; nothing committed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        NotExecuted,
        [("retry-after", "1")],
        "database unavailable; nothing was committed, retry with the same key",
    )
        .into_response()
}

/// A connection from the store's pool: one pool serves the orders and the records.
#[cfg(feature = "postgres")]
async fn connection(
    store: &tower_idempotency::store::PostgresStore,
) -> Result<deadpool_postgres::Object, Response> {
    let pool = store.pool().expect("checked at start");
    pool.get().await.map_err(unavailable)
}

/// An order from a row of `id, item, quantity`.
#[cfg(feature = "postgres")]
fn order_of(row: &tokio_postgres::Row) -> Order {
    Order {
        id: row.get(0),
        item: row.get(1),
        quantity: row.get(2),
    }
}

impl Orders {
    /// The orders table in PostgreSQL, created if it is missing.
    #[cfg(feature = "postgres")]
    pub(crate) async fn postgres(
        store: tower_idempotency::store::PostgresStore,
        table: &str,
    ) -> Result<Self, String> {
        let valid = !table.is_empty()
            && table
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(format!(
                "--orders-table {table:?}: use lower-case letters, digits and underscores"
            ));
        }
        let pool = store.pool().ok_or("the store has no pool of its own")?;
        let client = pool.get().await.map_err(|e| e.to_string())?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    id bigserial PRIMARY KEY, item text NOT NULL, quantity int NOT NULL)"
            ))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self::Postgres {
            store,
            table: table.into(),
        })
    }

    /// Places an order and answers with `answer(&order)`. In PostgreSQL the insert and
    /// the record of that answer commit in one transaction, so a crash after the commit
    /// leaves a record the retry replays.
    pub(crate) async fn place(
        &self,
        key: &IdempotencyKey,
        item: String,
        quantity: i32,
        answer: impl FnOnce(&Order) -> Response,
    ) -> Response {
        match self {
            Self::Memory(orders) => {
                let order = {
                    let mut orders = orders.lock().unwrap();
                    let order = Order {
                        id: orders.len() as i64 + 1,
                        item,
                        quantity,
                    };
                    orders.push(order.clone());
                    order
                };
                let _ = key;
                answer(&order)
            }
            #[cfg(feature = "postgres")]
            Self::Postgres { store, table } => {
                let mut client = match connection(store).await {
                    Ok(client) => client,
                    Err(response) => return response,
                };
                let tx = match client.transaction().await {
                    Ok(tx) => tx,
                    Err(err) => return unavailable(err),
                };
                let insert =
                    format!("INSERT INTO {table} (item, quantity) VALUES ($1, $2) RETURNING id");
                let id: i64 = match tx.query_one(&insert, &[&item, &quantity]).await {
                    Ok(row) => row.get(0),
                    Err(err) => return unavailable(err),
                };
                let order = Order { id, item, quantity };
                match store.complete_and_commit(tx, key, answer(&order)).await {
                    Ok(committed) => committed.into_response(),
                    Err(err) => err.into_response(),
                }
            }
        }
    }

    pub(crate) async fn list(&self) -> Result<Vec<Order>, Response> {
        match self {
            Self::Memory(orders) => Ok(orders.lock().unwrap().clone()),
            #[cfg(feature = "postgres")]
            Self::Postgres { store, table } => {
                let client = connection(store).await?;
                let rows = client
                    .query(
                        &format!("SELECT id, item, quantity FROM {table} ORDER BY id"),
                        &[],
                    )
                    .await
                    .map_err(unavailable)?;
                Ok(rows.iter().map(order_of).collect())
            }
        }
    }

    /// Changes an order's quantity and answers with `answer(order)` (`None`: no such
    /// order). In PostgreSQL, with a key, the update and its record commit together.
    pub(crate) async fn change(
        &self,
        key: Option<&IdempotencyKey>,
        id: i64,
        quantity: i32,
        answer: impl FnOnce(Option<&Order>) -> Response,
    ) -> Response {
        match self {
            Self::Memory(orders) => {
                let mut orders = orders.lock().unwrap();
                let order = orders.iter_mut().find(|o| o.id == id).map(|order| {
                    order.quantity = quantity;
                    &*order
                });
                let _ = key;
                answer(order)
            }
            #[cfg(feature = "postgres")]
            Self::Postgres { store, table } => {
                let mut client = match connection(store).await {
                    Ok(client) => client,
                    Err(response) => return response,
                };
                let tx = match client.transaction().await {
                    Ok(tx) => tx,
                    Err(err) => return unavailable(err),
                };
                let update = format!(
                    "UPDATE {table} SET quantity = $2 WHERE id = $1 RETURNING id, item, quantity"
                );
                let order = match tx.query_opt(&update, &[&id, &quantity]).await {
                    Ok(row) => row.as_ref().map(order_of),
                    Err(err) => return unavailable(err),
                };
                let response = answer(order.as_ref());
                let Some(key) = key else {
                    return match tx.commit().await {
                        Ok(()) => response,
                        Err(err) => unavailable(err),
                    };
                };
                match store.complete_and_commit(tx, key, response).await {
                    Ok(committed) => committed.into_response(),
                    Err(err) => err.into_response(),
                }
            }
        }
    }
}
