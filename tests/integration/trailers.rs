//! Trailers through the layer: a request's trailers reach the handler after its
//! (buffered) body; a response's trailers are recorded and replayed after its body.

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, Request, StatusCode},
    routing::post,
    Router,
};
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use axum::{extract::State, response::Response};
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tower::ServiceExt;
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

/// Answers a body, then trailers (two values of one name, a binary value), counting its
/// runs.
async fn with_trailers(State(runs): State<Arc<AtomicUsize>>) -> Response {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.append("x-digest", format!("run-{run}").parse().unwrap());
    trailers.append(
        "x-digest",
        axum::http::HeaderValue::from_bytes(b"\xfeopaque").unwrap(),
    );
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"created"))),
        Ok(Frame::trailers(trailers)),
    ];
    Response::builder()
        .status(StatusCode::CREATED)
        // HTTP/1.1 sends only the trailers the response names.
        .header("trailer", "grpc-status, x-digest")
        .body(Body::new(StreamBody::new(stream::iter(frames))))
        .unwrap()
}

/// The body, the trailers and the outcome of one call.
async fn call(app: &Router, key: &str) -> (Bytes, Option<HeaderMap>, Option<Outcome>) {
    let request = Request::post("/create")
        .header("idempotency-key", key)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let outcome = response.extensions().get::<Outcome>().copied();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers, outcome)
}

#[tokio::test]
async fn response_trailers_are_recorded_and_replayed_byte_for_byte() {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/create", post(with_trailers))
        .with_state(Arc::clone(&runs))
        .layer(IdempotencyLayer::new(MemoryStore::new()));
    let (body, first, outcome) = call(&app, "tr-1").await;
    assert_eq!(outcome, Some(Outcome::Fresh));
    assert_eq!(body, "created");
    let first = first.expect("the first caller gets the trailers");
    let digests: Vec<_> = first
        .get_all("x-digest")
        .iter()
        .map(axum::http::HeaderValue::as_bytes)
        .collect();
    assert_eq!(digests, [&b"run-1"[..], &b"\xfeopaque"[..]]);
    for _ in 0..2 {
        let (body, replayed, outcome) = call(&app, "tr-1").await;
        assert_eq!(outcome, Some(Outcome::Replayed));
        assert_eq!(body, "created");
        assert_eq!(
            replayed.as_ref(),
            Some(&first),
            "the same trailers, in order"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Over HTTP/1.1 (loopback TCP, hyper on both ends), the trailers follow the chunked body,
/// on the first answer and on the replay; the `Trailer` header that names them is kept.
#[tokio::test]
async fn response_trailers_survive_http1_on_the_wire() {
    use hyper_util::{
        client::legacy::Client,
        rt::{TokioExecutor, TokioIo},
        service::TowerToHyperService,
    };

    let runs = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/create", post(with_trailers))
        .with_state(Arc::clone(&runs))
        .layer(IdempotencyLayer::new(MemoryStore::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let request = Request::post(format!("http://{addr}/create"))
            .header("idempotency-key", "tr-h1")
            .header("te", "trailers")
            .body(Body::empty())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["trailer"], "grpc-status, x-digest");
        assert!(
            response.headers().get("content-length").is_none(),
            "chunked"
        );
        let replayed = response.headers().contains_key("idempotent-replayed");
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers on the wire");
        answers.push((replayed, trailers, collected.to_bytes()));
    }
    server.abort();
    let (first, second) = (&answers[0], &answers[1]);
    assert_eq!((first.0, second.0), (false, true));
    assert_eq!(first.1, second.1);
    assert_eq!(first.1["grpc-status"], "0");
    let digests: Vec<_> = first.1.get_all("x-digest").iter().collect();
    assert_eq!(digests.len(), 2);
    assert_eq!(
        (&first.2[..], &second.2[..]),
        (&b"created"[..], &b"created"[..])
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
