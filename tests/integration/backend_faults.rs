//! The failure rows on the real servers: the mechanism is shared, these show it holds
//! where the store is remote.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{http::StatusCode, routing::post, Router};
use tower_idempotency::{IdempotencyLayer, MemoryStore};

use crate::{
    backends::{store, Backend},
    faulty_store::{Faults, FaultyStore},
    support::{eventually, post_with_key, routes, send, unique, Counter},
};

/// The store blips once while the response is recorded: retried, replayed, run once.
pub(crate) async fn a_completion_blip_is_retried_and_replays<B: Backend>(url: &str) {
    let faulty = FaultyStore::new(store::<B>(url).await);
    Faults::arm(&faulty.faults.failing_completes, 1);
    let layer = IdempotencyLayer::new(faulty);
    let metrics = layer.metrics();
    let counter = Counter::default();
    let app = routes(counter.clone()).layer(layer);
    let key = unique("backend-blip");
    assert_eq!(
        send(&app, post_with_key("/orders", &key, "{}"))
            .await
            .status,
        StatusCode::CREATED
    );
    eventually("the retried completion replays", async || {
        send(&app, post_with_key("/orders", &key, "{}"))
            .await
            .replayed()
    })
    .await;
    assert_eq!(counter.runs(), 1);
    assert_eq!(metrics.completion_retries(), 1);
}

/// The claim lands but its reply is lost: 503, cleaned up, the retry runs once.
pub(crate) async fn a_lost_claim_reply_is_cleaned_up<B: Backend>(url: &str) {
    let faulty = FaultyStore::new(store::<B>(url).await);
    Faults::arm(&faulty.faults.lost_begin_replies, 1);
    let counter = Counter::default();
    let app = routes(counter.clone()).layer(IdempotencyLayer::new(faulty));
    let key = unique("backend-lost-claim");
    send(&app, post_with_key("/orders", &key, "{}"))
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
    eventually("the retry runs", async || {
        send(&app, post_with_key("/orders", &key, "{}"))
            .await
            .status
            == StatusCode::CREATED
    })
    .await;
    assert_eq!(counter.runs(), 1);
}

/// Two instances, each with a router-wide layer on its own `MemoryStore`, and the payment
/// route's layer on this shared backend: the charge runs once.
pub(crate) async fn nested_layers_share_the_backend<B: Backend>(url: &str) {
    let runs = Arc::new(AtomicUsize::new(0));
    let mut instances = Vec::new();
    for _ in 0..2 {
        let runs = Arc::clone(&runs);
        let payments = IdempotencyLayer::new(store::<B>(url).await).require_key(true);
        instances.push(
            Router::new()
                .route(
                    "/pay",
                    post(move || {
                        let runs = Arc::clone(&runs);
                        async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            (StatusCode::CREATED, "charged")
                        }
                    })
                    .layer(payments),
                )
                .layer(IdempotencyLayer::new(MemoryStore::new())),
        );
    }
    let key = unique("backend-nested");
    let sends = instances
        .iter()
        .map(|app| send(app, post_with_key("/pay", &key, "")));
    let answers = futures_util::future::join_all(sends).await;
    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{answers:?}");
    eventually("the other instance replays the charge", async || {
        send(&instances[1], post_with_key("/pay", &key, ""))
            .await
            .replayed()
    })
    .await;
    assert!(send(&instances[0], post_with_key("/pay", &key, ""))
        .await
        .replayed());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
