//! Trailers through the layer: a request's trailers reach the handler after its
//! (buffered) body.

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, Request, StatusCode},
    routing::post,
    Router,
};
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tower_idempotency::{IdempotencyLayer, MemoryStore, Outcome};

use crate::support::send;

/// Answers with the body it read and the `x-checksum` trailer it got.
async fn echo_trailer(body: Body) -> (StatusCode, String) {
    let collected = body.collect().await.unwrap();
    let trailer = collected
        .trailers()
        .and_then(|t| t.get("x-checksum"))
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| "none".to_owned());
    let data = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
    (StatusCode::CREATED, format!("{data} checksum={trailer}"))
}

fn with_trailer(key: Option<&str>) -> Request<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc123".parse().unwrap());
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"payload"))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut request = Request::post("/upload");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request
        .body(Body::new(StreamBody::new(stream::iter(frames))))
        .unwrap()
}

#[tokio::test]
async fn request_trailers_reach_the_handler() {
    let app = Router::new()
        .route("/upload", post(echo_trailer))
        .layer(IdempotencyLayer::new(MemoryStore::new()));
    // Intercepted (buffered for the fingerprint): the trailers follow the bytes.
    let claimed = send(&app, with_trailer(Some("up-1"))).await;
    assert_eq!(claimed.outcome, Some(Outcome::Fresh));
    assert_eq!(claimed.body, "payload checksum=abc123");
    // Passed through (streamed): as they came.
    let streamed = send(&app, with_trailer(None)).await;
    assert_eq!(streamed.body, "payload checksum=abc123");
    // The retry is replayed: the trailers are not part of the fingerprint.
    let retry = send(&app, with_trailer(Some("up-1"))).await;
    assert!(retry.replayed());
}
