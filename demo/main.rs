//! An orders API protected by the idempotency layer.
//!
//! ```text
//! cargo run --example orders                      # in-memory store, 127.0.0.1:3000
//! cargo run --example orders -- --addr 127.0.0.1:8080 --lease 10 --ttl 3600
//! cargo run --example orders --features redis -- --store redis://127.0.0.1:6379
//! cargo run --example orders --features redis -- --store redis-cluster://127.0.0.1:7001,127.0.0.1:7002
//! cargo run --example orders --features postgres -- --store postgres://postgres@127.0.0.1:5432/test
//! cargo run --example orders --features redis -- --store redis://127.0.0.1:6379 --replay-cache
//! cargo run --example orders --features metrics   # /metrics/prometheus through metrics-exporter-prometheus
//! ```
//!
//! Routes: `POST /orders` (key required; `{"item", "quantity", "delay_ms"?,
//! "pause_after_commit_ms"?}`), `GET /orders`, `PATCH /orders/{id}` (key optional;
//! `{"quantity"}`), `GET /metrics` (JSON), `GET /metrics/prometheus` (the Prometheus text format;
//! with `--features metrics`, every metric the layer emits).
//!
//! With `--store postgres://…` the orders live in PostgreSQL (table `--orders-table`,
//! default `orders`, created if missing), and each order is inserted and its idempotency
//! record completed in one transaction: a crash after the commit leaves a record that the
//! retry replays. `--replay-cache` puts a `ReplayCache` in front of a Redis or PostgreSQL
//! store: a request's replays after its first on this instance are answered in process.

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, patch, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;
use tower_idempotency::{
    store::BoxedStore, IdempotencyKey, IdempotencyLayer, InFlight, MemoryStore, Metrics,
    NotExecuted, Outcome,
};

mod orders;
mod prometheus;

use self::orders::{Order, Orders};

#[derive(Clone)]
struct AppState {
    orders: Orders,
    metrics: Metrics,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    item: String,
    quantity: i64,
    /// A slow payment provider: the order commits only after this.
    delay_ms: Option<u64>,
    /// A slow answer: the handler sleeps after the order committed, before it answers.
    pause_after_commit_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuantityChange {
    quantity: i64,
}

/// A refusal before anything was done: marked so the layer releases the key, and the
/// corrected retry with the same key runs.
fn invalid(detail: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        NotExecuted,
        Json(json!({ "error": "invalid order", "detail": detail })),
    )
        .into_response()
}

fn quantity(value: i64) -> Result<i32, String> {
    i32::try_from(value)
        .ok()
        .filter(|q| *q > 0)
        .ok_or_else(|| format!("quantity must be a positive integer, not {value}"))
}

fn created(order: &Order) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{}", order.id))],
        Json(order.clone()),
    )
        .into_response()
}

async fn create_order(State(state): State<AppState>, key: IdempotencyKey, body: Bytes) -> Response {
    let new: NewOrder = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(err) => return invalid(&err.to_string()),
    };
    let quantity = match quantity(new.quantity) {
        Ok(q) => q,
        Err(detail) => return invalid(&detail),
    };
    if new.item.trim().is_empty() {
        return invalid("item must not be empty");
    }
    if let Some(delay) = new.delay_ms {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let response = state
        .orders
        .place(&key, new.item, quantity, |order| {
            tracing::info!(id = order.id, item = %order.item, "order committed");
            created(order)
        })
        .await;
    if let Some(pause) = new.pause_after_commit_ms {
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    response
}

async fn list_orders(State(state): State<AppState>) -> Response {
    match state.orders.list().await {
        Ok(orders) => Json(json!({ "count": orders.len(), "orders": orders })).into_response(),
        Err(response) => response,
    }
}

async fn change_quantity(
    State(state): State<AppState>,
    key: Option<IdempotencyKey>,
    Path(id): Path<i64>,
    body: Bytes,
) -> Response {
    let change: QuantityChange = match serde_json::from_slice(&body) {
        Ok(change) => change,
        Err(err) => return invalid(&err.to_string()),
    };
    let quantity = match quantity(change.quantity) {
        Ok(q) => q,
        Err(detail) => return invalid(&detail),
    };
    state
        .orders
        .change(key.as_ref(), id, quantity, |order| match order {
            Some(order) => Json(order.clone()).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": "no such order" })),
            )
                .into_response(),
        })
        .await
}

async fn metrics(State(state): State<AppState>) -> Json<serde_json::Value> {
    let counts: serde_json::Map<_, _> = state
        .metrics
        .snapshot()
        .into_iter()
        .map(|(outcome, n)| (outcome.to_string(), n.into()))
        .collect();
    Json(json!({ "outcomes": counts, "record_failures": state.metrics.record_failures() }))
}

/// Logs what the idempotency layer did with each intercepted request.
async fn log_outcome(response: Response) -> Response {
    if let Some(outcome) = response.extensions().get::<Outcome>() {
        tracing::info!(%outcome, status = response.status().as_u16(), "idempotency");
    }
    response
}

/// The app over the store chosen at start: creating an order requires a key, changing
/// one accepts one. Also returns the layer's claims in flight, for the graceful shutdown
/// to wait for.
fn app(store: BoxedStore, orders: Orders, options: &Options) -> Result<(Router, InFlight), String> {
    let layer = IdempotencyLayer::new(store)
        .lease(options.lease)
        .and_then(|layer| layer.ttl(options.ttl))
        .map_err(|e| format!("{e:#}"))?;
    let in_flight = layer.in_flight();
    let state = AppState {
        orders,
        metrics: layer.metrics(),
    };
    let router = Router::new()
        .route(
            "/orders",
            post(create_order)
                .layer(layer.clone().require_key(true))
                .get(list_orders),
        )
        .route("/orders/{id}", patch(change_quantity).layer(layer))
        .route("/metrics", get(metrics))
        .route(
            "/metrics/prometheus",
            get(prometheus::scrape).with_state(prometheus::Sources::new(
                state.metrics.clone(),
                in_flight.clone(),
            )?),
        )
        .layer(axum::middleware::map_response(log_outcome))
        .with_state(state);
    Ok((router, in_flight))
}

struct Options {
    addr: SocketAddr,
    store: String,
    orders_table: String,
    lease: Duration,
    ttl: Duration,
    replay_cache: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        addr: "127.0.0.1:3000".parse().unwrap(),
        store: "memory".to_owned(),
        orders_table: "orders".to_owned(),
        lease: Duration::from_secs(30),
        ttl: Duration::from_secs(24 * 60 * 60),
        replay_cache: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let seconds = |v: String| {
            v.parse()
                .map(Duration::from_secs)
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--addr" => options.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--store" => options.store = value()?,
            "--orders-table" => options.orders_table = value()?,
            "--lease" => options.lease = seconds(value()?)?,
            "--ttl" => options.ttl = seconds(value()?)?,
            "--replay-cache" => options.replay_cache = true,
            "-h" | "--help" => {
                return Err(
                    "usage: orders [--addr HOST:PORT] [--store memory|redis://…|redis-cluster://…|postgres://…] \
                            [--orders-table NAME] [--lease SECS] [--ttl SECS] [--replay-cache]"
                        .to_owned(),
                )
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    Ok(options)
}

/// The store `--store` names, and where the orders live beside it.
async fn store(options: &Options) -> Result<(BoxedStore, Orders), String> {
    let url = options.store.as_str();
    let in_memory = || Orders::Memory(Default::default());
    if url == "memory" {
        return Ok((BoxedStore::new(MemoryStore::new()), in_memory()));
    }
    let redis = [
        "redis://",
        "rediss://",
        "redis-cluster://",
        "rediss-cluster://",
    ];
    if redis.iter().any(|scheme| url.starts_with(scheme)) {
        #[cfg(feature = "redis")]
        {
            let store = tower_idempotency::store::RedisStore::connect(url)
                .await
                .map_err(|e| format!("{e:#}"))?;
            return Ok((BoxedStore::new(store), in_memory()));
        }
        #[cfg(not(feature = "redis"))]
        return Err("this build has no Redis store: run with --features redis".to_owned());
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        {
            // One pool serves the orders and the idempotency records, and each order
            // commits together with its record.
            let store = tower_idempotency::store::PostgresStore::connect(url)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let orders = Orders::postgres(store.clone(), &options.orders_table).await?;
            return Ok((BoxedStore::new(store), orders));
        }
        #[cfg(not(feature = "postgres"))]
        return Err("this build has no PostgreSQL store: run with --features postgres".to_owned());
    }
    Err(format!(
        "--store must be memory, redis://…, redis-cluster://HOST:PORT,… or postgres://…, not {url}"
    ))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "orders=info,tower_idempotency=warn".into()),
        )
        .init();
    let options = parse_args().unwrap_or_else(|msg| {
        eprintln!("{msg}");
        std::process::exit(2);
    });
    let (app, in_flight) = match store(&options).await {
        Ok((store, orders)) if options.replay_cache => {
            if options.store == "memory" {
                eprintln!("orders: --replay-cache is for a Redis or PostgreSQL store");
                std::process::exit(2);
            }
            let cache = tower_idempotency::store::ReplayCache::new(store);
            app(BoxedStore::new(cache), orders, &options)
        }
        Ok((store, orders)) => app(store, orders, &options),
        Err(msg) => Err(msg),
    }
    .unwrap_or_else(|msg| {
        eprintln!("orders: {msg}");
        std::process::exit(1);
    });
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .unwrap_or_else(|e| {
            eprintln!("orders: cannot listen on {}: {e}", options.addr);
            std::process::exit(1);
        });
    // Tests and scripts wait for this line.
    println!(
        "orders listening on http://{} (store: {})",
        listener.local_addr().unwrap(),
        options.store
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .unwrap();
    // Connections are closed; handlers that outlived their client may still be writing.
    if in_flight.wait(SHUTDOWN_GRACE).await {
        eprintln!("orders stopped");
    } else {
        eprintln!(
            "orders: {} requests still in flight after {SHUTDOWN_GRACE:?}; their keys free when their leases end",
            in_flight.count()
        );
    }
}

/// How long a shutdown waits for the layer's claims to settle.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("orders shutting down");
}
