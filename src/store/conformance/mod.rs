//! The conformance suite every [`IdempotencyStore`] must pass (feature `test-util`).
//!
//! Each check is an `async fn` over a store; [`store_conformance_tests!`](crate::store_conformance_tests) expands to one
//! `#[tokio::test]` per check. Checks use random keys, so they run in parallel on one
//! shared store and leave other data alone. Checks that wait for a lease or TTL to expire
//! sleep for real (about a second), since a remote store's clock cannot be
//! paused.
//!
//! ```
//! # // The doctest cannot define `#[test]`s; it runs the same checks by hand.
//! use tower_idempotency::{store::conformance, MemoryStore};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! conformance::run_all(&MemoryStore::new()).await;
//! # });
//! ```
//!
//! In your store's test file:
//!
//! ```
//! // With your store in place of `MemoryStore`; an `async` block that yields `None`
//! // (e.g. when a URL is not configured) skips every check.
//! tower_idempotency::store_conformance_tests!(async { Some(tower_idempotency::MemoryStore::new()) });
//! # fn main() {}
//! ```
//!
//! The expression yields `Option<Store>`; `None` skips every check (with a printed notice),
//! for example when the backend's URL is not configured.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::store::{
    Begin, Fingerprint, IdempotencyStore, LockToken, RecordKey, StoreErrorKind, StoredResponse,
};

mod checks;

pub use self::checks::*;

const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(3600);
const SHORT: Duration = Duration::from_millis(1000);
const PAST_SHORT: Duration = Duration::from_millis(1600);

const FP: Fingerprint = Fingerprint::new([0xa1; 32], [0xc3; 32]);
const OTHER_FP: Fingerprint = Fingerprint::new([0xb2; 32], [0xc3; 32]);
/// The same request as [`FP`], sent with other credentials.
const OTHER_CALLER: Fingerprint = Fingerprint::new([0xa1; 32], [0xd4; 32]);

/// A key no other check (or test run) uses.
pub fn unique_key() -> RecordKey {
    RecordKey::new("conformance", &uuid::Uuid::new_v4().to_string(), "key")
}

/// A response with binary-unsafe content: repeated headers, a non-UTF-8 header value,
/// every byte value in the body, and trailers (a gRPC status among them).
pub fn sample_response() -> StoredResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.append("x-repeated", HeaderValue::from_static("one"));
    headers.append("x-repeated", HeaderValue::from_static("two"));
    headers.insert(
        "x-opaque",
        HeaderValue::from_bytes(&[0x80, 0xfe, b'a']).expect("opaque value"),
    );
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.append("x-checksum", HeaderValue::from_static("a1"));
    trailers.append(
        "x-checksum",
        HeaderValue::from_bytes(&[0xff, b'2']).expect("opaque"),
    );
    StoredResponse {
        status: StatusCode::CREATED,
        headers,
        body: Some(Bytes::from(
            (0..=255u8).cycle().take(1000).collect::<Vec<_>>(),
        )),
        trailers: Some(trailers),
    }
}

pub(super) async fn claimed<S: IdempotencyStore>(
    store: &S,
    key: &RecordKey,
    lease: Duration,
) -> LockToken {
    let token = LockToken::generate();
    match store.begin(key, &FP, &token, lease).await.expect("begin") {
        Begin::Claimed => token,
        other => panic!("a free key must be claimed, got {other:?}"),
    }
}

pub(super) async fn assert_fenced<T: std::fmt::Debug>(
    what: &str,
    result: impl std::future::Future<Output = Result<T, crate::store::StoreError>>,
) {
    let err = result.await.expect_err(what);
    assert_eq!(err.kind(), StoreErrorKind::Fenced, "{what}: {err}");
}

/// Runs every check in turn.
pub async fn run_all<S: IdempotencyStore>(store: &S) {
    claim_then_in_progress_or_conflict(store).await;
    complete_then_replay(store).await;
    body_less_record_round_trips(store).await;
    writes_are_fenced(store).await;
    release_frees_the_key(store).await;
    expired_lease_is_taken_over_and_fenced(store).await;
    renew_extends_the_lease(store).await;
    completed_record_expires(store).await;
    concurrent_begins_claim_once(store).await;
    namespaces_and_scopes_are_separate(store).await;
    a_repeated_begin_with_the_holders_token_is_its_own(store).await;
}

#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// Expands to one `#[tokio::test]` per conformance check, each on a store built by
/// `$make` (an expression of type `impl Future<Output = Option<Store>>`; `None` skips).
///
/// An attribute written before `$make` is put on every test, e.g. to report the tests
/// ignored, with the reason, when a server they need is not configured (a cfg your build
/// script sets):
/// `store_conformance_tests!(#[cfg_attr(no_server, ignore = "SERVER_URL is not set")] async { … })`.
///
/// The tests name this crate `tower_idempotency`; a renamed dependency cannot use the macro
/// (call the checks in [`conformance`](crate::store::conformance) directly instead).
#[macro_export]
macro_rules! store_conformance_tests {
    (#[$attr:meta] $make:expr) => {
        $crate::store_conformance_tests!(@tests #[$attr] $make;
            claim_then_in_progress_or_conflict,
            complete_then_replay,
            body_less_record_round_trips,
            writes_are_fenced,
            release_frees_the_key,
            expired_lease_is_taken_over_and_fenced,
            renew_extends_the_lease,
            completed_record_expires,
            concurrent_begins_claim_once,
            namespaces_and_scopes_are_separate,
            a_repeated_begin_with_the_holders_token_is_its_own,
        );
    };
    ($make:expr) => {
        $crate::store_conformance_tests!(@tests #[allow(unused)] $make;
            claim_then_in_progress_or_conflict,
            complete_then_replay,
            body_less_record_round_trips,
            writes_are_fenced,
            release_frees_the_key,
            expired_lease_is_taken_over_and_fenced,
            renew_extends_the_lease,
            completed_record_expires,
            concurrent_begins_claim_once,
            namespaces_and_scopes_are_separate,
            a_repeated_begin_with_the_holders_token_is_its_own,
        );
    };
    (@tests #[$attr:meta] $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[$attr]
            #[$crate::store::conformance::__private::tokio::test(
                flavor = "multi_thread",
                worker_threads = 2,
                crate = "::tower_idempotency::store::conformance::__private::tokio"
            )]
            async fn $check() {
                let Some(store) = $make.await else {
                    eprintln!("skipped {}: store not configured", stringify!($check));
                    return;
                };
                $crate::store::conformance::$check(&store).await;
            }
        )*
    };
}
