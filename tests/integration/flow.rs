//! The main request flow: fresh, replay, conflict, scope, statuses.

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use tower_idempotency::{IdempotencyLayer, MemoryStore, Outcome};

use crate::support::{app, post_with_key, send, unique};

#[tokio::test]
async fn a_retry_replays_the_first_response_byte_for_byte_without_running_again() {
    let layer = IdempotencyLayer::new(MemoryStore::new());
    let metrics = layer.metrics();
    let (app, counter) = app(layer);
    let key = unique("order");

    let first = send(&app, post_with_key("/orders", &key, r#"{"item":"book"}"#)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.outcome, Some(Outcome::Fresh));
    assert!(!first.replayed());
    assert_eq!(counter.runs(), 1);

    for _ in 0..3 {
        let retry = send(&app, post_with_key("/orders", &key, r#"{"item":"book"}"#)).await;
        assert_eq!(retry.status, first.status);
        assert_eq!(retry.body, first.body);
        assert!(retry.replayed());
        assert_eq!(retry.outcome, Some(Outcome::Replayed));
        for name in ["content-type", "location", "x-run", "content-length"] {
            assert_eq!(
                retry.headers.get(name),
                first.headers.get(name),
                "header {name}"
            );
        }
        assert!(
            retry.headers.get("set-cookie").is_none(),
            "set-cookie is never stored"
        );
    }
    assert_eq!(counter.runs(), 1);
    assert_eq!(metrics.count(Outcome::Fresh), 1);
    assert_eq!(metrics.count(Outcome::Replayed), 3);
}

#[tokio::test]
async fn the_same_key_on_a_different_request_is_a_conflict() {
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()));
    let key = unique("conflict");
    let original = || {
        Request::post("/orders?x=1")
            .header("idempotency-key", &key)
            .header("authorization", "Bearer alice")
            .body(Body::from("{\"item\":\"book\"}"))
            .unwrap()
    };
    assert_eq!(send(&app, original()).await.status, StatusCode::CREATED);

    let mut other_body = original();
    *other_body.body_mut() = Body::from("{\"item\":\"pen\"}");
    let mut other_query = original();
    *other_query.uri_mut() = "/orders?x=2".parse().unwrap();
    let mut other_method = original();
    *other_method.method_mut() = axum::http::Method::PATCH;
    let mut other_caller = original();
    other_caller
        .headers_mut()
        .insert("authorization", "Bearer mallory".parse().unwrap());

    let mut other_host = original();
    other_host
        .headers_mut()
        .insert("host", "tenant-b.example".parse().unwrap());

    for request in [other_body, other_query, other_method, other_host] {
        let answer = send(&app, request).await;
        answer.assert_problem(StatusCode::CONFLICT, "conflict");
        assert_eq!(answer.outcome, Some(Outcome::Conflict));
        assert!(
            !answer.body.windows(5).any(|w| w == b"alice"),
            "credentials never echoed"
        );
    }
    // The same request from another caller: refused, never replayed, and never told to
    // use a new key (a refreshed token would then write twice).
    let answer = send(&app, other_caller).await;
    answer.assert_problem(StatusCode::CONFLICT, "other-credentials");
    assert_eq!(answer.outcome, Some(Outcome::OtherCredentials));
    let detail = answer.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("original credentials"), "{detail}");
    assert!(detail.contains("do not send it with a new key"), "{detail}");
    assert!(!answer
        .body
        .windows(5)
        .any(|w| w == b"alice" || w == b"allor"));
    assert_eq!(counter.runs(), 1);
    // The original still replays.
    assert!(send(&app, original()).await.replayed());
}

#[tokio::test]
async fn a_conflict_can_answer_422() {
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new())
        .conflict_status(tower_idempotency::ConflictStatus::UnprocessableContent));
    let key = unique("conflict-422");
    send(&app, post_with_key("/orders", &key, "a")).await;
    send(&app, post_with_key("/orders", &key, "b"))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "conflict");
    assert_eq!(counter.runs(), 1);
}

#[tokio::test]
async fn tenants_have_separate_key_spaces() {
    let layer = IdempotencyLayer::new(MemoryStore::new()).scope(|parts| {
        parts
            .headers
            .get("x-tenant")?
            .to_str()
            .ok()
            .map(str::to_owned)
    });
    let (app, counter) = app(layer);
    let request = |tenant: &str, body: &str| {
        let mut request = post_with_key("/orders", "shared-key", body);
        request
            .headers_mut()
            .insert("x-tenant", tenant.parse().unwrap());
        request
    };
    let acme = send(&app, request("acme", "acme order")).await;
    let globex = send(&app, request("globex", "globex order")).await;
    assert_eq!(
        (acme.status, globex.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_eq!(counter.runs(), 2);

    let acme_retry = send(&app, request("acme", "acme order")).await;
    let globex_retry = send(&app, request("globex", "globex order")).await;
    assert!(acme_retry.replayed() && globex_retry.replayed());
    assert_eq!(acme_retry.body, acme.body);
    assert_eq!(globex_retry.body, globex.body);
    assert_ne!(acme.body, globex.body);
    assert_eq!(counter.runs(), 2);
}

#[tokio::test]
async fn a_scope_without_fingerprint_headers_replays_across_token_refresh() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .scope(|parts| {
            parts
                .headers
                .get("x-user")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .fingerprint_headers([]);
    let (app, counter) = app(layer);
    let request = |token: &str| {
        let mut request = post_with_key("/orders", "refresh", "same body");
        request
            .headers_mut()
            .insert("x-user", "alice".parse().unwrap());
        request
            .headers_mut()
            .insert("authorization", token.parse().unwrap());
        request
    };
    send(&app, request("Bearer old")).await;
    assert!(send(&app, request("Bearer refreshed")).await.replayed());
    assert_eq!(counter.runs(), 1);
}

#[tokio::test]
async fn transient_statuses_release_the_key_and_other_statuses_are_stored() {
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()));
    for code in [503, 429, 425] {
        let key = unique("transient");
        let path = format!("/status/{code}");
        let before = counter.runs();
        let first = send(&app, post_with_key(&path, &key, "")).await;
        assert_eq!(first.status.as_u16(), code);
        assert_eq!(first.outcome, Some(Outcome::Released));
        let retry = send(&app, post_with_key(&path, &key, "")).await;
        assert!(!retry.replayed());
        assert_eq!(
            counter.runs(),
            before + 2,
            "status {code} must run again on retry"
        );
    }
    // 408 too: a timeout layer inside ours answers it after cutting a write in half.
    for code in [500, 400, 422, 200, 408] {
        let key = unique("stored");
        let path = format!("/status/{code}");
        let first = send(&app, post_with_key(&path, &key, "")).await;
        let before = counter.runs();
        let retry = send(&app, post_with_key(&path, &key, "")).await;
        assert!(retry.replayed(), "status {code} is stored");
        assert_eq!(
            (retry.status, retry.body.clone()),
            (first.status, first.body.clone())
        );
        assert_eq!(counter.runs(), before);
    }
}

#[tokio::test]
async fn the_transient_set_is_configurable() {
    let layer = IdempotencyLayer::new(MemoryStore::new())
        .transient_statuses([StatusCode::INTERNAL_SERVER_ERROR]);
    let (app, counter) = app(layer);
    let key = unique("custom-transient");
    send(&app, post_with_key("/status/500", &key, "")).await;
    send(&app, post_with_key("/status/500", &key, "")).await;
    assert_eq!(counter.runs(), 2);
    let key = unique("custom-stored");
    send(&app, post_with_key("/status/503", &key, "")).await;
    assert!(send(&app, post_with_key("/status/503", &key, ""))
        .await
        .replayed());
}

#[tokio::test]
async fn other_methods_and_keyless_requests_pass_through() {
    let layer = IdempotencyLayer::new(MemoryStore::new());
    let metrics = layer.metrics();
    let (app, counter) = app(layer);
    for _ in 0..2 {
        let answer = send(
            &app,
            Request::post("/orders").body(Body::from("x")).unwrap(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::CREATED);
        assert_eq!(answer.outcome, None);
    }
    assert_eq!(counter.runs(), 2);
    assert!(metrics.snapshot().iter().all(|(_, n)| *n == 0));
}

/// Cookie sessions: by default the whole `Cookie` header identifies the caller, so another
/// session never gets this one's response; with the session cookie named, a retry whose
/// analytics cookie changed still replays.
#[tokio::test]
async fn cookie_sessions_never_share_a_response_and_named_cookies_replay() {
    let with_cookie = |cookie: &str, key: &str| {
        let mut request = post_with_key("/orders", key, "{\"item\":\"book\"}");
        request
            .headers_mut()
            .insert("cookie", cookie.parse().unwrap());
        request
    };
    let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()));
    let key = unique("cookie-default");
    let first = send(&app, with_cookie("session=alice; _ga=1", &key)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other_session = send(&app, with_cookie("session=bob; _ga=1", &key)).await;
    other_session.assert_problem(StatusCode::CONFLICT, "other-credentials");
    assert!(!other_session.replayed());
    assert_eq!(counter.runs(), 1);

    let layer = IdempotencyLayer::new(MemoryStore::new()).fingerprint_cookies(["session"]);
    let (named, counter) = crate::support::app(layer);
    let key = unique("cookie-named");
    send(&named, with_cookie("session=alice; _ga=1", &key)).await;
    let retry = send(&named, with_cookie("_ga=2; session=alice", &key)).await;
    assert!(retry.replayed(), "only the session cookie counts");
    send(&named, with_cookie("session=bob; _ga=1", &key))
        .await
        .assert_problem(StatusCode::CONFLICT, "other-credentials");
    assert_eq!(counter.runs(), 1);
}
