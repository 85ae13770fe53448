//! `ReplayCache`: a retry replayed once by the store behind it is replayed again from the
//! copy, with no call to that store; nothing else is answered from a copy. Each test counts
//! the handler's real runs and the calls that reach the store behind.

use std::{sync::atomic::Ordering, time::Duration};

use axum::http::StatusCode;
use tower_idempotency::{
    store::{Begin, Fingerprint, IdempotencyStore, LockToken, RecordKey, ReplayCache},
    IdempotencyLayer, MemoryStore, Outcome,
};

use crate::{
    faulty_store::FaultyStore,
    support::{app, post_with_key, send, Counter},
};

/// A memory store that counts the claims reaching it and can be taken down.
type Behind = FaultyStore<MemoryStore>;

fn behind() -> Behind {
    FaultyStore::new(MemoryStore::new())
}

fn cached(cache: ReplayCache<Behind>) -> (axum::Router, Counter) {
    app(IdempotencyLayer::new(cache))
}

#[tokio::test]
async fn the_second_retry_is_replayed_from_the_copy() {
    let behind = behind();
    let cache = ReplayCache::new(behind.clone());
    let (app, counter) = cached(cache.clone());

    let first = send(&app, post_with_key("/orders", "k1", "{\"n\":1}")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(behind.begins(), 1);
    for retry in 1..=3 {
        let again = send(&app, post_with_key("/orders", "k1", "{\"n\":1}")).await;
        assert_eq!(again.outcome, Some(Outcome::Replayed), "retry {retry}");
        assert!(again.replayed());
        assert_eq!(again.body, first.body, "the same response, byte for byte");
        assert_eq!(again.headers["location"], first.headers["location"]);
    }
    // The first retry was the store's; the next two, the copy's.
    assert_eq!(behind.begins(), 2);
    assert_eq!(counter.runs(), 1);
    let stats = cache.stats();
    assert_eq!((stats.lookups, stats.hits, stats.records), (4, 2, 1));
}

#[tokio::test]
async fn a_different_request_with_a_cached_key_is_the_stores_to_answer() {
    let behind = behind();
    let (app, counter) = cached(ReplayCache::new(behind.clone()));
    send(&app, post_with_key("/orders", "k2", "{\"n\":1}")).await;
    send(&app, post_with_key("/orders", "k2", "{\"n\":1}")).await;
    let from_store = behind.begins();
    // A copy may have outlived its record, and the key may now hold this very request:
    // only the store can tell a conflict.
    let conflict = send(&app, post_with_key("/orders", "k2", "{\"n\":2}")).await;
    assert_eq!(conflict.outcome, Some(Outcome::Conflict));
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(behind.begins(), from_store + 1, "asked the store");
    assert_eq!(counter.runs(), 1);
}

#[tokio::test]
async fn the_copy_replays_while_the_store_is_down_and_nothing_else_is_answered() {
    let behind = behind();
    let (app, counter) = cached(ReplayCache::new(behind.clone()));
    send(&app, post_with_key("/orders", "k3", "a")).await;
    send(&app, post_with_key("/orders", "k3", "a")).await;

    behind.faults.down.store(true, Ordering::SeqCst);
    let replay = send(&app, post_with_key("/orders", "k3", "a")).await;
    assert_eq!(replay.outcome, Some(Outcome::Replayed));
    // A key the copies do not hold goes to the store, which is down: refused, not run.
    let fresh = send(&app, post_with_key("/orders", "k4", "a")).await;
    fresh.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
    assert_eq!(counter.runs(), 1);
}

#[tokio::test]
async fn a_key_in_flight_is_never_taken_from_a_copy() {
    let behind = behind();
    let (app, counter) = cached(ReplayCache::new(behind.clone()));
    let running = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_with_key("/slow", "k5", "")).await }
    });
    counter.started.notified().await;
    for _ in 0..2 {
        let busy = send(&app, post_with_key("/slow", "k5", "")).await;
        assert_eq!(busy.outcome, Some(Outcome::InProgress));
    }
    assert_eq!(behind.begins(), 3, "each asked the store");
    counter.gate.add_permits(1);
    assert_eq!(running.await.unwrap().status, StatusCode::CREATED);
    let replay = send(&app, post_with_key("/slow", "k5", "")).await;
    assert_eq!(replay.outcome, Some(Outcome::Replayed));
    assert_eq!(behind.begins(), 4, "the first replay is the store's");
    assert_eq!(counter.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_copy_ages_out_after_max_age() {
    let behind = behind();
    let cache = ReplayCache::new(behind.clone()).max_age(Duration::from_secs(10));
    let (app, counter) = cached(cache);
    send(&app, post_with_key("/orders", "k6", "a")).await;
    send(&app, post_with_key("/orders", "k6", "a")).await;
    send(&app, post_with_key("/orders", "k6", "a")).await;
    assert_eq!(behind.begins(), 2);

    tokio::time::advance(Duration::from_secs(11)).await;
    let later = send(&app, post_with_key("/orders", "k6", "a")).await;
    assert_eq!(later.outcome, Some(Outcome::Replayed));
    assert_eq!(behind.begins(), 3, "aged out: the store answered again");
    assert_eq!(counter.runs(), 1);
}

#[tokio::test]
async fn a_zero_max_age_keeps_no_copy() {
    let behind = behind();
    let cache = ReplayCache::new(behind.clone()).max_age(Duration::ZERO);
    let (app, _) = cached(cache.clone());
    for _ in 0..3 {
        send(&app, post_with_key("/orders", "k7", "a")).await;
    }
    assert_eq!(behind.begins(), 3);
    assert_eq!((cache.stats().hits, cache.stats().records), (0, 0));
}

#[tokio::test]
async fn the_copies_are_bounded_and_an_evicted_one_is_a_round_trip() {
    let behind = behind();
    let cache = ReplayCache::new(behind.clone()).max_entries(2);
    let (app, counter) = cached(cache.clone());
    let replayed = async |key: &str| {
        send(&app, post_with_key("/orders", key, "x"))
            .await
            .replayed()
    };
    for key in ["a", "b"] {
        assert!(!replayed(key).await);
        assert!(replayed(key).await);
    }
    // "a" used again (from its copy), so "b" is now the least recently used.
    assert!(replayed("a").await);
    assert!(!replayed("c").await);
    assert!(replayed("c").await);
    assert_eq!((cache.stats().records, cache.stats().evicted), (2, 1));
    let begins = behind.begins();
    assert!(replayed("a").await && replayed("c").await);
    assert_eq!(behind.begins(), begins, "a and c kept");
    assert!(replayed("b").await);
    assert_eq!(behind.begins(), begins + 1, "b evicted: a round trip");
    assert_eq!(counter.runs(), 3);

    // A byte bound too small for any record keeps none, and loses nothing.
    let tiny = ReplayCache::new(behind.clone()).max_bytes(16);
    let (app, counter) = cached(tiny.clone());
    for _ in 0..3 {
        send(&app, post_with_key("/orders", "d", "x")).await;
    }
    assert_eq!((tiny.stats().hits, tiny.stats().records), (0, 0));
    assert_eq!(counter.runs(), 1);
}

/// One busy scope's copies evict the others' (and their own oldest): the cache never
/// stops taking copies because one caller filled it.
#[tokio::test]
async fn one_scope_filling_the_cache_does_not_stop_it() {
    let behind = behind();
    let cache = ReplayCache::new(behind.clone()).max_entries(2);
    let layer = IdempotencyLayer::new(cache.clone())
        .scope(|parts| Some(parts.headers.get("x-tenant")?.to_str().ok()?.to_owned()));
    let (app, counter) = app(layer);
    let replayed = async |key: &str| {
        let mut request = post_with_key("/orders", key, "x");
        request
            .headers_mut()
            .insert("x-tenant", "busy".parse().unwrap());
        send(&app, request).await.replayed()
    };
    for key in ["a", "b", "c", "d"] {
        assert!(!replayed(key).await);
        assert!(replayed(key).await);
    }
    let begins = behind.begins();
    assert!(replayed("d").await && replayed("c").await);
    assert_eq!(behind.begins(), begins, "the newest copies kept");
    assert_eq!(cache.stats().evicted, 2);
    assert_eq!(counter.runs(), 4);
}

/// A copy is keyed by namespace, scope and key, and gives back the response as stored:
/// repeated headers, a non-UTF-8 value, every byte in the body, trailers.
#[tokio::test]
async fn copies_are_separate_per_record_and_exact() {
    use tower_idempotency::store::conformance::sample_response;
    let cache = ReplayCache::new(MemoryStore::new());
    let fp = Fingerprint::new([1; 32], [2; 32]);
    let lease = Duration::from_secs(30);
    let keys = [
        RecordKey::new("one", "", "k"),
        RecordKey::new("two", "", "k"),
        RecordKey::new("one", "tenant-a", "k"),
        RecordKey::new("one", "tenant-b", "k"),
    ];
    let response = |i: usize| {
        let mut response = sample_response();
        response.headers.insert("x-record", i.into());
        response
    };
    for (i, key) in keys.iter().enumerate() {
        let token = LockToken::generate();
        assert_eq!(
            cache.begin(key, &fp, &token, lease).await.unwrap(),
            Begin::Claimed
        );
        let ttl = Duration::from_secs(3600);
        cache
            .complete(key, &token, &response(i), ttl)
            .await
            .unwrap();
    }
    for _ in 0..2 {
        for (i, key) in keys.iter().enumerate() {
            let answer = cache.begin(key, &fp, &LockToken::generate(), lease).await;
            assert_eq!(answer.unwrap(), Begin::Completed(response(i)), "{key:?}");
        }
    }
    assert_eq!(cache.stats().hits, 4, "the second round from the copies");
}

/// The trade, on purpose: a copy outlives its record by up to `max_age`, replaying it to
/// the same request (never running it), while a different request goes to the store.
#[tokio::test(start_paused = true)]
async fn a_copy_may_replay_past_the_stores_ttl_until_max_age() {
    let behind = behind();
    let cache = ReplayCache::new(behind.clone()).max_age(Duration::from_secs(60));
    let layer = IdempotencyLayer::new(cache)
        .ttl(Duration::from_secs(5))
        .unwrap();
    let (app, counter) = app(layer);
    send(&app, post_with_key("/orders", "k8", "a")).await;
    send(&app, post_with_key("/orders", "k8", "a")).await;

    tokio::time::advance(Duration::from_secs(10)).await;
    let key = RecordKey::new(tower_idempotency::defaults::NAMESPACE, "", "k8");
    assert_eq!(
        behind.get(&key).await.unwrap(),
        None,
        "expired in the store"
    );
    let late = send(&app, post_with_key("/orders", "k8", "a")).await;
    assert_eq!(late.outcome, Some(Outcome::Replayed), "from the copy");
    let other = send(&app, post_with_key("/orders", "k8", "b")).await;
    assert_eq!(
        other.outcome,
        Some(Outcome::Fresh),
        "the store let it run afresh"
    );
    assert_eq!(counter.runs(), 2);

    tokio::time::advance(Duration::from_secs(61)).await;
    let aged = send(&app, post_with_key("/orders", "k8", "a")).await;
    assert_eq!(
        aged.outcome,
        Some(Outcome::Fresh),
        "copy aged out; the store's record expired"
    );
    assert_eq!(counter.runs(), 3);
}

/// On a real backend: the second retry costs no message to the server, and is replayed
/// while the server is cut off; a fresh key then is refused, not run.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) async fn a_replay_cache_spares_the_backend<B: crate::backends::Backend>(url: &str) {
    let (store, proxy) = B::proxied(url).await;
    let (app, counter) = app(IdempotencyLayer::new(ReplayCache::new(store)));
    // Warm up: connections opened, statements prepared.
    send(
        &app,
        post_with_key("/orders", &crate::support::unique("warm"), "w"),
    )
    .await;
    let key = crate::support::unique("cached");
    let cost = async |body: &str| {
        let before = proxy.messages();
        let answer = send(&app, post_with_key("/orders", &key, body)).await;
        (answer.outcome, proxy.messages() - before)
    };
    assert_eq!(cost("a").await, (Some(Outcome::Fresh), 2));
    assert_eq!(cost("a").await, (Some(Outcome::Replayed), 1));
    assert_eq!(cost("a").await, (Some(Outcome::Replayed), 0));
    assert_eq!(
        cost("b").await,
        (Some(Outcome::Conflict), 1),
        "the store's to tell"
    );

    proxy.cut().await;
    assert_eq!(cost("a").await, (Some(Outcome::Replayed), 0));
    let fresh = send(
        &app,
        post_with_key("/orders", &crate::support::unique("cut"), "a"),
    )
    .await;
    fresh.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
    proxy.restore().await;
    assert_eq!(counter.runs(), 2, "the warm-up and the first");
}
