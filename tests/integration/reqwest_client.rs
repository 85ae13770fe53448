//! The reqwest middleware against the real server layer over real TCP, alone and beside
//! `reqwest-retry` in both orders.

use std::{net::SocketAddr, sync::atomic::Ordering, time::Duration};

use axum::http::StatusCode;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
use tower_idempotency::client::{
    AttemptResult, ClientOutcome, IdempotencyClientLayer, IdempotencyMiddleware,
};

use crate::client::{server, Seen};

/// Our middleware with short waits, so that the tests run quickly.
fn fast(layer: IdempotencyClientLayer) -> IdempotencyMiddleware {
    layer
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .reqwest_middleware()
}

/// `reqwest-retry` with its default strategy (every 5xx, 408 and 429 transient), short waits.
fn their_retry(retries: u32) -> RetryTransientMiddleware<ExponentialBackoff> {
    let policy = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(5))
        .build_with_max_retries(retries);
    RetryTransientMiddleware::new_with_policy(policy)
}

fn ours_alone(layer: IdempotencyClientLayer) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(fast(layer))
        .build()
}

struct Answer {
    status: StatusCode,
    /// The URL the response says it came from.
    url: String,
    body: String,
    replayed: bool,
    outcome: Option<ClientOutcome>,
}

async fn post(
    client: &ClientWithMiddleware,
    addr: SocketAddr,
    body: &str,
    key: Option<&str>,
) -> Answer {
    let mut request = client
        .post(format!("http://{addr}/orders"))
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("an answer");
    let outcome = response.extensions().get::<ClientOutcome>().cloned();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    Answer {
        url: response.url().to_string(),
        status: StatusCode::from_u16(response.status().as_u16()).unwrap(),
        replayed,
        outcome,
        body: response.text().await.unwrap(),
    }
}

fn keys(seen: &Seen) -> Vec<Option<String>> {
    seen.keys.lock().unwrap().clone()
}

/// Every request of the call carried one key, and it is a key.
fn one_key(seen: &Seen, requests: usize) -> String {
    let keys = keys(seen);
    assert_eq!(keys.len(), requests, "requests that reached the server");
    let first = keys[0].clone().expect("a key");
    assert!(
        keys.iter().all(|k| k.as_deref() == Some(&first)),
        "one key for the call: {keys:?}"
    );
    first
}

#[tokio::test]
async fn a_lost_response_is_retried_with_the_same_key_and_replayed() {
    let seen = Seen::default();
    seen.drop_responses.store(1, Ordering::SeqCst);
    let addr = server(seen.clone()).await;
    let answer = post(
        &ours_alone(IdempotencyClientLayer::new()),
        addr,
        "one lamp",
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.body, "order 1: one lamp", "the original response");
    assert!(answer.replayed);
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1, "exactly one order");
    let outcome = answer.outcome.unwrap();
    assert_eq!(outcome.attempts.len(), 2);
    assert!(matches!(
        outcome.attempts[0].result,
        AttemptResult::TransportError(_)
    ));
    assert!(outcome.replayed);
    let key = one_key(&seen, 2);
    assert_eq!(outcome.key.as_deref(), Some(key.as_str()));
    uuid::Uuid::parse_str(&key).expect("a UUID key");
}

#[tokio::test]
async fn two_503s_then_success_take_three_attempts_with_one_key() {
    let seen = Seen::default();
    seen.unavailable.store(2, Ordering::SeqCst);
    let addr = server(seen.clone()).await;
    let answer = post(
        &ours_alone(IdempotencyClientLayer::new()),
        addr,
        "desk",
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.outcome.unwrap().attempts.len(), 3);
    one_key(&seen, 3);
}

#[tokio::test]
async fn a_conflict_a_422_and_a_500_are_not_retried() {
    let seen = Seen::default();
    let addr = server(seen.clone()).await;
    let client = ours_alone(IdempotencyClientLayer::new());
    let first = post(&client, addr, "chair", Some("order-17")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let conflict = post(&client, addr, "table", Some("order-17")).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert!(conflict.body.contains("conflict"), "{}", conflict.body);
    // The 409's body was read to tell a conflict from in progress; the response handed
    // back still says where it came from.
    assert_eq!(conflict.url, format!("http://{addr}/orders"));
    let outcome = conflict.outcome.unwrap();
    assert_eq!(outcome.attempts.len(), 1);
    assert_eq!(
        outcome.key.as_deref(),
        Some("order-17"),
        "the caller's key is kept"
    );
    let invalid = post(&client, addr, "invalid order", None).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid.outcome.unwrap().attempts.len(), 1);
    let failed = post(&client, addr, "fail", None).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.outcome.unwrap().attempts.len(), 1);
    assert_eq!(seen.runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn in_progress_then_replay_obeying_retry_after() {
    let seen = Seen::default();
    let addr = server(seen.clone()).await;
    let layer = IdempotencyClientLayer::new().attempt_timeout(Duration::from_millis(100));
    let answer = post(&ours_alone(layer), addr, "slow sofa", None).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let outcome = answer.outcome.unwrap();
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
async fn attempts_are_capped() {
    let seen = Seen::default();
    seen.unavailable.store(10, Ordering::SeqCst);
    let addr = server(seen.clone()).await;
    let layer = IdempotencyClientLayer::new().max_attempts(2.try_into().unwrap());
    let answer = post(&ours_alone(layer), addr, "lamp", None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.outcome.unwrap().attempts.len(), 2);
    one_key(&seen, 2);
}

/// The documented pairing: `reqwest-retry` retries, ours only keys, in either order;
/// every attempt carries the call's one key, and only `reqwest-retry` makes attempts.
#[tokio::test]
async fn beside_reqwest_retry_in_either_order_one_key_and_one_retrier() {
    for ours_outer in [false, true] {
        // More 503s than either would retry: every request is an attempt of
        // reqwest-retry's (its first and 3 retries), none of ours.
        let seen = Seen::default();
        seen.unavailable.store(100, Ordering::SeqCst);
        let addr = server(seen.clone()).await;
        let keys_only = fast(IdempotencyClientLayer::new()).keys_only();
        let builder = ClientBuilder::new(reqwest::Client::new());
        let client = if ours_outer {
            builder.with(keys_only).with(their_retry(3)).build()
        } else {
            builder.with(their_retry(3)).with(keys_only).build()
        };
        let answer = post(&client, addr, "desk", None).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "ours outer: {ours_outer}"
        );
        one_key(&seen, 1 + 3);
    }
}

/// Both retrying by mistake, `reqwest-retry` outside: still one key, and the attempts
/// add up (ours makes its 2, then one per outer retry), never multiply (2 × 3).
#[tokio::test]
async fn both_retrying_never_changes_the_key_nor_multiplies_attempts() {
    let seen = Seen::default();
    seen.unavailable.store(100, Ordering::SeqCst);
    let addr = server(seen.clone()).await;
    let ours = fast(IdempotencyClientLayer::new().max_attempts(2.try_into().unwrap()));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(their_retry(2))
        .with(ours)
        .build();
    let answer = post(&client, addr, "desk", None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    one_key(&seen, 2 + 2);
}

/// `reqwest-retry`'s default strategy retries a `500`: against this server, the recorded
/// `500` is replayed, and the handler does not run again.
#[tokio::test]
async fn reqwest_retrys_retry_of_a_500_is_a_replay() {
    let seen = Seen::default();
    let addr = server(seen.clone()).await;
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(their_retry(2))
        .with(fast(IdempotencyClientLayer::new()).keys_only())
        .build();
    let answer = post(&client, addr, "fail", None).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.replayed, "the last attempt got the recorded 500");
    assert_eq!(answer.body, "failed run 1");
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1, "the handler ran once");
    one_key(&seen, 3);
}

/// A key derived from a persisted intent survives a restart: a second client (a new
/// process, after the first died mid-call) sends the same key and gets the first run's
/// answer.
#[tokio::test]
async fn a_key_from_a_persisted_intent_is_reused_after_a_restart() {
    let seen = Seen::default();
    seen.drop_responses.store(1, Ordering::SeqCst);
    let addr = server(seen.clone()).await;
    let intent = uuid::Uuid::new_v4();
    let with_intent = || {
        let key = format!("checkout:{intent}");
        IdempotencyClientLayer::new()
            .max_attempts(1.try_into().unwrap())
            .key_from(move |_, _| Some(key.clone()))
    };
    // The first process: its one attempt's response is lost, and it dies.
    let first = ours_alone(with_intent())
        .post(format!("http://{addr}/orders"))
        .body("checkout")
        .send()
        .await;
    assert!(first.is_err(), "the response was lost");
    // The second process reads the same intent id.
    let second = post(&ours_alone(with_intent()), addr, "checkout", None).await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert!(second.replayed);
    assert_eq!(second.body, "order 1: checkout");
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1);
    assert_eq!(one_key(&seen, 2), format!("checkout:{intent}"));
}

/// Runs `examples/reqwest_client.rs` with `args` and returns what it printed.
fn run_example(args: &[&str]) -> String {
    static BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let binary =
        BINARY.get_or_init(|| crate::support::example_binary("reqwest_client", &["reqwest"]));
    let out = std::process::Command::new(binary)
        .args(args)
        .output()
        .expect("the example runs");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    printed
}

/// The example against the `orders` demo: the lost response told as the README tells it,
/// then the persisted intent run twice (a restart), placing one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_against_the_demo() {
    use std::io::BufRead;
    let mut orders = std::process::Command::new(crate::support::orders_binary())
        .args(["--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(orders.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .expect("the demo says where it listens")
        .to_owned();
    let (lost, first, again) = tokio::task::spawn_blocking(move || {
        let intent = std::env::temp_dir().join(format!("intent-{}", uuid::Uuid::new_v4()));
        let intent = intent.to_str().unwrap().to_owned();
        let lost = run_example(&["--url", &url]);
        let first = run_example(&["--url", &url, "--intent-file", &intent]);
        let again = run_example(&["--url", &url, "--intent-file", &intent]);
        std::fs::remove_file(&intent).unwrap();
        (lost, first, again)
    })
    .await
    .unwrap();
    let _ = orders.kill();
    let _ = orders.wait();
    assert!(lost.contains("no response within 1 s (lost)"), "{lost}");
    assert!(
        lost.contains("final: 201 Created replayed=true {"),
        "{lost}"
    );
    assert!(lost.contains(r#"GET /orders: {"count":1,"#), "{lost}");
    let key = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("key: checkout:"))
            .map(str::to_owned)
    };
    assert!(key(&first).is_some(), "{first}");
    assert_eq!(
        key(&first),
        key(&again),
        "the restarted run sends the same key"
    );
    assert!(
        again.contains("attempt 1 after waiting  0.000 s: 201 Created"),
        "{again}"
    );
    assert!(
        again.contains("final: 201 Created replayed=true"),
        "{again}"
    );
    assert!(
        again.contains(r#"GET /orders: {"count":2,"#),
        "one order for the intent: {again}"
    );
}

/// A `409` far longer than a problem document: classified from its first 64 KiB (final),
/// its answer handed over while the server still holds back the rest of the body (a
/// client that read it all would wait for ever), and then the whole body, in order.
#[tokio::test]
async fn a_long_409_is_final_and_reaches_the_caller_whole() {
    use axum::{body::Body, routing, Router};
    use futures_util::StreamExt as _;
    let pattern = |i: usize| (b'a' + (i % 26) as u8) as char;
    let whole: String = (0..192 * 1024).map(pattern).collect();
    let (go_on, held_back) = tokio::sync::oneshot::channel::<()>();
    let held_back = std::sync::Arc::new(std::sync::Mutex::new(Some(held_back)));
    let app = Router::new().route(
        "/orders",
        routing::post({
            let whole = whole.clone();
            move || async move {
                let first = bytes::Bytes::from(whole[..128 * 1024].to_owned());
                let rest = bytes::Bytes::from(whole[128 * 1024..].to_owned());
                let wait = held_back.lock().unwrap().take().unwrap();
                let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(first)]).chain(
                    futures_util::stream::once(async move {
                        let _ = wait.await;
                        Ok(rest)
                    }),
                );
                (StatusCode::CONFLICT, Body::from_stream(chunks))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = ours_alone(IdempotencyClientLayer::new());
    let send = client
        .post(format!("http://{addr}/orders"))
        .body("x")
        .send();
    let response = tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("the answer before the rest of its body")
        .unwrap();
    go_on.send(()).unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let outcome = response
        .extensions()
        .get::<ClientOutcome>()
        .cloned()
        .unwrap();
    assert_eq!(outcome.attempts.len(), 1);
    let body = response.text().await.unwrap();
    server.abort();
    assert_eq!(body.len(), whole.len());
    assert!(body == whole, "the same bytes, in order");
}

/// With `keys_only`, an attempt that timed out is the middleware's error, holding an
/// `AttemptTimedOut` that a retry policy of the caller's can recognise.
#[tokio::test]
async fn a_timed_out_attempt_is_an_attempt_timed_out() {
    use tower_idempotency::client::AttemptTimedOut;
    let seen = Seen::default();
    let addr = server(seen.clone()).await;
    let layer = IdempotencyClientLayer::new().attempt_timeout(Duration::from_millis(100));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(fast(layer).keys_only())
        .build();
    let err = client
        .post(format!("http://{addr}/orders"))
        .body("slow sofa")
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(inner) = &err else {
        panic!("a middleware error: {err}")
    };
    assert_eq!(
        inner.downcast_ref::<AttemptTimedOut>(),
        Some(&AttemptTimedOut::default()),
        "{err}"
    );
}
