//! What the layer writes on the responses it touches: the replay markers.

use axum::{body::Body, http::Response, routing::post, Router};
use tower_idempotency::{protocol, IdempotencyLayer, MemoryStore};

use crate::support::{app, post_with_key, send, unique};

#[tokio::test]
async fn a_replay_carries_each_configured_marker_and_no_other() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .replay_headers([
            protocol::IDEMPOTENCY_REPLAYED,
            protocol::X_IDEMPOTENT_REPLAYED,
        ])
        .unwrap();
    let (app, counter) = app(layer);
    let key = unique("markers");
    let first = send(&app, post_with_key("/orders", &key, "{}")).await;
    for marker in protocol::REPLAY_MARKERS {
        assert!(
            first.headers.get(&marker).is_none(),
            "{marker} on a fresh answer"
        );
    }
    let retry = send(&app, post_with_key("/orders", &key, "{}")).await;
    assert_eq!(retry.body, first.body);
    assert_eq!(counter.runs(), 1);
    assert_eq!(retry.headers["idempotency-replayed"], "true");
    assert_eq!(retry.headers["x-idempotent-replayed"], "true");
    assert!(
        retry.headers.get("idempotent-replayed").is_none(),
        "renamed, not added"
    );
}

/// A marker the handler sets itself is never recorded: the fresh answer keeps what the
/// handler wrote, and a replay (here by a layer that marks replays with another header,
/// as after a rename) does not carry it.
#[tokio::test]
async fn a_marker_the_handler_sets_is_never_recorded() {
    let store = MemoryStore::new();
    let handler = || async {
        Response::builder()
            .status(201)
            .header("x-idempotent-replayed", "false")
            .body(Body::from("made"))
            .unwrap()
    };
    let recording = Router::new().route("/orders", post(handler)).layer(
        IdempotencyLayer::new(store.clone())
            .replay_headers([protocol::X_IDEMPOTENT_REPLAYED])
            .unwrap(),
    );
    let replaying = Router::new()
        .route("/orders", post(handler))
        .layer(IdempotencyLayer::new(store));
    let key = unique("handler-marker");
    let first = send(&recording, post_with_key("/orders", &key, "{}")).await;
    assert_eq!(first.headers["x-idempotent-replayed"], "false");
    let retry = send(&replaying, post_with_key("/orders", &key, "{}")).await;
    assert!(retry.replayed());
    assert_eq!(retry.body, "made");
    assert!(
        retry.headers.get("x-idempotent-replayed").is_none(),
        "the handler's marker was recorded"
    );
}

#[test]
fn a_layer_with_no_replay_marker_is_refused_when_built() {
    let Err(err) = IdempotencyLayer::new(MemoryStore::new()).replay_headers([]) else {
        panic!("a layer with no replay marker was built");
    };
    assert_eq!(err.knob(), "replay_headers");
    assert!(err.to_string().contains("mark a replay"), "{err}");
}
