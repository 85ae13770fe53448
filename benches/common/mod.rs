//! The handler and apps the benchmarks measure.

// Each benchmark uses part of this module.
#![allow(dead_code)]

pub(crate) mod leftovers;

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{Request, StatusCode},
    response::IntoResponse,
    routing::post,
    Json, Router,
};
use serde::{Deserialize, Serialize};
use tower_idempotency::{IdempotencyLayer, MemoryStore};

#[derive(Deserialize)]
struct NewOrder {
    item: String,
    quantity: u32,
    note: String,
}

#[derive(Serialize)]
struct Order {
    id: u64,
    item: String,
    quantity: u32,
    note: String,
}

/// A minimal write handler: parse the JSON order, wait `commit` (a simulated database
/// commit; zero for a CPU-only handler), answer `201` with it as JSON.
async fn create(State(commit): State<Duration>, body: Bytes) -> impl IntoResponse {
    if !commit.is_zero() {
        tokio::time::sleep(commit).await;
    }
    let new: NewOrder = serde_json::from_slice(&body).expect("valid order");
    (
        StatusCode::CREATED,
        [("location", "/orders/1")],
        Json(Order {
            id: 1,
            item: new.item,
            quantity: new.quantity,
            note: new.note,
        }),
    )
}

/// The size of the order every benchmark sends unless told otherwise: 1 KiB of JSON, and
/// an answer of about the same size.
pub(crate) const BODY_BYTES: usize = 1024;

/// An order of exactly `bytes` bytes of JSON (at least 40), padded with its note.
pub(crate) fn order(bytes: usize) -> Bytes {
    let head = r#"{"item":"book","quantity":2,"note":""#;
    let tail = r#""}"#;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    Bytes::from(format!("{head}{}{tail}", "n".repeat(pad)))
}

/// The handler alone.
pub(crate) fn bare(commit: Duration) -> Router {
    Router::new()
        .route("/orders", post(create))
        .with_state(commit)
}

/// The handler behind the layer on the in-memory store.
pub(crate) fn layered(commit: Duration) -> Router {
    bare(commit).layer(IdempotencyLayer::new(evicting_store()))
}

/// The handler behind the layer on an in-memory store that holds at most `max_entries`
/// records (evicting the least recently used beyond them).
pub(crate) fn layered_holding(commit: Duration, max_entries: usize) -> Router {
    let store = MemoryStore::builder()
        .eviction(tower_idempotency::store::Eviction::LeastRecentlyUsed)
        .max_entries(max_entries)
        .build();
    bare(commit).layer(IdempotencyLayer::new(store))
}

/// Millions of fresh keys fill the store: with the default policy it would then refuse
/// them (a cheaper path, not the one measured), so evict as a long-running server whose
/// records expire would.
fn evicting_store() -> MemoryStore {
    MemoryStore::builder()
        .eviction(tower_idempotency::store::Eviction::LeastRecentlyUsed)
        .build()
}

/// The handler behind a layer that fingerprints the body as canonical JSON (parsed,
/// members sorted) instead of its bytes.
pub(crate) fn layered_canonical_json() -> Router {
    bare(Duration::ZERO).layer(IdempotencyLayer::new(evicting_store()).fingerprint_canonical_json())
}

/// The handler behind a layer that does nothing: what any layer costs in axum (a boxed,
/// cloned route and future), the floor under the pass-through figure.
pub(crate) fn noop_layered() -> Router {
    bare(Duration::ZERO).layer(tower::layer::layer_fn(|service| service))
}

/// Sends one order, with `key` as its idempotency key, and reads the response to the end.
pub(crate) async fn call(app: &Router, key: Option<String>, body: &Bytes) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let mut request = Request::post("/orders").header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.clone())).unwrap())
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.into_body().collect().await.unwrap();
}
