//! The client layer against the real server layer over real TCP.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::{Request, Response, StatusCode},
    routing::post,
    Router,
};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
use tower_idempotency::{
    client::{AttemptResult, ClientOutcome, IdempotencyClient, IdempotencyClientLayer},
    IdempotencyLayer, MemoryStore,
};

use crate::support::read;

/// What the server saw.
#[derive(Clone, Default)]
pub(crate) struct Seen {
    /// The key of every request that reached the server.
    pub(crate) keys: Keys,
    /// Handler executions.
    pub(crate) runs: Arc<AtomicUsize>,
    /// The handler answers 503 while this is above zero (and counts it down).
    pub(crate) unavailable: Arc<AtomicUsize>,
    /// The connection is closed instead of answering, after the handler ran, while this is
    /// above zero (and counts it down): the lost-response case.
    pub(crate) drop_responses: Arc<AtomicUsize>,
}

fn count_down(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn order(State(seen): State<Seen>, body: Bytes) -> (StatusCode, String) {
    let run = seen.runs.fetch_add(1, Ordering::SeqCst) + 1;
    if count_down(&seen.unavailable) {
        return (StatusCode::SERVICE_UNAVAILABLE, "try later".to_owned());
    }
    if body.starts_with(b"fail") {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed run {run}"),
        );
    }
    if body.starts_with(b"invalid") {
        return (StatusCode::UNPROCESSABLE_ENTITY, "invalid order".to_owned());
    }
    if body.starts_with(b"slow") {
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    (
        StatusCode::CREATED,
        format!("order {run}: {}", String::from_utf8_lossy(&body)),
    )
}

/// A hyper server on loopback: the idempotency layer around the order handler, behind a
/// wrapper that records keys and can lose responses.
pub(crate) async fn server(seen: Seen) -> SocketAddr {
    let app = Router::new()
        .route("/orders", post(order))
        .with_state(seen.clone())
        .layer(IdempotencyLayer::new(MemoryStore::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (app, seen) = (app.clone(), seen.clone());
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (app, seen) = (app.clone(), seen.clone());
                async move {
                    let key = req
                        .headers()
                        .get("idempotency-key")
                        .map(|k| k.to_str().unwrap().to_owned());
                    seen.keys.lock().unwrap().push(key);
                    let response = app.oneshot(req).await?;
                    if count_down(&seen.drop_responses) {
                        // Committed, and the response is lost: hyper closes the connection.
                        return Err::<_, BoxError>("response lost".into());
                    }
                    Ok(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
            );
        }
    });
    addr
}

type HttpClient = IdempotencyClient<Client<HttpConnector, Full<Bytes>>>;

fn client(layer: IdempotencyClientLayer) -> HttpClient {
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    ServiceBuilder::new()
        .layer(layer.backoff(Duration::from_millis(1), Duration::from_millis(5)))
        .service(http)
}

async fn send_order(
    client: &mut HttpClient,
    addr: SocketAddr,
    body: &str,
    key: Option<&str>,
) -> (crate::support::Answer, ClientOutcome) {
    let mut request = Request::post(format!("http://{addr}/orders"));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = ServiceExt::<Request<Full<Bytes>>>::ready(client)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap();
    let outcome = response
        .extensions()
        .get::<ClientOutcome>()
        .unwrap()
        .clone();
    (read(response).await, outcome)
}

#[tokio::test]
async fn a_lost_response_is_retried_with_the_same_key_and_replayed() {
    let seen = Seen::default();
    seen.drop_responses.store(1, Ordering::SeqCst);
    let addr = server(seen.clone()).await;
    let mut client = client(IdempotencyClientLayer::new());
    let (answer, outcome) = send_order(&mut client, addr, "one lamp", None).await;

    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.body, "order 1: one lamp", "the original response");
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1, "exactly one order");
    assert_eq!(outcome.attempts.len(), 2);
    assert!(matches!(
        outcome.attempts[0].result,
        AttemptResult::TransportError(_)
    ));
    assert!(outcome.replayed);
    let keys = seen.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "one key for the call");
    assert_eq!(keys[0], outcome.key);
    uuid::Uuid::parse_str(keys[0].as_deref().unwrap()).expect("a UUID key");
}

#[tokio::test]
async fn two_503s_then_success_take_three_attempts_with_one_key() {
    let seen = Seen::default();
    seen.unavailable.store(2, Ordering::SeqCst);
    let addr = server(seen.clone()).await;
    let mut client = client(IdempotencyClientLayer::new());
    let (answer, outcome) = send_order(&mut client, addr, "desk", None).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(outcome.attempts.len(), 3);
    assert!(!outcome.replayed);
    let keys = seen.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| *k == keys[0] && k.is_some()));
    // Each 503 released the key on the server, so each attempt ran.
    assert_eq!(seen.runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_conflict_or_a_422_is_not_retried() {
    let seen = Seen::default();
    let addr = server(seen.clone()).await;
    let mut client = client(IdempotencyClientLayer::new());
    let (first, _) = send_order(&mut client, addr, "chair", Some("order-17")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let (conflict, outcome) = send_order(&mut client, addr, "table", Some("order-17")).await;
    conflict.assert_problem(StatusCode::CONFLICT, "conflict");
    assert_eq!(outcome.attempts.len(), 1);
    assert_eq!(
        outcome.key.as_deref(),
        Some("order-17"),
        "the caller's key is kept"
    );

    let (invalid, outcome) = send_order(&mut client, addr, "invalid order", None).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(outcome.attempts.len(), 1);
    assert_eq!(seen.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_timed_out_attempt_waits_out_the_in_progress_answer_and_gets_the_replay() {
    let seen = Seen::default();
    let addr = server(seen.clone()).await;
    let mut client =
        client(IdempotencyClientLayer::new().attempt_timeout(Duration::from_millis(100)));
    let (answer, outcome) = send_order(&mut client, addr, "slow sofa", None).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let results: Vec<_> = outcome.attempts.iter().map(|a| a.result.clone()).collect();
    assert_eq!(results[0], AttemptResult::TimedOut);
    assert_eq!(
        results[1],
        AttemptResult::Status(StatusCode::CONFLICT),
        "in progress"
    );
    assert!(
        outcome.attempts[2].waited >= Duration::from_secs(1),
        "Retry-After: 1 obeyed"
    );
    assert_eq!(
        *results.last().unwrap(),
        AttemptResult::Status(StatusCode::CREATED)
    );
    assert!(outcome.replayed);
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_key_derived_from_the_request_collapses_two_submissions() {
    let seen = Seen::default();
    let addr = server(seen.clone()).await;
    let layer = IdempotencyClientLayer::new().key_from(|_parts, body| {
        Some(format!("order-ref-{}", String::from_utf8_lossy(body).len()))
    });
    let mut client = client(layer);
    let (first, _) = send_order(&mut client, addr, "same order", None).await;
    let (second, outcome) = send_order(&mut client, addr, "same order", None).await;
    assert_eq!(first.body, second.body);
    assert!(outcome.replayed);
    assert_eq!(outcome.key.as_deref(), Some("order-ref-10"));
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1);
}

/// The keys a server saw, one entry per request.
pub(crate) type Keys = Arc<Mutex<Vec<Option<String>>>>;

/// An in-process server answering `statuses` in turn, with `Retry-After: retry_after`.
fn scripted(
    statuses: Vec<u16>,
    retry_after: &'static str,
) -> (
    impl Service<
            Request<Full<Bytes>>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static,
    Keys,
) {
    let keys = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let service = service_fn({
        let keys = keys.clone();
        move |req: Request<Full<Bytes>>| {
            keys.lock().unwrap().push(
                req.headers()
                    .get("idempotency-key")
                    .map(|k| k.to_str().unwrap().to_owned()),
            );
            let status = statuses[calls.fetch_add(1, Ordering::SeqCst).min(statuses.len() - 1)];
            async move {
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                response
                    .headers_mut()
                    .insert("retry-after", retry_after.parse().unwrap());
                Ok(response)
            }
        }
    });
    (service, keys)
}

async fn call_scripted<S>(client: &mut IdempotencyClient<S>, method: &str) -> ClientOutcome
where
    IdempotencyClient<S>: Service<
        Request<Full<Bytes>>,
        Response = Response<tower_idempotency::client::ClientResponseBody<Full<Bytes>>>,
        Error = BoxError,
    >,
{
    let request = Request::builder()
        .method(method)
        .uri("/orders")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let response = ServiceExt::<Request<Full<Bytes>>>::ready(client)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap();
    response
        .extensions()
        .get::<ClientOutcome>()
        .unwrap()
        .clone()
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_obeyed() {
    let (service, keys) = scripted(vec![503, 429, 201], "7");
    let mut client = ServiceBuilder::new()
        .layer(IdempotencyClientLayer::new())
        .service(service);
    let started = tokio::time::Instant::now();
    let outcome = call_scripted(&mut client, "POST").await;
    assert_eq!(outcome.attempts.len(), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(14),
        "waited {:?}",
        started.elapsed()
    );
    assert!(outcome.attempts[1..]
        .iter()
        .all(|a| a.waited >= Duration::from_secs(7)));
    assert_eq!(
        keys.lock()
            .unwrap()
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn attempts_and_total_time_are_capped() {
    let (service, _) = scripted(vec![503], "1");
    let mut client = ServiceBuilder::new()
        .layer(IdempotencyClientLayer::new().max_attempts(std::num::NonZeroU32::new(3).unwrap()))
        .service(service);
    let outcome = call_scripted(&mut client, "POST").await;
    assert_eq!(outcome.attempts.len(), 3, "the last 503 is returned");

    let (service, _) = scripted(vec![503], "60");
    let mut client = ServiceBuilder::new()
        .layer(IdempotencyClientLayer::new().max_elapsed(Duration::from_secs(10)))
        .service(service);
    let started = tokio::time::Instant::now();
    let outcome = call_scripted(&mut client, "POST").await;
    assert_eq!(
        outcome.attempts.len(),
        1,
        "a wait past the deadline is not started"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_call_without_a_key_is_sent_once() {
    let (service, keys) = scripted(vec![503, 201], "1");
    let mut client = ServiceBuilder::new()
        .layer(IdempotencyClientLayer::new())
        .service(service);
    let outcome = call_scripted(&mut client, "GET").await;
    assert_eq!(outcome.attempts.len(), 1);
    assert_eq!(outcome.key, None);
    assert_eq!(*keys.lock().unwrap(), vec![None]);

    let (service, _) = scripted(vec![503, 201], "1");
    let mut client = ServiceBuilder::new()
        .layer(IdempotencyClientLayer::new().key_from(|_, _| None))
        .service(service);
    assert_eq!(call_scripted(&mut client, "POST").await.attempts.len(), 1);
}

/// A hostile or broken server's `Retry-After` never makes the client panic: the wait is
/// bounded, and one past the call's time cap is not started.
#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_is_bounded_not_a_panic() {
    for huge in ["18446744073709551615", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        let (service, _) = scripted(vec![503, 201], huge);
        let mut client = ServiceBuilder::new()
            .layer(IdempotencyClientLayer::new())
            .service(service);
        let outcome = call_scripted(&mut client, "POST").await;
        assert_eq!(outcome.attempts.len(), 1, "{huge}: past the 30 s cap");
        // And with no time cap at all, still no overflow.
        let (service, _) = scripted(vec![503, 201], huge);
        let mut client = ServiceBuilder::new()
            .layer(
                IdempotencyClientLayer::new()
                    .max_elapsed(Duration::MAX)
                    .max_attempts(std::num::NonZeroU32::new(2).unwrap()),
            )
            .service(service);
        let outcome = call_scripted(&mut client, "POST").await;
        assert_eq!(outcome.attempts.len(), 2, "{huge}: waited a day at most");
        assert!(outcome.attempts[1].waited <= Duration::from_secs(24 * 60 * 60));
    }
}

/// A server that marks its replays the way other servers do (`X-Idempotent-Replayed`)
/// is still read as replaying.
#[tokio::test]
async fn a_peer_servers_replay_marker_is_recognised() {
    let runs = Arc::new(AtomicUsize::new(0));
    let server = ServiceBuilder::new()
        .layer(
            IdempotencyLayer::new(MemoryStore::new())
                .replay_headers([tower_idempotency::protocol::X_IDEMPOTENT_REPLAYED])
                .unwrap(),
        )
        .service(service_fn({
            let runs = runs.clone();
            move |_: Request<tower_idempotency::RequestBody<Full<Bytes>>>| {
                runs.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("made")))) }
            }
        }));
    let mut client = ServiceBuilder::new()
        .layer(IdempotencyClientLayer::new().key_from(|_, _| Some("one-order".to_owned())))
        .service(server);
    let mut call = async || {
        let request = Request::post("/orders")
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        let response = ServiceExt::<Request<Full<Bytes>>>::ready(&mut client)
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap();
        response
            .extensions()
            .get::<ClientOutcome>()
            .unwrap()
            .clone()
    };
    let first = call().await;
    let second = call().await;
    assert!(!first.replayed);
    assert!(second.replayed, "x-idempotent-replayed: true is a replay");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A body of 1 GiB in 16 KiB chunks (as good as endless), counting the chunks read; the
/// bytes of chunk `i` are all `i % 251`, so that a byte lost, repeated or moved shows.
fn endless(
    pulled: Arc<AtomicUsize>,
) -> impl hyper::body::Body<Data = Bytes, Error = Infallible> + Send + Unpin + 'static {
    use futures_util::StreamExt as _;
    let chunks = futures_util::stream::repeat_with(move || {
        let i = pulled.fetch_add(1, Ordering::SeqCst);
        let chunk = Bytes::from(vec![(i % 251) as u8; 16 * 1024]);
        Ok::<_, Infallible>(hyper::body::Frame::data(chunk))
    })
    .take(64 * 1024);
    http_body_util::StreamBody::new(chunks)
}

/// A `409` whose body never ends is classified from a bounded prefix (final, unless its
/// `Retry-After` says in progress), and its caller still reads the body as it comes.
#[tokio::test(start_paused = true)]
async fn a_409_with_an_endless_body_is_classified_without_reading_it_all() {
    for (retry_after, attempts) in [(None, 1), (Some("1"), 2)] {
        let calls = Arc::new(AtomicUsize::new(0));
        let pulled = Arc::new(AtomicUsize::new(0));
        let service = service_fn({
            let (calls, pulled) = (calls.clone(), pulled.clone());
            move |_: Request<Full<Bytes>>| {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                let body = endless(pulled.clone());
                async move {
                    let mut response = Response::new(http_body_util::Either::Left(body));
                    if first {
                        *response.status_mut() = StatusCode::CONFLICT;
                        if let Some(wait) = retry_after {
                            response
                                .headers_mut()
                                .insert("retry-after", wait.parse().unwrap());
                        }
                    } else {
                        let made = Full::new(Bytes::from_static(b"made"));
                        *response.body_mut() = http_body_util::Either::Right(made);
                    }
                    Ok::<_, Infallible>(response)
                }
            }
        });
        let mut client = ServiceBuilder::new()
            .layer(IdempotencyClientLayer::new())
            .service(service);
        let request = Request::post("/orders")
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        let response = ServiceExt::<Request<Full<Bytes>>>::ready(&mut client)
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap();
        let outcome = response
            .extensions()
            .get::<ClientOutcome>()
            .unwrap()
            .clone();
        assert_eq!(outcome.attempts.len(), attempts, "{retry_after:?}");
        let read = pulled.load(Ordering::SeqCst);
        assert!(read <= 5, "{read} chunks of 16 KiB read to classify a 409");
        if attempts == 1 {
            assert_eq!(response.status(), StatusCode::CONFLICT);
            // Well past the bound: the bytes read to classify it come first, then the rest.
            use http_body_util::BodyExt as _;
            let mut body = response.into_body();
            let mut read = 0;
            while read < 1024 * 1024 {
                let frame = body.frame().await.unwrap().unwrap();
                for byte in frame.into_data().unwrap() {
                    assert_eq!(byte, (read / (16 * 1024) % 251) as u8, "byte {read}");
                    read += 1;
                }
            }
        } else {
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
}

/// A `409` whose body stalls is bounded by the attempt timeout, as a silent server is: the
/// attempt times out and the call goes on.
#[tokio::test(start_paused = true)]
async fn a_409_whose_body_stalls_times_the_attempt_out() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = service_fn({
        let calls = calls.clone();
        move |_: Request<Full<Bytes>>| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                let stalled = http_body_util::StreamBody::new(futures_util::stream::pending::<
                    Result<hyper::body::Frame<Bytes>, Infallible>,
                >());
                let mut response = Response::new(http_body_util::Either::Left(stalled));
                if first {
                    *response.status_mut() = StatusCode::CONFLICT;
                } else {
                    let made = Full::new(Bytes::from_static(b"made"));
                    *response.body_mut() = http_body_util::Either::Right(made);
                }
                Ok::<_, Infallible>(response)
            }
        }
    });
    let mut client = ServiceBuilder::new()
        .layer(IdempotencyClientLayer::new().attempt_timeout(Duration::from_millis(100)))
        .service(service);
    let request = Request::post("/orders")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let call = ServiceExt::<Request<Full<Bytes>>>::ready(&mut client)
        .await
        .unwrap()
        .call(request);
    let response = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the stalled body did not hold the call")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let outcome = response
        .extensions()
        .get::<ClientOutcome>()
        .unwrap()
        .clone();
    assert_eq!(outcome.attempts.len(), 2);
    assert_eq!(outcome.attempts[0].result, AttemptResult::TimedOut);
}

/// A call whose last attempt timed out fails with an `AttemptTimedOut`, which a caller can
/// tell from a transport error.
#[tokio::test]
async fn a_call_out_of_attempts_on_a_timeout_says_so_in_its_type() {
    use tower_idempotency::client::AttemptTimedOut;
    let seen = Seen::default();
    let addr = server(seen.clone()).await;
    let layer = IdempotencyClientLayer::new()
        .attempt_timeout(Duration::from_millis(100))
        .max_attempts(std::num::NonZeroU32::new(1).unwrap());
    let mut client = client(layer);
    let request = Request::post(format!("http://{addr}/orders"))
        .body(Full::new(Bytes::from("slow sofa")))
        .unwrap();
    let err = ServiceExt::<Request<Full<Bytes>>>::ready(&mut client)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap_err();
    let timed_out = err.downcast_ref::<AttemptTimedOut>();
    assert_eq!(timed_out, Some(&AttemptTimedOut::default()), "{err}");
}
