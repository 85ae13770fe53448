//! The Redis and PostgreSQL stores against the real servers: shared by many instances,
//! round trips, outages, bad data, stable record format.
//!
//! Each reads its server's URL from the environment (`REDIS_URL`, `DATABASE_URL`). Unset
//! when the tests are built, `cargo test` reports them ignored with that reason (the
//! build script sets `redis_url_unset` / `database_url_unset`); set and unreachable, they
//! fail.

use std::{
    future::Future,
    net::{SocketAddr, ToSocketAddrs},
    time::Duration,
};

use axum::http::StatusCode;
use tokio::task::JoinSet;
use tower_idempotency::{
    store::{Fingerprint, IdempotencyStore, RecordKey, RecordState, StoreError, StoreErrorKind},
    IdempotencyLayer, Outcome,
};

use crate::{
    cleanup::{TestUrl, Written},
    proxy::{Protocol, Proxies, Proxy},
    support::{eventually, post_with_key, routes, send, unique, Answer, Counter},
};

/// A store backend under test.
pub(crate) trait Backend: Sized + 'static {
    type Store: IdempotencyStore + Clone;
    /// The variable holding the server's URL.
    const VAR: &'static str;
    const PROTOCOL: Protocol;

    fn connect(url: &str) -> impl Future<Output = Result<Self::Store, StoreError>> + Send;

    /// A store whose every connection goes through proxies that count and cut its
    /// traffic: one in front of the server (or one per node of a cluster).
    async fn proxied(url: &str) -> (Self::Store, Proxies) {
        let proxy = Proxy::start(server_addr(url), Self::PROTOCOL).await;
        let store = store::<Self>(&url_via(url, proxy.addr())).await;
        (store, Proxies::new(vec![proxy]))
    }

    /// Overwrites the stored response of `key` with its first bytes.
    fn truncate_response(url: &str, key: &RecordKey) -> impl Future<Output = ()> + Send;

    /// Puts a value that is not one of our records under `key`.
    fn put_foreign(url: &str, key: &RecordKey) -> impl Future<Output = ()> + Send;

    /// Writes a completed record by hand, in the current record format (version 2).
    fn put_record(
        url: &str,
        key: &RecordKey,
        fingerprint: &[u8; 64],
        response: &[u8],
    ) -> impl Future<Output = ()> + Send;

    /// Writes a record of ours that is neither in flight nor completed.
    fn put_neither(url: &str, key: &RecordKey) -> impl Future<Output = ()> + Send;

    /// Deletes the records a test wrote: these keys, and every key containing one of
    /// these strings.
    fn remove(url: &str, written: &Written) -> impl Future<Output = ()> + Send;
}

/// The server's URL, held for one test: when it is dropped, the records of the keys the
/// test made with `unique` are deleted (see [`TestUrl`]). The tests that call this are
/// ignored when its variable was unset at build time; run anyway (`--ignored`) without
/// it, they fail and say why.
pub(crate) fn url<B: Backend>(test: &str) -> TestUrl<B> {
    match std::env::var(B::VAR) {
        Ok(url) if !url.is_empty() => TestUrl::new(url),
        _ => panic!("{test} needs {}: set it to the server's URL", B::VAR),
    }
}

pub(crate) async fn store<B: Backend>(url: &str) -> B::Store {
    B::connect(url)
        .await
        .unwrap_or_else(|err| panic!("{} is set but {url} is unreachable: {err}", B::VAR))
}

/// `url` with its host and port replaced by `addr`.
pub(crate) fn url_via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL with a scheme");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"))
        .unwrap_or_default();
    format!("{scheme}://{user}{addr}{path}")
}

/// The host and port of `url`.
pub(crate) fn server_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("URL with a scheme").1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    host_port
        .to_socket_addrs()
        .expect("resolvable host")
        .next()
        .unwrap()
}

fn app<St: IdempotencyStore>(layer: IdempotencyLayer<St>) -> (axum::Router, Counter) {
    let counter = Counter::default();
    (routes(counter.clone()).layer(layer), counter)
}

/// Two instances, each with its own connection pool, share one store: 64 concurrent
/// identical requests split between them run the handler once, and every retry on either
/// replays the same response.
pub(crate) async fn two_instances_run_once<B: Backend>(url: &str) {
    let (a, count_a) = app(IdempotencyLayer::new(store::<B>(url).await));
    let (b, count_b) = app(IdempotencyLayer::new(store::<B>(url).await));
    let key = unique("two-instances");
    let mut requests = JoinSet::new();
    for i in 0..64 {
        let (app, key) = (if i % 2 == 0 { a.clone() } else { b.clone() }, key.clone());
        requests.spawn(async move { send(&app, post_with_key("/slow", &key, "same")).await });
    }
    let mut in_progress = Vec::new();
    for _ in 0..63 {
        in_progress.push(requests.join_next().await.unwrap().unwrap());
    }
    for answer in &in_progress {
        answer.assert_problem(StatusCode::CONFLICT, "in-progress");
    }
    assert_eq!(count_a.runs() + count_b.runs(), 1);
    count_a.gate.add_permits(1);
    count_b.gate.add_permits(1);
    let first: Answer = requests.join_next().await.unwrap().unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    for app in [&a, &b, &a, &b] {
        let retry = send(app, post_with_key("/slow", &key, "same")).await;
        assert!(retry.replayed());
        assert_eq!(retry.body, first.body);
    }
    assert_eq!(count_a.runs() + count_b.runs(), 1);
}

/// A replay costs one round trip; a fresh request two; in progress and conflict one.
pub(crate) async fn round_trips<B: Backend>(url: &str) {
    let (store, proxy) = B::proxied(url).await;
    let (app, counter) = app(IdempotencyLayer::new(store));
    // Warm up: connections opened, statements prepared.
    let warm = unique("warm");
    send(&app, post_with_key("/orders", &warm, "w")).await;
    send(&app, post_with_key("/orders", &warm, "w")).await;

    let key = unique("trips");
    let cost = async |body: &str| {
        let before = proxy.messages();
        let answer = send(&app, post_with_key("/orders", &key, body)).await;
        (answer.outcome, proxy.messages() - before)
    };
    assert_eq!(cost("a").await, (Some(Outcome::Fresh), 2));
    assert_eq!(cost("a").await, (Some(Outcome::Replayed), 1));
    assert_eq!(cost("b").await, (Some(Outcome::Conflict), 1));
    assert_eq!(counter.runs(), 2);
}

/// Store down: 503 with Retry-After and no handler run, whether the server refuses or
/// hangs; back up: the layer recovers by itself.
pub(crate) async fn outage_fails_closed_and_recovers<B: Backend>(url: &str) {
    let (store, proxy) = B::proxied(url).await;
    let layer = IdempotencyLayer::new(store)
        .store_timeout(Duration::from_millis(500))
        .unwrap();
    let (app, counter) = app(layer);
    assert_eq!(
        send(&app, post_with_key("/orders", &unique("up"), ""))
            .await
            .status,
        StatusCode::CREATED
    );

    proxy.cut().await;
    let down = send(&app, post_with_key("/orders", &unique("down"), "")).await;
    down.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
    assert!(down.headers.contains_key("retry-after"));
    proxy.swallow().await;
    let hung = send(&app, post_with_key("/orders", &unique("hung"), "")).await;
    hung.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
    assert_eq!(counter.runs(), 1, "no handler ran while the store was down");

    proxy.restore().await;
    eventually("the layer reconnects", async || {
        send(&app, post_with_key("/orders", &unique("back"), ""))
            .await
            .status
            == StatusCode::CREATED
    })
    .await;
}

/// Nothing listens: connecting fails with a clear error, quickly.
pub(crate) async fn closed_port_is_unavailable<B: Backend>(url: &str) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let started = std::time::Instant::now();
    let err = B::connect(&url_via(url, addr))
        .await
        .err()
        .expect("no server there");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A record the store cannot read (truncated, foreign, tens of thousands of headers,
/// neither in flight nor completed) is one answer on every store: a 500 of its own type,
/// no `Retry-After` (waiting would not help), nothing run; never a panic or a replay.
pub(crate) async fn unreadable_records_are_500<B: Backend>(url: &str) {
    let store = store::<B>(url).await;
    let (app, counter) = app(IdempotencyLayer::new(store.clone()));
    let key = unique("bad-data");
    send(&app, post_with_key("/orders", &key, "x")).await;
    B::truncate_response(url, &RecordKey::new("idem", "", &key)).await;
    let mut unreadable = vec![key];

    let foreign = unique("foreign");
    B::put_foreign(url, &RecordKey::new("idem", "", &foreign)).await;
    unreadable.push(foreign);

    // Under the fingerprint of a real request, so that the store must decode it.
    let many = unique("many-headers");
    send(&app, post_with_key("/orders", &many, "x")).await;
    let many_key = RecordKey::new("idem", "", &many);
    let fingerprint = store.get(&many_key).await.unwrap().unwrap().fingerprint;
    let mut response = vec![1, 0, 200];
    response.extend_from_slice(&40_000u32.to_be_bytes());
    for i in 0..40_000u32 {
        let name = format!("x-{i}");
        response.extend_from_slice(&(name.len() as u32).to_be_bytes());
        response.extend_from_slice(name.as_bytes());
        response.extend_from_slice(&0u32.to_be_bytes());
    }
    response.push(0);
    B::put_record(url, &many_key, &fingerprint.to_bytes(), &response).await;
    unreadable.push(many);

    let neither = unique("neither");
    B::put_neither(url, &RecordKey::new("idem", "", &neither)).await;
    unreadable.push(neither);

    for key in &unreadable {
        let record_key = RecordKey::new("idem", "", key);
        tower_idempotency::store::conformance::unreadable_record_is_an_error(&store, &record_key)
            .await;
        let answer = send(&app, post_with_key("/orders", key, "x")).await;
        answer.assert_problem(StatusCode::INTERNAL_SERVER_ERROR, "record-unreadable");
        assert!(answer.headers.get("retry-after").is_none(), "{key}");
        assert_eq!(answer.outcome, Some(Outcome::RecordUnreadable));
    }
    assert_eq!(
        counter.runs(),
        2,
        "only the two first, readable, requests ran"
    );
}

/// A record written in the current format (response version 2, with trailers), byte for
/// byte, still reads back; so does one of the first format (version 1, no trailers).
pub(crate) async fn current_format_records_decode<B: Backend>(url: &str) {
    const V2_RESPONSE: &[u8] = b"\x02\x00\xc9\x00\x00\x00\x01\
\x00\x00\x00\x0ccontent-type\x00\x00\x00\x10application/json\
\x01\x00\x00\x00\x08{\"id\":1}\
\x01\x00\x00\x00\x01\x00\x00\x00\x0bgrpc-status\x00\x00\x00\x010";
    const V1_RESPONSE: &[u8] = b"\x01\x00\xc9\x00\x00\x00\x01\
\x00\x00\x00\x0ccontent-type\x00\x00\x00\x10application/json\
\x01\x00\x00\x00\x08{\"id\":1}";
    let store = store::<B>(url).await;
    for (bytes, trailers) in [(V2_RESPONSE, Some("0")), (V1_RESPONSE, None)] {
        let key = RecordKey::new("idem", "", &unique("v2"));
        let mut fingerprint = [7; 64];
        fingerprint[32..].fill(9);
        B::put_record(url, &key, &fingerprint, bytes).await;
        let record = store.get(&key).await.unwrap().expect("record");
        assert_eq!(record.fingerprint, Fingerprint::new([7; 32], [9; 32]));
        let RecordState::Completed(response) = record.state else {
            panic!("completed record")
        };
        assert_eq!(response.status, StatusCode::CREATED);
        assert_eq!(response.headers["content-type"], "application/json");
        assert_eq!(response.body.as_deref(), Some(&b"{\"id\":1}"[..]));
        let status = response.trailers.as_ref().map(|t| t["grpc-status"].clone());
        assert_eq!(status.as_ref().map(|v| v.to_str().unwrap()), trailers);
    }
}

/// Instantiates every backend check, and the conformance suite, for one backend.
macro_rules! backend_tests {
    ($backend:ty, #[$unset:meta]) => {
        tower_idempotency::store_conformance_tests!(#[$unset] async {
            let url = $crate::backends::url::<$backend>("conformance");
            let store = $crate::backends::store::<$backend>(&url).await;
            Some($crate::cleanup::Tracked::<$backend>::new(store, &url))
        });

        $crate::backends::backend_tests!(@each $backend, #[$unset];
            two_instances_run_once,
            round_trips,
            outage_fails_closed_and_recovers,
            closed_port_is_unavailable,
            unreadable_records_are_500,
            current_format_records_decode,
        );
        $crate::backends::backend_tests!(@cleanup $backend, #[$unset];
            a_test_leaves_nothing_behind,
        );
        $crate::backends::backend_tests!(@faults $backend, #[$unset];
            a_completion_blip_is_retried_and_replays,
            a_lost_claim_reply_is_cleaned_up,
            nested_layers_share_the_backend,
        );
        $crate::backends::backend_tests!(@cache $backend, #[$unset];
            a_replay_cache_spares_the_backend,
        );
        $crate::backends::backend_tests!(@processes $backend, #[$unset];
            two_processes_run_once,
            crashed_process_is_taken_over,
            paused_process_is_fenced,
            graceful_shutdown_finishes_the_write,
        );
    };
    (@faults $backend:ty, #[$unset:meta]; $($check:ident),* $(,)?) => {
        mod faults {
            $(
                #[$unset]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let url = $crate::backends::url::<$backend>(stringify!($check));
                    $crate::backend_faults::$check::<$backend>(&url).await;
                }
            )*
        }
    };
    (@cleanup $backend:ty, #[$unset:meta]; $($check:ident),* $(,)?) => {
        mod cleanup {
            $(
                #[$unset]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let url = $crate::backends::url::<$backend>(stringify!($check));
                    $crate::cleanup::$check::<$backend>(&url).await;
                }
            )*
        }
    };
    (@cache $backend:ty, #[$unset:meta]; $($check:ident),* $(,)?) => {
        mod replay_cache {
            $(
                #[$unset]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let url = $crate::backends::url::<$backend>(stringify!($check));
                    $crate::replay_cache::$check::<$backend>(&url).await;
                }
            )*
        }
    };
    (@processes $backend:ty, #[$unset:meta]; $($check:ident),* $(,)?) => {
        mod processes {
            $(
                #[$unset]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let url = $crate::backends::url::<$backend>(stringify!($check));
                    $crate::processes::$check::<$backend>(&url).await;
                }
            )*
        }
    };
    (@each $backend:ty, #[$unset:meta]; $($check:ident),* $(,)?) => {
        mod checks {
            $(
                #[$unset]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let url = $crate::backends::url::<$backend>(stringify!($check));
                    $crate::backends::$check::<$backend>(&url).await;
                }
            )*
        }
    };
}
pub(crate) use backend_tests;
