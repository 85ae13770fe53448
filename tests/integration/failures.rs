//! Handler panics and errors, and stores that fail.

use std::time::Duration;

use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_idempotency::{
    store::{
        Begin, Fingerprint, IdempotencyStore, LockToken, Record, RecordKey, StoreError,
        StoredResponse,
    },
    HandlerFailure, IdempotencyLayer, MemoryStore, Outcome,
};

use crate::support::{app, eventually, post_with_key, read, send, unique};

/// Sends `/panic` with `key` on a task of its own, and says whether it panicked.
async fn send_panicking(app: &axum::Router, key: &str) -> bool {
    let app = app.clone();
    let request = post_with_key("/panic", key, "");
    tokio::spawn(async move { app.oneshot(request).await })
        .await
        .is_err_and(|err| err.is_panic())
}

/// Failure table row "handler panic": the write may have happened, so the key is recorded
/// as a 500 that says the outcome is unknown, and never runs again.
#[tokio::test]
async fn a_handler_panic_is_recorded_as_outcome_unknown() {
    let layer = IdempotencyLayer::new(MemoryStore::new());
    let metrics = layer.metrics();
    let (app, counter) = app(layer);
    let key = unique("panic");
    assert!(
        send_panicking(&app, &key).await,
        "the panic reaches the caller"
    );
    let retry = send(&app, post_with_key("/panic", &key, "")).await;
    retry.assert_problem(StatusCode::INTERNAL_SERVER_ERROR, "outcome-unknown");
    assert!(retry.replayed());
    assert!(retry.headers.get("retry-after").is_none());
    assert_eq!(counter.runs(), 1, "a panicked handler never runs again");
    assert_eq!(metrics.count(Outcome::HandlerFailed), 1);
}

#[tokio::test]
async fn with_release_a_handler_panic_frees_the_key() {
    let layer = IdempotencyLayer::new(MemoryStore::new()).handler_failure(HandlerFailure::Release);
    let metrics = layer.metrics();
    let (app, counter) = app(layer);
    let key = unique("panic");
    assert!(
        send_panicking(&app, &key).await,
        "the panic reaches the caller"
    );
    eventually("the key is released and runs again", async || {
        send_panicking(&app, &key).await;
        counter.runs() >= 2
    })
    .await;
    assert!(metrics.count(Outcome::Released) >= 1);
}

/// Counts a service's calls.
type Calls = std::sync::Arc<std::sync::atomic::AtomicUsize>;

/// A service that fails with an error on its first call and answers `done` after.
fn failing_once(
    store: MemoryStore,
    failure: HandlerFailure,
    calls: &Calls,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<tower_idempotency::ResponseBody<Full<Bytes>>>,
    Error = std::io::Error,
> + Clone {
    ServiceBuilder::new()
        .layer(IdempotencyLayer::new(store).handler_failure(failure))
        .service(service_fn({
            let calls = calls.clone();
            move |_req: Request<_>| {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(std::io::Error::other("backend down"))
                    } else {
                        Ok(Response::new(Full::new(Bytes::from_static(b"done"))))
                    }
                }
            }
        }))
}

fn err_request() -> Request<Full<Bytes>> {
    Request::post("/")
        .header("idempotency-key", "err-key")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Failure table row "handler error": propagated to the caller, recorded as outcome
/// unknown, never run again.
#[tokio::test]
async fn an_inner_service_error_is_recorded_and_propagates() {
    let calls = Calls::default();
    let svc = failing_once(MemoryStore::new(), HandlerFailure::Record, &calls);
    let err = svc.clone().oneshot(err_request()).await.unwrap_err();
    assert_eq!(err.to_string(), "backend down");
    let answer = read(svc.clone().oneshot(err_request()).await.unwrap()).await;
    answer.assert_problem(StatusCode::INTERNAL_SERVER_ERROR, "outcome-unknown");
    assert_eq!(answer.outcome, Some(Outcome::Replayed));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn with_release_an_inner_service_error_frees_the_key_and_propagates() {
    let store = MemoryStore::new();
    let calls = Calls::default();
    let svc = failing_once(store.clone(), HandlerFailure::Release, &calls);
    let err = svc.clone().oneshot(err_request()).await.unwrap_err();
    assert_eq!(err.to_string(), "backend down");
    assert!(store.is_empty(), "the claim was released");
    let answer = read(svc.clone().oneshot(err_request()).await.unwrap()).await;
    assert_eq!(
        (answer.status, answer.body),
        (StatusCode::OK, Bytes::from_static(b"done"))
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A store whose every call fails, or hangs.
#[derive(Clone, Copy)]
enum BrokenStore {
    Failing,
    Hanging,
}

impl BrokenStore {
    async fn fail<T>(self) -> Result<T, StoreError> {
        if let Self::Hanging = self {
            std::future::pending::<()>().await;
        }
        Err(StoreError::unavailable("connection refused"))
    }
}

impl IdempotencyStore for BrokenStore {
    async fn begin(
        &self,
        _: &RecordKey,
        _: &Fingerprint,
        _: &LockToken,
        _: Duration,
    ) -> Result<Begin, StoreError> {
        self.fail().await
    }
    async fn complete(
        &self,
        _: &RecordKey,
        _: &LockToken,
        _: &StoredResponse,
        _: Duration,
    ) -> Result<(), StoreError> {
        self.fail().await
    }
    async fn release(&self, _: &RecordKey, _: &LockToken) -> Result<(), StoreError> {
        self.fail().await
    }
    async fn renew(&self, _: &RecordKey, _: &LockToken, _: Duration) -> Result<(), StoreError> {
        self.fail().await
    }
    async fn get(&self, _: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.fail().await
    }
}

fn broken_app(layer: IdempotencyLayer<BrokenStore>) -> (axum::Router, crate::support::Counter) {
    let counter = crate::support::Counter::default();
    (
        crate::support::routes(counter.clone()).layer(layer),
        counter,
    )
}

#[tokio::test]
async fn an_unreachable_store_fails_closed_with_503() {
    for store in [BrokenStore::Failing, BrokenStore::Hanging] {
        let layer = IdempotencyLayer::new(store)
            .store_timeout(Duration::from_millis(100))
            .unwrap();
        let (app, counter) = broken_app(layer);
        let answer = send(&app, post_with_key("/orders", "k", "{}")).await;
        answer.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
        assert_eq!(answer.headers["retry-after"], "2");
        assert_eq!(answer.outcome, Some(Outcome::StoreError));
        assert_eq!(counter.runs(), 0);
    }
}

#[tokio::test]
async fn in_fail_open_mode_the_request_runs_unprotected() {
    let layer = IdempotencyLayer::new(BrokenStore::Failing).fail_open(true);
    let metrics = layer.metrics();
    let (app, counter) = broken_app(layer);
    let answer = send(&app, post_with_key("/orders", "k", "{}")).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.outcome, Some(Outcome::StoreError));
    assert_eq!(counter.runs(), 1);
    assert_eq!(metrics.count(Outcome::StoreError), 1);
}

#[tokio::test]
async fn a_full_memory_store_answers_503_rather_than_forget_a_claim() {
    let store = MemoryStore::builder().max_entries(1).build();
    let layer = IdempotencyLayer::new(store);
    let (app, counter) = app(layer);
    let started = counter.started.notified();
    let held = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_with_key("/slow", "held", "")).await }
    });
    started.await;
    send(&app, post_with_key("/orders", "another", ""))
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
    counter.gate.add_permits(1);
    assert_eq!(held.await.unwrap().status, StatusCode::CREATED);
}
