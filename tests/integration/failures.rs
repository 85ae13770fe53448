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
    IdempotencyLayer, MemoryStore, Outcome,
};

use crate::support::{app, eventually, post_with_key, read, send, unique};

#[tokio::test]
async fn a_handler_panic_releases_the_key() {
    let layer = IdempotencyLayer::new(MemoryStore::new());
    let metrics = layer.metrics();
    let (app, counter) = app(layer);
    let key = unique("panic");
    let outcome = tokio::spawn({
        let app = app.clone();
        let key = key.clone();
        async move { app.oneshot(post_with_key("/panic", &key, "")).await }
    })
    .await;
    assert!(
        outcome.unwrap_err().is_panic(),
        "the panic reaches the caller"
    );
    eventually("the key is released and runs again", async || {
        let _ = tokio::spawn({
            let app = app.clone();
            let key = key.clone();
            async move { app.oneshot(post_with_key("/panic", &key, "")).await }
        })
        .await;
        counter.runs() >= 2
    })
    .await;
    assert!(metrics.count(Outcome::Released) >= 1);
}

#[tokio::test]
async fn an_inner_service_error_releases_the_key_and_propagates() {
    let store = MemoryStore::new();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(store.clone()))
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
        }));
    let request = || {
        Request::post("/")
            .header("idempotency-key", "err-key")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let err = svc.clone().oneshot(request()).await.unwrap_err();
    assert_eq!(err.to_string(), "backend down");
    assert!(store.is_empty(), "the claim was released");
    let answer = read(svc.clone().oneshot(request()).await.unwrap()).await;
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
        _: Duration,
    ) -> Result<Begin, StoreError> {
        self.fail().await
    }
    async fn complete(
        &self,
        _: &RecordKey,
        _: &LockToken,
        _: StoredResponse,
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
        let layer = IdempotencyLayer::new(store).store_timeout(Duration::from_millis(100));
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

/// Claims work, recording fails: the client still gets its response, and it is counted.
struct ForgetfulStore(MemoryStore);

impl IdempotencyStore for ForgetfulStore {
    async fn begin(
        &self,
        key: &RecordKey,
        fp: &Fingerprint,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        self.0.begin(key, fp, lease).await
    }
    async fn complete(
        &self,
        _: &RecordKey,
        _: &LockToken,
        _: StoredResponse,
        _: Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError::unavailable("write failed"))
    }
    async fn release(&self, key: &RecordKey, token: &LockToken) -> Result<(), StoreError> {
        self.0.release(key, token).await
    }
    async fn renew(
        &self,
        key: &RecordKey,
        token: &LockToken,
        lease: Duration,
    ) -> Result<(), StoreError> {
        self.0.renew(key, token, lease).await
    }
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.0.get(key).await
    }
}

#[tokio::test]
async fn a_failed_record_still_answers_the_client_and_is_counted() {
    let layer = IdempotencyLayer::new(ForgetfulStore(MemoryStore::new()));
    let metrics = layer.metrics();
    let counter = crate::support::Counter::default();
    let app = crate::support::routes(counter.clone()).layer(layer);
    let answer = send(&app, post_with_key("/orders", "k", "{}")).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(metrics.record_failures(), 1);
    // The key stays claimed until its lease ends: a retry waits rather than runs twice.
    send(&app, post_with_key("/orders", "k", "{}"))
        .await
        .assert_problem(StatusCode::CONFLICT, "in-progress");
    assert_eq!(counter.runs(), 1);
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
