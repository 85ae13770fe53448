//! The layer type-checks and behaves wherever a tower layer goes.

use std::convert::Infallible;

use axum::{
    body::Body,
    http::{Request, Response, StatusCode},
    routing::{patch, post},
    Router,
};
use bytes::Bytes;
use http_body_util::Full;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_idempotency::{
    Idempotency, IdempotencyLayer, MemoryStore, RequestBody, ResponseBody, ResponseFuture,
};

use crate::support::{post_with_key, read, send, unique};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

#[test]
fn public_types_are_send_and_sync() {
    assert_send_sync::<IdempotencyLayer<MemoryStore>>();
    assert_send_sync::<Idempotency<Router, MemoryStore>>();
    assert_send_sync::<RequestBody<Full<Bytes>>>();
    assert_send_sync::<ResponseBody<Full<Bytes>>>();
    assert_send::<RequestBody<Body>>();
    assert_send::<ResponseBody<Body>>();
    assert_send::<
        ResponseFuture<<Router as tower::Service<Request<Body>>>::Future, Body, Infallible>,
    >();
    assert_send_sync::<tower_idempotency::Metrics>();
}

#[tokio::test]
async fn per_route_configuration_with_method_router_and_route_layer() {
    let store = MemoryStore::new();
    let required = IdempotencyLayer::new(store.clone()).require_key(true);
    let optional = IdempotencyLayer::new(store.clone());
    let app = Router::new()
        .route(
            "/payments",
            post(|| async { (StatusCode::CREATED, "paid") }).layer(required),
        )
        .route("/profile", patch(|| async { "patched" }))
        .route_layer(optional);

    let without_key = || Request::post("/payments").body(Body::empty()).unwrap();
    send(&app, without_key())
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid-key");
    let key = unique("pay");
    assert_eq!(
        send(&app, post_with_key("/payments", &key, ""))
            .await
            .status,
        StatusCode::CREATED
    );
    assert!(send(&app, post_with_key("/payments", &key, ""))
        .await
        .replayed());

    let profile = |key: Option<&str>| {
        let mut builder = Request::patch("/profile");
        if let Some(key) = key {
            builder = builder.header("idempotency-key", key);
        }
        builder.body(Body::empty()).unwrap()
    };
    assert_eq!(
        send(&app, profile(None)).await.status,
        StatusCode::OK,
        "key optional here"
    );
    let key = unique("profile");
    send(&app, profile(Some(&key))).await;
    assert!(send(&app, profile(Some(&key))).await.replayed());
    // route_layer does not touch unmatched routes.
    assert_eq!(
        send(&app, Request::post("/missing").body(Body::empty()).unwrap())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn service_builder_around_any_service() {
    let svc = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new()))
        .service(service_fn(
            |req: Request<RequestBody<Full<Bytes>>>| async move {
                let body = http_body_util::BodyExt::collect(req.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                    "got {} bytes",
                    body.len()
                )))))
            },
        ));
    let request = || {
        Request::post("/")
            .header("idempotency-key", "sb")
            .body(Full::new(Bytes::from_static(b"12345")))
            .unwrap()
    };
    let first = read(svc.clone().oneshot(request()).await.unwrap()).await;
    assert_eq!(first.body, "got 5 bytes");
    let retry = read(svc.clone().oneshot(request()).await.unwrap()).await;
    assert!(retry.replayed());
    assert_eq!(retry.body, "got 5 bytes");
}

#[tokio::test]
async fn idempotency_service_accessors() {
    let layer = IdempotencyLayer::new(MemoryStore::new());
    let mut svc = tower::Layer::layer(&layer, 7_u8);
    assert_eq!(*svc.get_ref(), 7);
    *svc.get_mut() = 8;
    assert_eq!(svc.into_inner(), 8);
}
