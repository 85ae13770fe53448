//! Concurrent identical requests, disconnects, leases.

use std::time::Duration;

use axum::http::StatusCode;
use tokio::task::JoinSet;
use tower::ServiceExt;
use tower_idempotency::{IdempotencyLayer, MemoryStore, Outcome};

use crate::support::{app, post_with_key, read, send, unique, Answer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_requests_run_the_handler_once() {
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()));
    let key = unique("race");
    let mut requests = JoinSet::new();
    for _ in 0..64 {
        let (app, key) = (app.clone(), key.clone());
        requests.spawn(async move { send(&app, post_with_key("/slow", &key, "same")).await });
    }
    // The handler is held at its gate, so 63 answers must come without it finishing.
    let mut answers: Vec<Answer> = Vec::new();
    for _ in 0..63 {
        answers.push(requests.join_next().await.unwrap().unwrap());
    }
    for answer in &answers {
        answer.assert_problem(StatusCode::CONFLICT, "in-progress");
        assert_eq!(answer.headers["retry-after"], "1");
        assert_eq!(answer.outcome, Some(Outcome::InProgress));
    }
    assert_eq!(counter.runs(), 1);
    counter.gate.add_permits(1);
    let last = requests.join_next().await.unwrap().unwrap();
    assert_eq!(last.status, StatusCode::CREATED);
    assert_eq!(counter.runs(), 1);
    // A retry after the fact replays.
    let retry = send(&app, post_with_key("/slow", &key, "same")).await;
    assert!(retry.replayed());
    assert_eq!(retry.body, last.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_wait_mode_concurrent_requests_get_the_replay() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .wait_for_in_flight(Duration::from_secs(10))
        .unwrap();
    let (app, counter) = app(layer);
    let key = unique("wait");
    let started = counter.started.notified();
    let mut requests = JoinSet::new();
    for _ in 0..64 {
        let (app, key) = (app.clone(), key.clone());
        requests.spawn(async move { send(&app, post_with_key("/slow", &key, "same")).await });
    }
    started.await;
    counter.gate.add_permits(1);
    let answers = requests.join_all().await;
    assert_eq!(counter.runs(), 1);
    let fresh: Vec<_> = answers
        .iter()
        .filter(|a| a.outcome == Some(Outcome::Fresh))
        .collect();
    assert_eq!(fresh.len(), 1);
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::CREATED);
        assert_eq!(answer.body, fresh[0].body);
    }
    assert_eq!(answers.iter().filter(|a| a.replayed()).count(), 63);
}

#[tokio::test]
async fn a_client_that_disconnects_does_not_stop_the_write_or_its_record() {
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()));
    let key = unique("disconnect");
    let started = counter.started.notified();
    let request = app.clone().oneshot(post_with_key("/slow", &key, "x"));
    // Drive the request until the handler runs, then drop it, as hyper does when the
    // connection closes.
    tokio::select! {
        _ = request => panic!("the gated handler cannot have finished"),
        () = started => {}
    }
    assert_eq!(counter.runs(), 1);
    // Still in flight: a retry now is told to wait.
    send(&app, post_with_key("/slow", &key, "x"))
        .await
        .assert_problem(StatusCode::CONFLICT, "in-progress");
    counter.gate.add_permits(1);
    crate::support::eventually("the abandoned request is recorded", async || {
        send(&app, post_with_key("/slow", &key, "x"))
            .await
            .replayed()
    })
    .await;
    let retry = send(&app, post_with_key("/slow", &key, "x")).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.body, "slow run 1");
    assert_eq!(counter.runs(), 1);
}

#[tokio::test]
async fn without_run_to_completion_a_dropped_request_releases_its_key() {
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()).run_to_completion(false));
    let key = unique("no-completion");
    let started = counter.started.notified();
    tokio::select! {
        _ = app.clone().oneshot(post_with_key("/slow", &key, "x")) => panic!("gated"),
        () = started => {}
    }
    counter.gate.add_permits(1);
    crate::support::eventually("the key is released", async || {
        send(&app, post_with_key("/slow", &key, "x")).await.status == StatusCode::CREATED
    })
    .await;
    assert_eq!(counter.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_renewed_while_a_slow_handler_runs() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .lease(Duration::from_secs(3))
        .unwrap();
    let (app, counter) = app(layer);
    let key = unique("slow-lease");
    let first = tokio::spawn({
        let app = app.clone();
        let key = key.clone();
        async move {
            read(
                app.oneshot(post_with_key("/slow", &key, "x"))
                    .await
                    .unwrap(),
            )
            .await
        }
    });
    // Five leases later, the claim is still held: no takeover, no second run.
    tokio::time::sleep(Duration::from_secs(15)).await;
    send(&app, post_with_key("/slow", &key, "x"))
        .await
        .assert_problem(StatusCode::CONFLICT, "in-progress");
    assert_eq!(counter.runs(), 1);
    counter.gate.add_permits(1);
    assert_eq!(first.await.unwrap().status, StatusCode::CREATED);
    assert!(send(&app, post_with_key("/slow", &key, "x"))
        .await
        .replayed());
}
