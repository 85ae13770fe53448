//! Exactly once through faults: each test is a row of the failure table in the README
//! ("What a retry gets when something fails"), and counts real handler executions.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Body,
    http::{Request, Response, StatusCode},
    routing::post,
    Router,
};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_idempotency::{
    store::{Begin, Fingerprint, IdempotencyStore, LockToken, RecordKey, StoredResponse},
    IdempotencyLayer, MemoryStore, Outcome,
};

use crate::{
    faulty_store::{Faults, FaultyStore},
    support::{app, eventually, post_with_key, read, send, unique},
};

/// Row "completion failed": the store blips while the response is recorded. The client
/// gets its response; the completion is retried while the claim is held, so a retry gets
/// "in progress" (true) and then the replay, never a second run.
#[tokio::test]
async fn a_completion_that_fails_once_is_retried_and_replays() {
    let store = FaultyStore::new(MemoryStore::new());
    Faults::arm(&store.faults.failing_completes, 1);
    let faults = Arc::clone(&store.faults);
    let layer = IdempotencyLayer::new(store);
    let metrics = layer.metrics();
    let (app, counter) = app(layer);
    let key = unique("complete-blip");
    let first = send(&app, post_with_key("/orders", &key, "{}")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    eventually(
        "the retried completion is stored and replayed",
        async || {
            let retry = send(&app, post_with_key("/orders", &key, "{}")).await;
            if !retry.replayed() {
                retry.assert_problem(StatusCode::CONFLICT, "in-progress");
            }
            retry.replayed()
        },
    )
    .await;
    assert_eq!(counter.runs(), 1);
    assert!(faults.completes.load(Ordering::SeqCst) >= 2);
    assert_eq!(metrics.completion_retries(), 1);
    assert_eq!(metrics.record_failures(), 0);
}

/// Row "store down longer than the completion retry": counted; the key stays in flight
/// until its lease ends (a retry meanwhile waits, it does not run).
#[tokio::test]
async fn a_completion_that_keeps_failing_is_counted_and_the_key_stays_claimed() {
    let store = FaultyStore::new(MemoryStore::new());
    Faults::arm(&store.faults.failing_completes, usize::MAX);
    let layer = IdempotencyLayer::new(store)
        .completion_retry(Duration::from_millis(200))
        .unwrap();
    let metrics = layer.metrics();
    let (app, counter) = app(layer);
    let answer = send(&app, post_with_key("/orders", "k", "{}")).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    eventually("the lost record is counted", async || {
        metrics.record_failures() == 1
    })
    .await;
    send(&app, post_with_key("/orders", "k", "{}"))
        .await
        .assert_problem(StatusCode::CONFLICT, "in-progress");
    assert_eq!(counter.runs(), 1);
}

/// A handler that answers `201`, sends one chunk, then fails its body.
fn failing_body_service(
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<tower_idempotency::ResponseBody<Body>>,
    Error = Infallible,
    Future: Send,
> + Clone {
    ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new()))
        .service(service_fn(move |_req: Request<_>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let frames = futures_util::stream::iter([
                    Ok(http_body::Frame::data(Bytes::from_static(b"{\"id\":"))),
                    Err(std::io::Error::other("connection to the database lost")),
                ]);
                let mut response = Response::new(Body::new(StreamBody::new(frames)));
                *response.status_mut() = StatusCode::CREATED;
                Ok::<_, Infallible>(response)
            }
        }))
}

/// Row "response body error": the handler answered with a status, so it ran; the key is
/// recorded without the body and the retry is told so, never run again.
#[tokio::test]
async fn a_body_that_fails_mid_stream_is_recorded_without_it() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = failing_body_service(Arc::clone(&calls));
    let first = svc
        .clone()
        .oneshot(post_with_key("/orders", "body-fails", "{}"))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let error = first.into_body().collect().await.unwrap_err();
    assert!(error.to_string().contains("database lost"), "{error}");
    let retry = read(
        svc.clone()
            .oneshot(post_with_key("/orders", "body-fails", "{}"))
            .await
            .unwrap(),
    )
    .await;
    retry.assert_problem(StatusCode::CONFLICT, "response-not-stored");
    assert_eq!(retry.json()["original_status"], 201);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A router whose `/pay` handler counts, then takes `work` before it answers.
fn slow_router(runs: Arc<AtomicUsize>, work: Duration) -> Router {
    Router::new().route(
        "/pay",
        post(move || {
            let runs = Arc::clone(&runs);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(work).await;
                (StatusCode::CREATED, "paid")
            }
        }),
    )
}

/// Row "timeout inside": a timeout layer inside ours cuts the handler and answers `408`;
/// the write may have happened, so the 408 is recorded and replayed, never run again.
#[tokio::test]
async fn a_timeout_layer_inside_records_its_408() {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = slow_router(Arc::clone(&runs), Duration::from_secs(5))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(50),
        ))
        .layer(IdempotencyLayer::new(MemoryStore::new()));
    let key = unique("timeout-inside");
    let first = send(&app, post_with_key("/pay", &key, "")).await;
    assert_eq!(first.status, StatusCode::REQUEST_TIMEOUT);
    let retry = send(&app, post_with_key("/pay", &key, "")).await;
    assert_eq!(retry.status, StatusCode::REQUEST_TIMEOUT);
    assert!(retry.replayed());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// The order the docs give: the timeout outside. The client gets its 408; the handler
/// goes on (run to completion), its response is recorded, and the retry replays it.
#[tokio::test]
async fn a_timeout_layer_outside_lets_the_write_finish_and_replays_it() {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = slow_router(Arc::clone(&runs), Duration::from_millis(300))
        .layer(IdempotencyLayer::new(MemoryStore::new()))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(50),
        ));
    let key = unique("timeout-outside");
    let first = send(&app, post_with_key("/pay", &key, "")).await;
    assert_eq!(first.status, StatusCode::REQUEST_TIMEOUT);
    eventually("the finished write is replayed", async || {
        let retry = send(&app, post_with_key("/pay", &key, "")).await;
        retry.replayed() && retry.status == StatusCode::CREATED
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// One instance behind a load balancer: a router-wide layer on its own `MemoryStore`, and
/// the payment route's layer on the store all instances share.
fn instance(shared: MemoryStore, runs: Arc<AtomicUsize>, work: Duration) -> Router {
    let payments = IdempotencyLayer::new(shared).require_key(true);
    Router::new()
        .route(
            "/pay",
            post(move || {
                let runs = Arc::clone(&runs);
                async move {
                    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(work).await;
                    (StatusCode::CREATED, format!("charge {n}"))
                }
            })
            .layer(payments),
        )
        .layer(IdempotencyLayer::new(MemoryStore::new()))
}

/// Nested layers on different stores: the route's layer protects the route even though
/// an outer layer (on another store) already claimed the request.
#[tokio::test]
async fn nested_layers_on_different_stores_protect_the_route_across_instances() {
    let shared = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let work = Duration::from_millis(300);
    let a = instance(shared.clone(), Arc::clone(&runs), work);
    let b = instance(shared.clone(), Arc::clone(&runs), work);
    let key = unique("charge");
    let on_a = tokio::spawn({
        let a = a.clone();
        let key = key.clone();
        async move { send(&a, post_with_key("/pay", &key, "")).await }
    });
    eventually("the charge starts on A", async || {
        runs.load(Ordering::SeqCst) == 1
    })
    .await;
    // B's own store has never seen the key; the shared store has it in flight.
    send(&b, post_with_key("/pay", &key, ""))
        .await
        .assert_problem(StatusCode::CONFLICT, "in-progress");
    let first = on_a.await.unwrap();
    assert_eq!(
        (first.status, first.body.clone()),
        (StatusCode::CREATED, "charge 1".into())
    );
    // B recorded nothing of its refusal: it now replays A's charge.
    let retry = send(&b, post_with_key("/pay", &key, "")).await;
    assert!(retry.replayed());
    assert_eq!(retry.body, "charge 1");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the charge ran once");
}

/// Row "claim reply lost": the store ran the claim but its reply timed out. The client
/// gets 503 (nothing ran); the claim is cleaned up, so its retry runs once.
#[tokio::test]
async fn a_claim_whose_reply_was_lost_is_cleaned_up_and_the_retry_runs() {
    let store = FaultyStore::new(MemoryStore::new());
    Faults::arm(&store.faults.lost_begin_replies, 1);
    let (app, counter) = app(IdempotencyLayer::new(store));
    let key = unique("lost-claim");
    send(&app, post_with_key("/orders", &key, "{}"))
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
    assert_eq!(counter.runs(), 0);
    eventually("the retry runs", async || {
        send(&app, post_with_key("/orders", &key, "{}"))
            .await
            .status
            == StatusCode::CREATED
    })
    .await;
    assert_eq!(counter.runs(), 1);
}

/// Runs a slow handler under a 1 s lease with a renewal fault armed by `arm`, and checks
/// that past the first lease the claim still holds: a retry is told to wait, the handler
/// runs once, and its response replays.
async fn the_claim_holds_through(arm: impl FnOnce(&Faults)) {
    let store = FaultyStore::new(MemoryStore::new());
    arm(&store.faults);
    let layer = IdempotencyLayer::new(store)
        .lease(Duration::from_secs(1))
        .unwrap();
    let (app, counter) = app(layer);
    let key = unique("renewal-fault");
    let started = counter.started.notified();
    let first = tokio::spawn({
        let app = app.clone();
        let key = key.clone();
        async move { send(&app, post_with_key("/slow", &key, "")).await }
    });
    started.await;
    // Past the first lease: only a later renewal kept the claim alive.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    send(&app, post_with_key("/slow", &key, ""))
        .await
        .assert_problem(StatusCode::CONFLICT, "in-progress");
    counter.gate.add_permits(1);
    assert_eq!(first.await.unwrap().status, StatusCode::CREATED);
    assert!(send(&app, post_with_key("/slow", &key, ""))
        .await
        .replayed());
    assert_eq!(counter.runs(), 1);
}

/// Row "renewal failed": a renewal that fails is tried again soon; a blip never lets the
/// lease lapse under a running handler.
#[tokio::test]
async fn a_renewal_that_fails_once_keeps_the_claim() {
    the_claim_holds_through(|faults| Faults::arm(&faults.failing_renewals, 1)).await;
}

/// A renewal that hangs (a slow store, the store timeout far longer than the lease) is
/// given up in time to try again within the lease.
#[tokio::test]
async fn a_slow_renewal_does_not_outlast_the_lease() {
    the_claim_holds_through(|faults| Faults::arm(&faults.slow_renewals, 1)).await;
}

/// Row "graceful shutdown": a handler that outlived its client is waited for, within a
/// deadline, and its record is complete when the wait ends.
#[tokio::test]
async fn a_graceful_shutdown_waits_for_a_handler_that_outlived_its_client() {
    let layer = IdempotencyLayer::new(MemoryStore::new());
    let in_flight = layer.in_flight();
    let (app, counter) = app(layer);
    let key = unique("shutdown");
    let started = counter.started.notified();
    tokio::select! {
        _ = app.clone().oneshot(post_with_key("/slow", &key, "")) => panic!("gated"),
        () = started => {}
    }
    // The client is gone; the handler goes on, on a task of its own.
    assert_eq!(in_flight.count(), 1);
    assert!(
        !in_flight.wait(Duration::from_millis(50)).await,
        "not drained yet"
    );
    counter.gate.add_permits(1);
    assert!(in_flight.wait(Duration::from_secs(5)).await);
    assert_eq!(in_flight.count(), 0);
    assert!(send(&app, post_with_key("/slow", &key, ""))
        .await
        .replayed());
    assert_eq!(counter.runs(), 1);
}

/// Durations at the edges are refused when the layer is configured, with the knob named.
#[test]
fn durations_outside_their_bounds_are_configuration_errors() {
    let layer = || IdempotencyLayer::new(MemoryStore::new());
    let errors = [
        layer().lease(Duration::ZERO).unwrap_err(),
        layer().lease(Duration::MAX).unwrap_err(),
        layer().ttl(Duration::ZERO).unwrap_err(),
        layer().ttl(Duration::MAX).unwrap_err(),
        layer().wait_for_in_flight(Duration::ZERO).unwrap_err(),
        layer().wait_for_in_flight(Duration::MAX).unwrap_err(),
        layer().store_timeout(Duration::MAX).unwrap_err(),
        layer().completion_retry(Duration::MAX).unwrap_err(),
    ];
    let knobs: Vec<_> = errors
        .iter()
        .map(tower_idempotency::ConfigError::knob)
        .collect();
    assert_eq!(
        knobs,
        [
            "lease",
            "lease",
            "ttl",
            "ttl",
            "wait_for_in_flight",
            "wait_for_in_flight",
            "store_timeout",
            "completion_retry"
        ]
    );
    assert!(errors[0]
        .to_string()
        .starts_with("lease must be between 1s and"));
    assert!(layer().lease(Duration::from_secs(1)).is_ok());
    assert!(layer().ttl(Duration::from_secs(365 * 24 * 3600)).is_ok());
}

/// The memory store itself never panics on a far-future duration.
#[tokio::test]
async fn the_memory_store_takes_any_duration_without_panicking() {
    let store = MemoryStore::new();
    let key = RecordKey::new("edge", "", &unique("max"));
    let fp = Fingerprint::new([3; 32], [4; 32]);
    let token = LockToken::generate();
    assert_eq!(
        store.begin(&key, &fp, &token, Duration::MAX).await.unwrap(),
        Begin::Claimed
    );
    store.renew(&key, &token, Duration::MAX).await.unwrap();
    let response = StoredResponse {
        status: StatusCode::OK,
        headers: Default::default(),
        body: Some(Bytes::from_static(b"ok")),
        trailers: None,
    };
    store
        .complete(&key, &token, &response, Duration::MAX)
        .await
        .unwrap();
    assert_eq!(
        store
            .begin(&key, &fp, &LockToken::generate(), Duration::MAX)
            .await
            .unwrap(),
        Begin::Completed(response)
    );
}

/// The outcome a nested refusal reports is the inner layer's, not "fresh".
#[tokio::test]
async fn a_nested_replay_is_reported_as_a_replay() {
    let shared = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let a = instance(shared.clone(), Arc::clone(&runs), Duration::ZERO);
    let b = instance(shared, Arc::clone(&runs), Duration::ZERO);
    let key = unique("nested-outcome");
    assert_eq!(
        send(&a, post_with_key("/pay", &key, "")).await.outcome,
        Some(Outcome::Fresh)
    );
    assert_eq!(
        send(&b, post_with_key("/pay", &key, "")).await.outcome,
        Some(Outcome::Replayed)
    );
}

/// Row "memory store full": one caller's flood never evicts another caller's records;
/// once its share of the store is full, its new claims are refused with 503 +
/// Retry-After, and a response too large for its share is kept without its body (its
/// retry is told so, never run again).
#[tokio::test]
async fn a_flood_from_one_caller_never_makes_another_callers_retry_run_again() {
    let store = MemoryStore::builder().max_bytes(64 * 1024).build();
    let layer = IdempotencyLayer::new(store.clone()).scope(|parts| {
        parts
            .headers
            .get("x-tenant")?
            .to_str()
            .ok()
            .map(str::to_owned)
    });
    let (app, counter) = app(layer);
    let as_tenant = |tenant: &str, path: &str, key: &str| {
        let mut request = post_with_key(path, key, "{}");
        request
            .headers_mut()
            .insert("x-tenant", tenant.parse().unwrap());
        request
    };
    let victim_key = unique("victim");
    let first = send(&app, as_tenant("victim", "/orders", &victim_key)).await;
    assert_eq!(first.status, StatusCode::CREATED);

    // A response larger than the caller's share: delivered, kept without its body.
    let big = send(&app, as_tenant("flood", "/big/20000", "big")).await;
    assert_eq!((big.status, big.body.len()), (StatusCode::OK, 20_000));
    let runs = counter.runs();
    send(&app, as_tenant("flood", "/big/20000", "big"))
        .await
        .assert_problem(StatusCode::CONFLICT, "response-not-stored");
    assert_eq!(counter.runs(), runs);

    let mut refused = 0;
    for i in 0..200 {
        let answer = send(&app, as_tenant("flood", "/orders", &format!("flood-{i}"))).await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            answer.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
            assert!(answer.headers.contains_key("retry-after"));
            refused += 1;
        }
    }
    assert!(refused > 0, "the flood was refused once its share was full");
    let runs = counter.runs();
    let retry = send(&app, as_tenant("victim", "/orders", &victim_key)).await;
    assert!(retry.replayed(), "the victim's record was kept");
    assert_eq!(retry.body, first.body);
    assert_eq!(counter.runs(), runs, "and its retry did not run again");
    // Another caller still gets in.
    let other = send(&app, as_tenant("other", "/orders", &unique("other"))).await;
    assert_eq!(other.status, StatusCode::CREATED);
    let stats = store.stats();
    assert_eq!(stats.evicted, 0);
    assert_eq!(stats.refused_claims, refused);
    assert!(stats.bodies_dropped >= 1, "the big response, at least");
}

/// A nested fail-open layer whose store is down runs the handler unprotected: the outer
/// layer, on a healthy store, must record that run, not release it.
#[tokio::test]
async fn an_outer_layer_records_what_a_nested_fail_open_layer_ran() {
    let down = FaultyStore::new(MemoryStore::new());
    Faults::arm(&down.faults.lost_begin_replies, usize::MAX);
    let runs = Arc::new(AtomicUsize::new(0));
    let app = slow_router(Arc::clone(&runs), Duration::ZERO)
        .layer(IdempotencyLayer::new(down).fail_open(true))
        .layer(IdempotencyLayer::new(MemoryStore::new()));
    let key = unique("nested-fail-open");
    let first = send(&app, post_with_key("/pay", &key, "")).await;
    assert_eq!(
        (first.status, first.outcome),
        (StatusCode::CREATED, Some(Outcome::Fresh))
    );
    let retry = send(&app, post_with_key("/pay", &key, "")).await;
    assert!(
        retry.replayed(),
        "the outer layer recorded the unprotected run"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Under an outer fail-open layer whose store is down, a layer that claims guards the
/// layers inside it: one on its own store recognises its claim, runs the handler once and
/// the retry replays, rather than a second claim answering "in progress".
#[tokio::test]
async fn under_a_fail_open_layer_two_layers_on_one_store_run_the_handler_once() {
    let down = FaultyStore::new(MemoryStore::new());
    Faults::arm(&down.faults.lost_begin_replies, usize::MAX);
    let healthy = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let app = slow_router(Arc::clone(&runs), Duration::ZERO)
        .layer(IdempotencyLayer::new(healthy.clone()))
        .layer(IdempotencyLayer::new(healthy))
        .layer(IdempotencyLayer::new(down).fail_open(true));
    let key = unique("under-fail-open");
    let first = send(&app, post_with_key("/pay", &key, "")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = send(&app, post_with_key("/pay", &key, "")).await;
    assert!(retry.replayed(), "recorded by the healthy layers");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Fail-open is for outages: a full store refuses (503) and runs nothing, even then.
#[tokio::test]
async fn fail_open_never_runs_a_request_the_full_memory_store_refused() {
    let store = MemoryStore::builder().max_entries(1).build();
    let (app, counter) = app(IdempotencyLayer::new(store).fail_open(true));
    let started = counter.started.notified();
    let held = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_with_key("/slow", "held", "")).await }
    });
    started.await;
    send(&app, post_with_key("/orders", "another", ""))
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
    assert_eq!(counter.runs(), 1, "only the held request ran");
    counter.gate.add_permits(1);
    assert_eq!(held.await.unwrap().status, StatusCode::CREATED);
}
