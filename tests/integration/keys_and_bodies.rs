//! Key validation and body limits.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    http::{HeaderValue, Method, Request, StatusCode},
};
use bytes::Bytes;
use http_body::Frame;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_idempotency::{IdempotencyLayer, MemoryStore, Outcome};

use crate::support::{app, post_with_key, read, send, unique};

#[tokio::test]
async fn invalid_keys_are_refused_and_never_run() {
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()));
    let bad: Vec<HeaderValue> = vec![
        HeaderValue::from_static(""),
        HeaderValue::from_str(&"k".repeat(256)).unwrap(),
        HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
        HeaderValue::from_static("tab\there"),
        HeaderValue::from_static("with space"),
        HeaderValue::from_static("\"\""),
    ];
    for value in bad {
        let mut request = post_with_key("/orders", "placeholder", "{}");
        request
            .headers_mut()
            .insert("idempotency-key", value.clone());
        let answer = send(&app, request).await;
        answer.assert_problem(StatusCode::BAD_REQUEST, "invalid-key");
        assert_eq!(answer.outcome, Some(Outcome::InvalidKey), "{value:?}");
    }
    let mut repeated = post_with_key("/orders", "a", "{}");
    repeated
        .headers_mut()
        .append("idempotency-key", HeaderValue::from_static("a"));
    send(&app, repeated)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid-key");
    assert_eq!(counter.runs(), 0);
}

#[tokio::test]
async fn a_255_byte_key_and_a_quoted_key_are_accepted() {
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()));
    let long = "k".repeat(255);
    assert_eq!(
        send(&app, post_with_key("/orders", &long, "{}"))
            .await
            .status,
        StatusCode::CREATED
    );
    let key = unique("sf");
    send(&app, post_with_key("/orders", &format!("\"{key}\""), "{}")).await;
    // The quoted and bare spellings name the same key.
    assert!(send(&app, post_with_key("/orders", &key, "{}"))
        .await
        .replayed());
    assert_eq!(counter.runs(), 2);
}

#[tokio::test]
async fn the_header_name_is_configurable() {
    let layer =
        IdempotencyLayer::new(MemoryStore::new()).header_name("x-request-id".parse().unwrap());
    let (app, counter) = app(layer);
    let request = || {
        Request::post("/orders")
            .header("x-request-id", "r-1")
            .body(Body::from("x"))
            .unwrap()
    };
    send(&app, request()).await;
    assert!(send(&app, request()).await.replayed());
    assert_eq!(counter.runs(), 1);
}

/// A client that sends `Idempotency-Key` to a route that reads `x-payment-key` is told
/// which header to send, not only that "an idempotency key header" is required.
#[tokio::test]
async fn a_missing_or_repeated_key_names_the_configured_header() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .header_name("x-payment-key".parse().unwrap())
        .require_key(true);
    let (app, counter) = app(layer);
    let missing = send(
        &app,
        post_with_key("/orders", &unique("wrong-header"), "{}"),
    )
    .await;
    missing.assert_problem(StatusCode::BAD_REQUEST, "invalid-key");
    let detail = missing.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.starts_with("this endpoint requires the X-Payment-Key header"),
        "{detail}"
    );
    let repeated = Request::post("/orders")
        .header("x-payment-key", "a")
        .header("x-payment-key", "b")
        .body(Body::from("{}"))
        .unwrap();
    let repeated = send(&app, repeated).await;
    repeated.assert_problem(StatusCode::BAD_REQUEST, "invalid-key");
    let detail = repeated.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.starts_with("the X-Payment-Key header was given more than once"),
        "{detail}"
    );
    assert_eq!(counter.runs(), 0);
}

#[tokio::test]
async fn an_oversized_request_is_413_and_never_runs() {
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()).max_request_body(1024));
    let key = unique("big-request");
    let declared = post_with_key("/orders", &key, &"x".repeat(2048));
    send(&app, declared)
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large");
    // Without a content-length, the limit is found while reading.
    let chunks = futures_util::stream::iter(
        (0..3).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 700]))),
    );
    let streamed = Request::post("/orders")
        .header("idempotency-key", &key)
        .body(Body::from_stream(chunks))
        .unwrap();
    let answer = send(&app, streamed).await;
    answer.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large");
    assert_eq!(answer.outcome, Some(Outcome::TooLarge));
    assert_eq!(counter.runs(), 0);
    // Nothing was stored: the same key with a small body runs.
    assert_eq!(
        send(&app, post_with_key("/orders", &key, "small"))
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_request_body_that_fails_is_400() {
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()));
    let chunks = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("connection reset")),
    ]);
    let request = Request::post("/orders")
        .header("idempotency-key", unique("broken"))
        .body(Body::from_stream(chunks))
        .unwrap();
    send(&app, request)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "body-unreadable");
    assert_eq!(counter.runs(), 0);
}

#[tokio::test]
async fn an_oversized_response_is_delivered_once_and_never_run_again() {
    let layer = IdempotencyLayer::new(MemoryStore::new()).max_response_body(1024);
    let (app, counter) = app(layer);
    let key = unique("big-response");
    let first = send(&app, post_with_key("/big/5000", &key, "")).await;
    assert_eq!(first.status, StatusCode::OK);
    let expected: Vec<u8> = (0..5000).map(|i| (i % 251) as u8).collect();
    assert_eq!(first.body, expected, "the whole body reaches the client");
    assert_eq!(first.outcome, Some(Outcome::Fresh));

    let retry = send(&app, post_with_key("/big/5000", &key, "")).await;
    retry.assert_problem(StatusCode::CONFLICT, "response-not-stored");
    assert_eq!(retry.json()["original_status"], 200);
    assert_eq!(counter.runs(), 1);
    // Within the limit, the body is stored.
    let key = unique("small-response");
    send(&app, post_with_key("/big/1000", &key, "")).await;
    assert!(send(&app, post_with_key("/big/1000", &key, ""))
        .await
        .replayed());
}

/// A body that never yields: buffering it would hang.
struct Endless;

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn passed_through_requests_are_not_buffered() {
    let layer = IdempotencyLayer::new(MemoryStore::new());
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_req: Request<_>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                Bytes::from_static(b"ok"),
            )))
        }));
    let requests = [
        Request::get("/")
            .header("idempotency-key", "k")
            .body(Endless)
            .unwrap(),
        Request::put("/")
            .header("idempotency-key", "k")
            .body(Endless)
            .unwrap(),
        Request::delete("/")
            .header("idempotency-key", "k")
            .body(Endless)
            .unwrap(),
        Request::post("/").body(Endless).unwrap(),
        Request::builder()
            .method(Method::PATCH)
            .uri("/")
            .body(Endless)
            .unwrap(),
    ];
    for request in requests {
        let method = request.method().clone();
        let response = tokio::time::timeout(Duration::from_secs(5), svc.clone().oneshot(request))
            .await
            .unwrap_or_else(|_| panic!("{method} was buffered"))
            .unwrap();
        let answer = read(response).await;
        assert_eq!(answer.body, "ok");
        assert_eq!(answer.outcome, None);
    }
}
