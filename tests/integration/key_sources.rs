//! Keys read from the body (a JSON field, a function of the request), and fingerprints
//! that leave out what changes on every retry.

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use tower_idempotency::{
    store::{IdempotencyStore, RecordKey},
    IdempotencyLayer, MemoryStore, Outcome,
};

use crate::support::{app, post_with_key, send, Answer};

/// A POST of a JSON `body`, without a key header.
fn post(body: &str) -> Request<Body> {
    Request::post("/orders")
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn run_of(answer: &Answer) -> u64 {
    answer.json()["run"].as_u64().expect("a handler's answer")
}

#[tokio::test]
async fn a_key_in_a_json_field_is_claimed_and_replayed() {
    let store = MemoryStore::new();
    let layer = IdempotencyLayer::new(store.clone())
        .key_from_json("idempotency_key")
        .unwrap();
    let (app, counter) = app(layer);
    let body = r#"{"idempotency_key":"sq-7f3a","amount":100}"#;
    let first = send(&app, post(body)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.outcome, Some(Outcome::Fresh));
    let retry = send(&app, post(body)).await;
    assert!(retry.replayed());
    assert_eq!(run_of(&retry), run_of(&first));
    assert!(store
        .get(&RecordKey::new("idem", "", "sq-7f3a"))
        .await
        .unwrap()
        .is_some());
    // The same key with another body: a conflict.
    let other = send(&app, post(r#"{"idempotency_key":"sq-7f3a","amount":900}"#)).await;
    other.assert_problem(StatusCode::CONFLICT, "conflict");
    // A body without the field, with the key header: the header's key protects it.
    let headed = send(&app, post_with_key("/orders", "hdr-1", r#"{"amount":1}"#)).await;
    assert_eq!(headed.outcome, Some(Outcome::Fresh));
    let again = send(&app, post_with_key("/orders", "hdr-1", r#"{"amount":1}"#)).await;
    assert!(
        again.replayed(),
        "never run unprotected while a key was sent"
    );
    // An empty body holds no key: passed through, not an invalid-json problem.
    let empty = send(&app, post("")).await;
    assert_eq!(empty.status, StatusCode::CREATED);
    assert_eq!(empty.outcome, None, "passed through");
    assert_eq!(counter.runs(), 3);
}

#[tokio::test]
async fn a_json_pointer_names_a_nested_key() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .key_from_json("/meta/request_id")
        .unwrap();
    let (app, counter) = app(layer);
    let body = r#"{"meta":{"request_id":"aip-155-1"},"name":"shelf"}"#;
    send(&app, post(body)).await;
    assert!(send(&app, post(body)).await.replayed());
    assert_eq!(counter.runs(), 1);
}

#[tokio::test]
async fn a_body_without_its_key_is_a_request_without_one() {
    let (optional, counter) = app(IdempotencyLayer::new(MemoryStore::new())
        .key_from_json("idempotency_key")
        .unwrap());
    for _ in 0..2 {
        let answer = send(&optional, post(r#"{"amount":1}"#)).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        assert!(!answer.replayed());
    }
    assert_eq!(counter.runs(), 2, "no key: each runs, nothing recorded");

    let (required, counter) = app(IdempotencyLayer::new(MemoryStore::new())
        .key_from_json("idempotency_key")
        .unwrap()
        .require_key(true));
    let missing = send(&required, post(r#"{"amount":1}"#)).await;
    missing.assert_problem(StatusCode::BAD_REQUEST, "invalid-key");
    let detail = missing.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("`idempotency_key` field of the JSON body"),
        "{detail}"
    );
    let number = send(&required, post(r#"{"idempotency_key":42}"#)).await;
    number.assert_problem(StatusCode::BAD_REQUEST, "invalid-key");
    assert!(number.json()["detail"]
        .as_str()
        .unwrap()
        .contains("JSON string"));
    let spaced = send(&required, post(r#"{"idempotency_key":"has space"}"#)).await;
    spaced.assert_problem(StatusCode::BAD_REQUEST, "invalid-key");
    assert_eq!(counter.runs(), 0);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_400_nothing_run_nothing_stored() {
    let store = MemoryStore::new();
    let json_key = IdempotencyLayer::new(store.clone())
        .key_from_json("idempotency_key")
        .unwrap();
    let canonical = IdempotencyLayer::new(store.clone()).fingerprint_canonical_json();
    for (layer, request) in [
        (json_key, post("{not json")),
        (canonical, post_with_key("/orders", "k-json", "{not json")),
    ] {
        let (app, counter) = app(layer);
        let answer = send(&app, request).await;
        answer.assert_problem(StatusCode::BAD_REQUEST, "invalid-json");
        assert_eq!(answer.outcome, Some(Outcome::InvalidJson));
        assert_eq!(counter.runs(), 0);
    }
    assert!(store
        .get(&RecordKey::new("idem", "", "k-json"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.stats().records, 0);
}

#[tokio::test]
async fn a_key_from_a_function_of_the_request() {
    // A webhook: the event id is in the body, the delivery id in a header changes on
    // every redelivery.
    let layer = IdempotencyLayer::new(MemoryStore::new()).key_from_request(|_parts, body| {
        let event: serde_json::Value = serde_json::from_slice(body).ok()?;
        Some(format!("evt:{}", event["id"].as_str()?))
    });
    let (app, counter) = app(layer);
    let delivery = |n: u32| {
        Request::post("/orders")
            .header("x-delivery", n.to_string())
            .body(Body::from(r#"{"id":"evt_1","type":"paid"}"#))
            .unwrap()
    };
    send(&app, delivery(1)).await;
    assert!(send(&app, delivery(2)).await.replayed());
    assert_eq!(counter.runs(), 1);
}

#[tokio::test]
async fn a_field_left_out_of_the_fingerprint_may_change_on_a_retry() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .fingerprint_ignore_json(["client_time", "/meta/nonce"])
        .unwrap();
    let (app, counter) = app(layer);
    let send_with = |time: u32, nonce: &str, amount: u32| {
        let body = format!(
            r#"{{"amount":{amount},"client_time":{time},"meta":{{"nonce":"{nonce}","v":1}}}}"#
        );
        send(&app, post_with_key("/orders", "pay-1", &body))
    };
    let first = send_with(1, "a", 100).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = send_with(2, "b", 100).await;
    assert!(
        retry.replayed(),
        "only the excluded fields differ: {retry:?}"
    );
    let other = send_with(3, "c", 200).await;
    other.assert_problem(StatusCode::CONFLICT, "conflict");
    assert_eq!(counter.runs(), 1);
}

#[tokio::test]
async fn canonical_json_keeps_numbers_as_sent_and_refuses_a_member_named_twice() {
    let (app, counter) =
        app(IdempotencyLayer::new(MemoryStore::new()).fingerprint_canonical_json());
    send(
        &app,
        post_with_key("/orders", "n-1", r#"{"amount":0.30000000000000001}"#),
    )
    .await;
    send(&app, post_with_key("/orders", "n-1", r#"{"amount":0.3}"#))
        .await
        .assert_problem(StatusCode::CONFLICT, "conflict");
    let twice = send(
        &app,
        post_with_key("/orders", "n-2", r#"{"amount":1,"amount":2}"#),
    )
    .await;
    twice.assert_problem(StatusCode::BAD_REQUEST, "invalid-json");
    assert_eq!(counter.runs(), 1);
}

#[tokio::test]
async fn canonical_json_ignores_member_order_and_whitespace_and_bytes_do_not() {
    let body = r#"{"item":"desk","quantity":1}"#;
    let reordered = "{ \"quantity\": 1,\n  \"item\": \"desk\" }";
    let (canonical, counter) =
        app(IdempotencyLayer::new(MemoryStore::new()).fingerprint_canonical_json());
    send(&canonical, post_with_key("/orders", "c-1", body)).await;
    assert!(send(&canonical, post_with_key("/orders", "c-1", reordered))
        .await
        .replayed());
    let changed = send(
        &canonical,
        post_with_key("/orders", "c-1", r#"{"item":"desk","quantity":2}"#),
    )
    .await;
    changed.assert_problem(StatusCode::CONFLICT, "conflict");
    assert_eq!(counter.runs(), 1);

    let (exact, _) = app(IdempotencyLayer::new(MemoryStore::new()));
    send(&exact, post_with_key("/orders", "c-1", body)).await;
    send(&exact, post_with_key("/orders", "c-1", reordered))
        .await
        .assert_problem(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn a_header_left_out_of_the_fingerprint_may_change_on_a_retry() {
    let with_token = |token: &str| {
        let mut request = post_with_key("/orders", "tok-1", "{}");
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let (strict, _) = app(IdempotencyLayer::new(MemoryStore::new()));
    send(&strict, with_token("a")).await;
    send(&strict, with_token("b"))
        .await
        .assert_problem(StatusCode::CONFLICT, "other-credentials");

    let (lenient, counter) = app(IdempotencyLayer::new(MemoryStore::new())
        .fingerprint_ignore_headers([axum::http::header::AUTHORIZATION]));
    send(&lenient, with_token("a")).await;
    assert!(send(&lenient, with_token("b")).await.replayed());
    assert_eq!(counter.runs(), 1);
}

#[test]
fn malformed_fields_are_refused_when_the_layer_is_built() {
    let layer = || IdempotencyLayer::new(MemoryStore::new());
    assert!(layer().key_from_json("").is_err());
    assert!(layer().key_from_json("/a~2b").is_err());
    assert!(layer().fingerprint_ignore_json(["ok", ""]).is_err());
    assert!(layer().key_from_json("/a~1b/~0c").is_ok());
}
