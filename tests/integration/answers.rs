//! What the layer writes on the responses it touches: the replay markers, the links from
//! its problem answers to their documentation, and the app's own rendering of them.

use axum::{
    body::Body,
    http::{header, Request, Response, StatusCode},
    routing::post,
    Router,
};
use bytes::Bytes;
use tower_idempotency::{protocol, IdempotencyLayer, MemoryStore, Outcome, ProblemDetails};

use crate::support::{app, post_with_key, send, unique, Answer};

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

    // Nor under the default marker: a peer's marker the handler set is not recorded
    // either (a client reads any of them as "replayed").
    let key = unique("handler-marker-default");
    send(&replaying, post_with_key("/orders", &key, "{}")).await;
    let retry = send(&replaying, post_with_key("/orders", &key, "{}")).await;
    assert!(retry.replayed());
    assert!(retry.headers.get("x-idempotent-replayed").is_none());
}

#[test]
fn a_layer_with_no_replay_marker_is_refused_when_built() {
    let Err(err) = IdempotencyLayer::new(MemoryStore::new()).replay_headers([]) else {
        panic!("a layer with no replay marker was built");
    };
    assert_eq!(err.knob(), "replay_headers");
    assert!(err.to_string().contains("mark a replay"), "{err}");
}

/// The layer's in-progress answer while `/slow` runs with `key` under `app`; the first
/// request is let finish before this returns.
async fn in_progress_answer(app: &Router, counter: &crate::support::Counter) -> Answer {
    let key = unique("in-progress");
    let started = counter.started.notified();
    let first = tokio::spawn({
        let (app, key) = (app.clone(), key.clone());
        async move { send(&app, post_with_key("/slow", &key, "x")).await }
    });
    started.await;
    let answer = send(app, post_with_key("/slow", &key, "x")).await;
    counter.gate.add_permits(1);
    first.await.unwrap();
    answer
}

#[tokio::test]
async fn every_problem_answer_links_to_its_documentation() {
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()));
    let answer = in_progress_answer(&app, &counter).await;
    answer.assert_problem(StatusCode::CONFLICT, "in-progress");
    let link = answer.headers[header::LINK].to_str().unwrap();
    assert_eq!(
        link,
        format!(
            "<{}in-progress>; rel=\"describedby\"",
            protocol::PROBLEM_DOCS
        )
    );
    assert!(
        link.contains("https://docs.rs/tower-idempotency/"),
        "{link}"
    );

    let bad_key = send(&app, post_with_key("/orders", "", "{}")).await;
    bad_key.assert_problem(StatusCode::BAD_REQUEST, "invalid-key");
    assert!(bad_key.headers[header::LINK]
        .to_str()
        .unwrap()
        .contains("problems/index.html#invalid-key>"));
}

#[tokio::test]
async fn the_documentation_base_is_configurable_or_left_out() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .problem_docs("https://api.example.com/errors/")
        .unwrap();
    let (linked, _) = app(layer);
    let answer = send(&linked, post_with_key("/orders", "", "{}")).await;
    answer.assert_problem(StatusCode::BAD_REQUEST, "invalid-key");
    assert_eq!(
        answer.headers[header::LINK],
        "<https://api.example.com/errors/invalid-key>; rel=\"describedby\""
    );

    let (unlinked, _) = app(IdempotencyLayer::new(MemoryStore::new()).without_problem_docs());
    let answer = send(&unlinked, post_with_key("/orders", "", "{}")).await;
    answer.assert_problem(StatusCode::BAD_REQUEST, "invalid-key");
    assert!(answer.headers.get(header::LINK).is_none());

    for bad in [
        "",
        "errors/",
        "no-scheme",
        "https://x.example/a b#",
        "https://x/<a>#",
        "https://x.example/errors",
    ] {
        let Err(err) = IdempotencyLayer::new(MemoryStore::new()).problem_docs(bad) else {
            panic!("{bad:?} was taken as a documentation base");
        };
        assert_eq!(err.knob(), "problem_docs");
    }
}

/// The app's own envelope, without `Retry-After`: the layer adds it.
fn envelope(problem: &ProblemDetails) -> Response<Bytes> {
    let body = serde_json::json!({
        "error": {
            "code": problem.problem_type().slug(),
            "message": problem.detail(),
            "docs": problem.documentation(),
        }
    });
    Response::builder()
        .status(problem.status())
        .header(header::CONTENT_TYPE, "application/vnd.example.error+json")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn the_apps_hook_renders_every_refusal_and_keeps_retry_after() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .require_key(true)
        .problem_response(envelope);
    let (app, counter) = app(layer);

    let answer = in_progress_answer(&app, &counter).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(
        answer.headers[header::CONTENT_TYPE],
        "application/vnd.example.error+json"
    );
    assert_eq!(answer.json()["error"]["code"], "in-progress");
    assert_eq!(
        answer.headers[header::RETRY_AFTER],
        "1",
        "the contract's Retry-After"
    );
    assert!(answer.headers[header::LINK]
        .to_str()
        .unwrap()
        .ends_with("#in-progress>; rel=\"describedby\""));

    let missing = send(
        &app,
        Request::post("/orders").body(Body::from("{}")).unwrap(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.json()["error"]["code"], "invalid-key");
    assert!(missing.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
    assert_eq!(missing.outcome, Some(Outcome::InvalidKey));
    assert_eq!(counter.runs(), 1, "only the first /slow ran");
}

/// The `500` recorded for a handler that panicked is the hook's rendering, and so is its
/// replay: the same bytes, the handler not run again.
#[tokio::test]
async fn a_recorded_failure_is_rendered_by_the_hook_and_replayed_as_it_was() {
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()).problem_response(envelope));
    let key = unique("hook-failure");
    let panicked = tokio::spawn({
        let app = app.clone();
        let key = key.clone();
        async move { send(&app, post_with_key("/panic", &key, "{}")).await }
    })
    .await;
    assert!(panicked.is_err(), "the handler's panic reaches the caller");
    let retry = send(&app, post_with_key("/panic", &key, "{}")).await;
    assert!(retry.replayed());
    assert_eq!(retry.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(retry.json()["error"]["code"], "outcome-unknown");
    assert_eq!(
        retry.headers[header::CONTENT_TYPE],
        "application/vnd.example.error+json"
    );
    assert_eq!(counter.runs(), 1);
}

/// A hook cannot change what clients act on: the status is the contract's, and
/// `Retry-After` is sent exactly where the contract gives one (a conflict that carried
/// one would be retried by clients as "in progress").
#[tokio::test]
async fn the_hook_cannot_change_the_status_or_retry_after() {
    let layer = IdempotencyLayer::new(MemoryStore::new()).problem_response(|problem| {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::RETRY_AFTER, "3600")
            .body(Bytes::from(problem.problem_type().slug()))
            .unwrap()
    });
    let (app, counter) = app(layer);
    let key = unique("hook-status");
    send(&app, post_with_key("/orders", &key, r#"{"item":"book"}"#)).await;
    let conflict = send(&app, post_with_key("/orders", &key, r#"{"item":"pen"}"#)).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.body, "conflict");
    assert!(conflict.headers.get(header::RETRY_AFTER).is_none());

    let in_progress = in_progress_answer(&app, &counter).await;
    assert_eq!(in_progress.status, StatusCode::CONFLICT);
    assert_eq!(in_progress.headers[header::RETRY_AFTER], "1");
}

/// A hook that panics while the layer records a failed handler's `500` must not free the
/// key: the default rendering is recorded instead, and the retry replays it.
#[tokio::test]
async fn a_panicking_hook_still_records_the_failure() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .problem_response(|_| panic!("the app's error hook is broken"));
    let (app, counter) = app(layer);
    let key = unique("panicking-hook");
    let panicked = tokio::spawn({
        let (app, key) = (app.clone(), key.clone());
        async move { send(&app, post_with_key("/panic", &key, "{}")).await }
    })
    .await;
    assert!(panicked.is_err(), "the handler's panic reaches the caller");
    let retry = send(&app, post_with_key("/panic", &key, "{}")).await;
    assert!(retry.replayed());
    retry.assert_problem(StatusCode::INTERNAL_SERVER_ERROR, "outcome-unknown");
    assert_eq!(counter.runs(), 1, "the failed write was not run again");
}

/// With `advertise_expiry`, the fresh answer says until when its record is kept (now
/// plus the TTL, rounded down), and every replay says the same; by default neither does.
#[tokio::test]
async fn the_records_expiry_is_advertised_when_asked_for() {
    let (plain, _) = app(IdempotencyLayer::new(MemoryStore::new()));
    let key = unique("no-expiry");
    for _ in 0..2 {
        let answer = send(&plain, post_with_key("/orders", &key, "{}")).await;
        assert!(answer.headers.get(protocol::IDEMPOTENCY_EXPIRES).is_none());
    }

    let ttl = std::time::Duration::from_secs(3600);
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .ttl(ttl)
        .unwrap()
        .advertise_expiry(true);
    let (app, counter) = app(layer);
    let key = unique("expiry");
    let before = std::time::SystemTime::now();
    let first = send(&app, post_with_key("/orders", &key, "{}")).await;
    let after = std::time::SystemTime::now();
    let advertised = first.headers[protocol::IDEMPOTENCY_EXPIRES]
        .to_str()
        .unwrap();
    let expires = httpdate::parse_http_date(advertised).unwrap();
    assert!(
        expires + std::time::Duration::from_secs(1) > before + ttl && expires <= after + ttl,
        "{advertised} is not the completion time plus the TTL"
    );
    let retry = send(&app, post_with_key("/orders", &key, "{}")).await;
    assert!(retry.replayed());
    assert_eq!(retry.headers[protocol::IDEMPOTENCY_EXPIRES], advertised);
    assert_eq!(counter.runs(), 1);

    // The 500 recorded for a failed handler says it too.
    let failed = unique("expiry-failed");
    let _ = tokio::spawn({
        let (app, failed) = (app.clone(), failed.clone());
        async move { send(&app, post_with_key("/panic", &failed, "{}")).await }
    })
    .await;
    let replayed_failure = send(&app, post_with_key("/panic", &failed, "{}")).await;
    assert_eq!(replayed_failure.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(replayed_failure
        .headers
        .contains_key(protocol::IDEMPOTENCY_EXPIRES));
}
