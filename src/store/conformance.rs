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
    Begin, Fingerprint, IdempotencyStore, LockToken, RecordKey, RecordState, StoreErrorKind,
    StoredResponse,
};

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

/// A response with binary-unsafe content: repeated headers, a non-UTF-8 header value, and
/// every byte value in the body.
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
    StoredResponse {
        status: StatusCode::CREATED,
        headers,
        body: Some(Bytes::from(
            (0..=255u8).cycle().take(1000).collect::<Vec<_>>(),
        )),
    }
}

async fn claimed<S: IdempotencyStore>(store: &S, key: &RecordKey, lease: Duration) -> LockToken {
    let token = LockToken::generate();
    match store.begin(key, &FP, &token, lease).await.expect("begin") {
        Begin::Claimed => token,
        other => panic!("a free key must be claimed, got {other:?}"),
    }
}

async fn assert_fenced<T: std::fmt::Debug>(
    what: &str,
    result: impl std::future::Future<Output = Result<T, crate::store::StoreError>>,
) {
    let err = result.await.expect_err(what);
    assert_eq!(err.kind(), StoreErrorKind::Fenced, "{what}: {err}");
}

/// A free key is claimed; the same fingerprint then sees it in progress, another
/// fingerprint sees a conflict.
pub async fn claim_then_in_progress_or_conflict<S: IdempotencyStore>(store: &S) {
    let key = unique_key();
    claimed(store, &key, LEASE).await;
    assert_eq!(
        store
            .begin(&key, &FP, &LockToken::generate(), LEASE)
            .await
            .unwrap(),
        Begin::InProgress
    );
    assert_eq!(
        store
            .begin(&key, &OTHER_FP, &LockToken::generate(), LEASE)
            .await
            .unwrap(),
        Begin::Conflict(FP)
    );
    assert_eq!(
        store
            .begin(&key, &OTHER_CALLER, &LockToken::generate(), LEASE)
            .await
            .unwrap(),
        Begin::Conflict(FP),
        "the stored fingerprint comes back whole, both digests"
    );
    let record = store.get(&key).await.unwrap().expect("record");
    assert_eq!(record.fingerprint, FP);
    assert_eq!(record.state, RecordState::InFlight);
}

/// A completed record replays byte for byte to the same fingerprint, conflicts with
/// another.
pub async fn complete_then_replay<S: IdempotencyStore>(store: &S) {
    let key = unique_key();
    let token = claimed(store, &key, LEASE).await;
    store
        .complete(&key, &token, &sample_response(), TTL)
        .await
        .unwrap();
    assert_eq!(
        store
            .begin(&key, &FP, &LockToken::generate(), LEASE)
            .await
            .unwrap(),
        Begin::Completed(sample_response())
    );
    assert_eq!(
        store
            .begin(&key, &OTHER_FP, &LockToken::generate(), LEASE)
            .await
            .unwrap(),
        Begin::Conflict(FP)
    );
    let record = store.get(&key).await.unwrap().expect("record");
    assert_eq!(record.state, RecordState::Completed(sample_response()));
}

/// A record completed without its body (too large to keep) reads back without it.
pub async fn body_less_record_round_trips<S: IdempotencyStore>(store: &S) {
    let key = unique_key();
    let token = claimed(store, &key, LEASE).await;
    let response = StoredResponse {
        body: None,
        ..sample_response()
    };
    store.complete(&key, &token, &response, TTL).await.unwrap();
    assert_eq!(
        store
            .begin(&key, &FP, &LockToken::generate(), LEASE)
            .await
            .unwrap(),
        Begin::Completed(response)
    );
}

/// Every write needs the current token; a wrong one changes nothing.
pub async fn writes_are_fenced<S: IdempotencyStore>(store: &S) {
    let key = unique_key();
    let token = claimed(store, &key, LEASE).await;
    let forged = LockToken::generate();
    assert_fenced(
        "complete with a wrong token",
        store.complete(&key, &forged, &sample_response(), TTL),
    )
    .await;
    assert_fenced("release with a wrong token", store.release(&key, &forged)).await;
    assert_fenced(
        "renew with a wrong token",
        store.renew(&key, &forged, LEASE),
    )
    .await;
    assert_eq!(
        store
            .begin(&key, &FP, &LockToken::generate(), LEASE)
            .await
            .unwrap(),
        Begin::InProgress
    );
    // After completion, the owner's token is spent too.
    store
        .complete(&key, &token, &sample_response(), TTL)
        .await
        .unwrap();
    assert_fenced(
        "complete twice",
        store.complete(&key, &token, &sample_response(), TTL),
    )
    .await;
    assert_fenced("release after complete", store.release(&key, &token)).await;
    assert_fenced("renew after complete", store.renew(&key, &token, LEASE)).await;
    // And on a key nobody holds.
    assert_fenced(
        "renew of a free key",
        store.renew(&unique_key(), &token, LEASE),
    )
    .await;
}

/// A released key is free: the next begin claims it with a new token.
pub async fn release_frees_the_key<S: IdempotencyStore>(store: &S) {
    let key = unique_key();
    let first = claimed(store, &key, LEASE).await;
    store.release(&key, &first).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None);
    let second = claimed(store, &key, LEASE).await;
    assert_ne!(first, second);
}

/// An expired lease frees the key; the old owner is fenced out for good.
pub async fn expired_lease_is_taken_over_and_fenced<S: IdempotencyStore>(store: &S) {
    let key = unique_key();
    let old = claimed(store, &key, SHORT).await;
    tokio::time::sleep(PAST_SHORT).await;
    let new = claimed(store, &key, LEASE).await;
    assert_ne!(old, new);
    assert_fenced(
        "old owner's complete",
        store.complete(&key, &old, &sample_response(), TTL),
    )
    .await;
    assert_fenced("old owner's renew", store.renew(&key, &old, LEASE)).await;
    assert_fenced("old owner's release", store.release(&key, &old)).await;
    store
        .complete(&key, &new, &sample_response(), TTL)
        .await
        .unwrap();
    assert_eq!(
        store
            .begin(&key, &FP, &LockToken::generate(), LEASE)
            .await
            .unwrap(),
        Begin::Completed(sample_response())
    );
}

/// Renewing keeps a claim alive past its first lease.
pub async fn renew_extends_the_lease<S: IdempotencyStore>(store: &S) {
    let key = unique_key();
    let token = claimed(store, &key, SHORT).await;
    // Renewed every 40% of a lease, for 1.6 leases: it would have expired by now.
    for _ in 0..4 {
        tokio::time::sleep(SHORT * 2 / 5).await;
        store.renew(&key, &token, SHORT).await.unwrap();
    }
    assert_eq!(
        store
            .begin(&key, &FP, &LockToken::generate(), LEASE)
            .await
            .unwrap(),
        Begin::InProgress
    );
}

/// A completed record expires after its TTL; the key is then free.
pub async fn completed_record_expires<S: IdempotencyStore>(store: &S) {
    let key = unique_key();
    let token = claimed(store, &key, LEASE).await;
    store
        .complete(&key, &token, &sample_response(), SHORT)
        .await
        .unwrap();
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(store.get(&key).await.unwrap(), None);
    claimed(store, &key, LEASE).await;
}

/// Of many concurrent begins on one free key, exactly one claims it.
pub async fn concurrent_begins_claim_once<S: IdempotencyStore>(store: &S) {
    let key = unique_key();
    let tokens: Vec<_> = (0..32).map(|_| LockToken::generate()).collect();
    let begins = tokens
        .iter()
        .map(|token| store.begin(&key, &FP, token, LEASE));
    let results = futures_util::future::join_all(begins).await;
    let claims = results
        .iter()
        .filter(|r| matches!(r, Ok(Begin::Claimed)))
        .count();
    let in_progress = results
        .iter()
        .filter(|r| matches!(r, Ok(Begin::InProgress)))
        .count();
    assert_eq!((claims, in_progress), (1, 31), "{results:?}");
}

/// A begin with the token that holds the claim is recognised as the holder's own (its
/// first reply may have been lost), whatever the fingerprint; once the record is settled,
/// the token is an ordinary one.
pub async fn a_repeated_begin_with_the_holders_token_is_its_own<S: IdempotencyStore>(store: &S) {
    let key = unique_key();
    let token = claimed(store, &key, LEASE).await;
    assert_eq!(
        store.begin(&key, &FP, &token, LEASE).await.unwrap(),
        Begin::OwnClaim
    );
    assert_eq!(
        store.begin(&key, &OTHER_FP, &token, LEASE).await.unwrap(),
        Begin::OwnClaim
    );
    assert_eq!(
        store.get(&key).await.unwrap().expect("record").state,
        RecordState::InFlight
    );
    store.release(&key, &token).await.unwrap();
    assert_eq!(
        store.begin(&key, &FP, &token, LEASE).await.unwrap(),
        Begin::Claimed
    );
    store
        .complete(&key, &token, &sample_response(), TTL)
        .await
        .unwrap();
    assert_eq!(
        store.begin(&key, &FP, &token, LEASE).await.unwrap(),
        Begin::Completed(sample_response())
    );
}

/// Keys differing only in namespace or scope are separate records.
pub async fn namespaces_and_scopes_are_separate<S: IdempotencyStore>(store: &S) {
    let unique = uuid::Uuid::new_v4().to_string();
    let a = RecordKey::new("ns-a", &unique, "key");
    let b = RecordKey::new("ns-b", &unique, "key");
    let c = RecordKey::new("ns-a", &format!("{unique}x"), "key");
    for key in [&a, &b, &c] {
        claimed(store, key, LEASE).await;
    }
}

/// A record the store cannot read (the caller put it under `key` by hand: truncated,
/// foreign, or neither in flight nor completed) is a [`StoreErrorKind::Corrupt`] error
/// from `get`, and `begin` never claims, replays or reports it in progress: it fails with
/// `Corrupt` (or, when the stored fingerprint is readable and differs, reports the
/// conflict). Never a panic. Not in [`run_all`]: only the store's own tests know how to
/// write such a record.
pub async fn unreadable_record_is_an_error<S: IdempotencyStore>(store: &S, key: &RecordKey) {
    let token = LockToken::generate();
    match store.begin(key, &FP, &token, LEASE).await {
        Err(err) => assert_eq!(err.kind(), StoreErrorKind::Corrupt, "begin: {err}"),
        Ok(Begin::Conflict(_)) => {}
        Ok(other) => panic!("begin on an unreadable record answered {other:?}"),
    }
    let read = store.get(key).await;
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(StoreErrorKind::Corrupt),
        "get of an unreadable record"
    );
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
/// The tests name this crate `tower_idempotency`; a renamed dependency cannot use the macro
/// (call the checks in [`conformance`](crate::store::conformance) directly instead).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@tests $make;
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
    (@tests $make:expr; $($check:ident),* $(,)?) => {
        $(
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
