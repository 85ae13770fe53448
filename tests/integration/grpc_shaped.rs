//! gRPC-shaped calls in process (no tonic: `grpc/tests` runs a real tonic client and
//! server): answers whose status comes after the message, in the trailers; handlers that
//! fail; which calls are protected.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, Request, Response, StatusCode},
    routing::post,
    Router,
};
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tower::{service_fn, ServiceExt};
use tower_idempotency::{IdempotencyLayer, MemoryStore, Outcome};

const CREATE: &str = "/orders.v1.Orders/CreateOrder";

/// A message, then trailers with `grpc-status` `code`: the first `fail_first` runs answer
/// `UNAVAILABLE` that way, the others `OK`.
async fn answer_after_message(
    State((runs, fail_first)): State<(Arc<AtomicUsize>, usize)>,
) -> Response<Body> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    let code = if run <= fail_first { "14" } else { "0" };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", code.parse().unwrap());
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from(format!("\0\0\0\0\x01{run}")))),
        Ok(Frame::trailers(trailers)),
    ];
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Body::new(StreamBody::new(stream::iter(frames))))
        .unwrap()
}

fn call(path: &str, key: Option<&str>) -> Request<Body> {
    let mut request = Request::post(path).header("content-type", "application/grpc+proto");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.body(Body::from(&b"\0\0\0\0\x02hi"[..])).unwrap()
}

/// The status, the `grpc-status` (from the trailers, else the headers), the outcome.
async fn send(
    app: &Router,
    request: Request<Body>,
) -> (StatusCode, Option<String>, Option<Outcome>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let outcome = response.extensions().get::<Outcome>().copied();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let code = collected
        .trailers()
        .unwrap_or(&headers)
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, code, outcome)
}

fn app(fail_first: usize, layer: IdempotencyLayer<MemoryStore>) -> (Router, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(CREATE, post(answer_after_message))
        .route("/orders.v1.Orders/WatchOrders", post(answer_after_message))
        .with_state((Arc::clone(&runs), fail_first))
        .layer(layer);
    (app, runs)
}

#[tokio::test]
async fn unavailable_in_the_trailers_releases_the_key() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .grpc_methods([CREATE])
        .unwrap();
    let (app, runs) = app(1, layer);
    let first = send(&app, call(CREATE, Some("g-1"))).await;
    assert_eq!(
        first,
        (StatusCode::OK, Some("14".into()), Some(Outcome::Released))
    );
    let second = send(&app, call(CREATE, Some("g-1"))).await;
    assert_eq!(
        second,
        (StatusCode::OK, Some("0".into()), Some(Outcome::Fresh))
    );
    let third = send(&app, call(CREATE, Some("g-1"))).await;
    assert_eq!(
        third,
        (StatusCode::OK, Some("0".into()), Some(Outcome::Replayed))
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_layer_that_names_no_grpc_method_sees_plain_http() {
    // It has no gRPC calls: `application/grpc` is one more content type, and its `200`
    // is recorded, trailers and all (name the methods to have it read `grpc-status`).
    let (app, runs) = app(1, IdempotencyLayer::new(MemoryStore::new()));
    let first = send(&app, call(CREATE, Some("g-2"))).await;
    assert_eq!(
        first,
        (StatusCode::OK, Some("14".into()), Some(Outcome::Fresh))
    );
    let second = send(&app, call(CREATE, Some("g-2"))).await;
    assert_eq!(
        second,
        (StatusCode::OK, Some("14".into()), Some(Outcome::Replayed))
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_too_large_to_keep_is_already_exists_to_the_retry() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .grpc_methods([CREATE])
        .unwrap()
        .max_response_body(2);
    let (app, runs) = app(0, layer);
    let first = send(&app, call(CREATE, Some("g-6"))).await;
    assert_eq!(
        first,
        (StatusCode::OK, Some("0".into()), Some(Outcome::Fresh))
    );
    let response = app
        .clone()
        .oneshot(call(CREATE, Some("g-6")))
        .await
        .unwrap();
    assert_eq!(
        response.headers()["grpc-status"],
        "6",
        "ALREADY_EXISTS: it ran"
    );
    let message = response.headers()["grpc-message"].to_str().unwrap();
    assert!(message.contains("will not run again"), "{message}");
    assert!(!message.contains("status 200"), "{message}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn named_by_a_predicate_and_whatever_the_http_methods() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .methods([Method::PATCH])
        .grpc_methods_matching(|path| path.ends_with("/CreateOrder"));
    let (app, runs) = app(0, layer);
    let (_, _, fresh) = send(&app, call(CREATE, Some("g-4"))).await;
    let (_, code, replay) = send(&app, call(CREATE, Some("g-4"))).await;
    assert_eq!(
        (fresh, replay),
        (Some(Outcome::Fresh), Some(Outcome::Replayed))
    );
    assert_eq!(code.as_deref(), Some("0"));
    // The stream the predicate does not accept passes through, keyed or not.
    for _ in 0..2 {
        let (_, _, outcome) = send(&app, call("/orders.v1.Orders/WatchOrders", Some("g-4"))).await;
        assert_eq!(outcome, None);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_handler_that_fails_is_recorded_as_unknown_and_never_runs_again() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let failing = service_fn(move |_: Request<_>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Err::<Response<Body>, _>(std::io::Error::other("the connection to the bank broke"))
        }
    });
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .grpc_methods([CREATE])
        .unwrap();
    let service = tower::ServiceBuilder::new().layer(layer).service(failing);
    let first = service.clone().oneshot(call(CREATE, Some("g-5"))).await;
    assert!(first.is_err(), "the error goes on up");
    let retry = service.oneshot(call(CREATE, Some("g-5"))).await.unwrap();
    assert_eq!(
        retry.status(),
        StatusCode::OK,
        "a gRPC answer, trailers only"
    );
    let headers = retry.headers();
    assert_eq!(
        headers["grpc-status"], "2",
        "UNKNOWN: it may have taken effect"
    );
    assert_eq!(
        headers["idempotency-problem"],
        "urn:tower-idempotency:problem:outcome-unknown"
    );
    assert!(headers.get("grpc-retry-pushback-ms").is_none());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A gRPC-Web call (plain HTTP to the layer, its status in the body) with a gRPC call's
/// key is a different request: a conflict, never the gRPC answer (its status in HTTP/2
/// trailers a gRPC-Web client cannot read) replayed to it.
#[tokio::test]
async fn a_grpc_web_call_with_a_grpc_calls_key_is_a_conflict() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .grpc_methods([CREATE])
        .unwrap();
    let (app, runs) = app(0, layer);
    let grpc = send(&app, call(CREATE, Some("g-web"))).await;
    assert_eq!(
        grpc,
        (StatusCode::OK, Some("0".into()), Some(Outcome::Fresh))
    );
    let mut web = call(CREATE, Some("g-web"));
    web.headers_mut().insert(
        "content-type",
        "application/grpc-web+proto".parse().unwrap(),
    );
    let (status, _, outcome) = send(&app, web).await;
    assert_eq!(
        (status, outcome),
        (StatusCode::CONFLICT, Some(Outcome::Conflict))
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // The gRPC call itself still replays.
    let again = send(&app, call(CREATE, Some("g-web"))).await;
    assert_eq!(again.2, Some(Outcome::Replayed));
}

/// A refusal to a gRPC call links its documentation as an HTTP refusal does (`link`
/// metadata), beside its problem type.
#[tokio::test]
async fn a_grpc_refusal_links_its_documentation() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .grpc_methods([CREATE])
        .unwrap();
    let (app, _) = app(0, layer);
    send(&app, call(CREATE, Some("g-doc"))).await;
    let mut other = call(CREATE, Some("g-doc"));
    *other.body_mut() = Body::from(&b"\0\0\0\0\x02no"[..]);
    let refused = app.clone().oneshot(other).await.unwrap();
    let headers = refused.headers();
    assert_eq!(
        headers["idempotency-problem"],
        "urn:tower-idempotency:problem:conflict"
    );
    let link = headers["link"].to_str().unwrap();
    assert!(
        link.starts_with('<') && link.contains("conflict") && link.ends_with("rel=\"describedby\""),
        "{link}"
    );
}
