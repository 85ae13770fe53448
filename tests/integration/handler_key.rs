//! The key in the handler (`IdempotencyKey`), and answers that say nothing was executed:
//! extractor rejections and `NotExecuted` release the key; a handler's own answers are
//! recorded.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use axum::{
    body::Body,
    extract::State,
    http::{Request, Response, StatusCode},
    response::IntoResponse,
    routing::{get, post},
    Extension, Router,
};
use serde::Deserialize;
use tower::ServiceExt;
use tower_idempotency::{
    axum::{Json, Path, ReleaseOnRejection},
    IdempotencyKey, IdempotencyLayer, MemoryStore, NotExecuted, Outcome,
};

use crate::support::{post_with_key, read, send, unique};

#[derive(Clone, Default)]
struct Runs(Arc<AtomicUsize>);

impl Runs {
    fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
}

async fn keyed(State(runs): State<Runs>, key: IdempotencyKey) -> String {
    runs.bump();
    serde_json::json!({ "key": key.as_str(), "charge": key.derive("charge") }).to_string()
}

async fn maybe_keyed(key: Option<IdempotencyKey>) -> String {
    key.map_or_else(|| "none".to_owned(), |key| key.as_str().to_owned())
}

async fn order(State(runs): State<Runs>, Json(order): Json<NewOrder>) -> impl IntoResponse {
    let n = runs.bump();
    (StatusCode::CREATED, Json(format!("{} #{n}", order.item)))
}

async fn plain_axum_order(
    State(runs): State<Runs>,
    axum::Json(order): axum::Json<NewOrder>,
) -> (StatusCode, String) {
    let n = runs.bump();
    (StatusCode::CREATED, format!("{} #{n}", order.item))
}

async fn path_order(State(runs): State<Runs>, Path(id): Path<u32>) -> String {
    format!("{id} #{}", runs.bump())
}

/// Refuses an order for an item it does not sell, before doing anything.
async fn checked_order(State(runs): State<Runs>, body: String) -> Response<Body> {
    if body.contains("unicorn") {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            NotExecuted,
            "not sold here",
        )
            .into_response();
    }
    let n = runs.bump();
    if body.contains("sold out") {
        // The handler did work (it reserved stock), then said no: recorded.
        return (StatusCode::CONFLICT, format!("sold out after run {n}")).into_response();
    }
    (StatusCode::CREATED, format!("run {n}")).into_response()
}

#[derive(Clone)]
struct Tenant(#[allow(dead_code)] String);

async fn tenant_order(
    State(runs): State<Runs>,
    ReleaseOnRejection(Extension(_tenant)): ReleaseOnRejection<Extension<Tenant>>,
) -> String {
    format!("run {}", runs.bump())
}

fn app() -> (Router, Runs, MemoryStore) {
    let store = MemoryStore::new();
    let runs = Runs::default();
    let layer = IdempotencyLayer::new(store.clone());
    let router = Router::new()
        .route("/keyed", post(keyed).get(keyed))
        .route("/maybe", post(maybe_keyed))
        .route("/orders", post(order))
        .route("/plain", post(plain_axum_order))
        .route("/orders/{id}", post(path_order))
        .route("/checked", post(checked_order))
        .route("/tenant", post(tenant_order))
        .layer(layer)
        .route("/unprotected", post(keyed))
        .with_state(runs.clone());
    (router, runs, store)
}

#[tokio::test]
async fn the_handler_gets_the_unquoted_key_and_stable_derived_keys() {
    let (app, runs, _) = app();
    let key = unique("handler-key");
    let first = send(&app, post_with_key("/keyed", &format!("\"{key}\""), "")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first.json()["key"],
        key.as_str(),
        "quoted and bare are one key"
    );
    let retry = send(&app, post_with_key("/keyed", &key, "")).await;
    assert!(retry.replayed(), "the bare spelling replays the quoted one");
    assert_eq!(retry.body, first.body);
    assert_eq!(runs.count(), 1);

    let other = send(&app, post_with_key("/keyed", &unique("other"), "")).await;
    assert_ne!(other.json()["charge"], first.json()["charge"]);
    assert_eq!(first.json()["charge"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn a_plain_tower_service_reads_the_key_from_the_extensions() {
    let service = tower::service_fn(
        |req: Request<tower_idempotency::RequestBody<Body>>| async move {
            let key = req.extensions().get::<IdempotencyKey>().cloned();
            Ok::<_, Infallible>(Response::new(Body::from(
                key.map_or("none".to_owned(), |k| k.as_str().to_owned()),
            )))
        },
    );
    let service = tower::ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new()))
        .service(service);
    let answer = read(
        service
            .oneshot(post_with_key("/", "tower-key", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.body, "tower-key");
}

#[tokio::test]
async fn the_key_extractor_rejects_clearly_and_is_never_recorded() {
    let (app, runs, store) = app();
    // The layer passes a request without a key on (it does not require one): the handler
    // that needs a key refuses it, and nothing is recorded.
    let no_key = Request::post("/keyed").body(Body::empty()).unwrap();
    send(&app, no_key)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid-key");
    // A key on a route with no layer, or a method the layer does not intercept: a setup
    // mistake, said as one.
    let key = unique("not-intercepted");
    let unprotected = send(&app, post_with_key("/unprotected", &key, "")).await;
    unprotected.assert_problem(StatusCode::INTERNAL_SERVER_ERROR, "not-intercepted");
    let get = Request::get("/keyed")
        .header("idempotency-key", &key)
        .body(Body::empty())
        .unwrap();
    send(&app, get)
        .await
        .assert_problem(StatusCode::INTERNAL_SERVER_ERROR, "not-intercepted");
    assert_eq!(runs.count(), 0);
    assert_eq!(store.stats().records, 0, "nothing was recorded");

    let optional = send(&app, Request::post("/maybe").body(Body::empty()).unwrap()).await;
    assert_eq!(optional.body, "none");
    let optional = send(&app, post_with_key("/maybe", "opt-key", "")).await;
    assert_eq!(optional.body, "opt-key");
}

#[tokio::test]
async fn a_json_rejection_releases_the_key_and_the_corrected_retry_runs() {
    let (app, runs, _) = app();
    let key = unique("json");
    let malformed = send(&app, post_with_key("/orders", &key, "{\"item\":")).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.outcome, Some(Outcome::NotExecuted));
    let wrong_type = Request::post("/orders")
        .header("idempotency-key", &key)
        .header("content-type", "text/plain")
        .body(Body::from("{\"item\":\"lamp\"}"))
        .unwrap();
    let wrong_type = send(&app, wrong_type).await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(wrong_type.outcome, Some(Outcome::NotExecuted));
    assert_eq!(runs.count(), 0);

    let corrected = send(&app, post_with_key("/orders", &key, "{\"item\":\"lamp\"}")).await;
    assert_eq!(corrected.status, StatusCode::CREATED, "{corrected:?}");
    assert_eq!(corrected.body, "\"lamp #1\"");
    let retry = send(&app, post_with_key("/orders", &key, "{\"item\":\"lamp\"}")).await;
    assert!(retry.replayed());
    assert_eq!(runs.count(), 1);
}

/// Why the drop-ins exist: axum's own `Json` rejection carries no mark, so it is recorded
/// like any answer, and the corrected retry with the same key is a conflict.
#[tokio::test]
async fn axums_own_json_rejection_is_recorded() {
    let (app, runs, _) = app();
    let key = unique("plain-json");
    let malformed = send(&app, post_with_key("/plain", &key, "{\"item\":")).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.outcome, Some(Outcome::Fresh));
    send(&app, post_with_key("/plain", &key, "{\"item\":\"lamp\"}"))
        .await
        .assert_problem(StatusCode::CONFLICT, "conflict");
    assert_eq!(runs.count(), 0);
}

#[tokio::test]
async fn path_and_any_extractor_rejections_release_the_key() {
    let (app, runs, _) = app();
    let key = unique("path");
    let bad = send(&app, post_with_key("/orders/not-a-number", &key, "")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.outcome, Some(Outcome::NotExecuted));
    let good = send(&app, post_with_key("/orders/7", &key, "")).await;
    assert_eq!(good.outcome, Some(Outcome::Fresh), "{good:?}");

    let key = unique("tenant");
    let missing = send(&app, post_with_key("/tenant", &key, "")).await;
    assert_eq!(missing.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(missing.outcome, Some(Outcome::NotExecuted));
    assert_eq!(runs.count(), 1);
}

#[tokio::test]
async fn not_executed_releases_but_a_deliberate_answer_after_work_is_recorded() {
    let (app, runs, _) = app();
    let key = unique("checked");
    let refused = send(&app, post_with_key("/checked", &key, "unicorn")).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.outcome, Some(Outcome::NotExecuted));
    let same_again = send(&app, post_with_key("/checked", &key, "unicorn")).await;
    assert_eq!(
        same_again.outcome,
        Some(Outcome::NotExecuted),
        "released, not replayed"
    );
    let fixed = send(&app, post_with_key("/checked", &key, "lamp")).await;
    assert_eq!(fixed.status, StatusCode::CREATED);
    assert_eq!(runs.count(), 1);

    let key = unique("sold-out");
    let sold_out = send(&app, post_with_key("/checked", &key, "sold out")).await;
    assert_eq!(sold_out.status, StatusCode::CONFLICT);
    assert_eq!(sold_out.outcome, Some(Outcome::Fresh));
    let retry = send(&app, post_with_key("/checked", &key, "sold out")).await;
    assert!(
        retry.replayed(),
        "a 4xx after the handler did work is recorded"
    );
    assert_eq!(retry.body, sold_out.body);
    assert_eq!(runs.count(), 2);
}

#[tokio::test]
async fn the_key_extractor_needs_no_state_and_works_on_get_routes_without_a_layer() {
    // Compile-time check that the extractor works in any router state, and at runtime
    // that a GET (not intercepted by default) gets the clear setup error.
    let app: Router = Router::new().route("/", get(maybe_keyed));
    let answer = send(&app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.body, "none");
}
