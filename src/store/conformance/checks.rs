//! The checks of the conformance suite, one `pub async fn` each.

use futures_util::future::join_all;

use super::{
    assert_fenced, claimed, sample_response, unique_key, FP, LEASE, OTHER_CALLER, OTHER_FP,
    PAST_SHORT, SHORT, TTL,
};
use crate::store::{
    Begin, IdempotencyStore, LockToken, RecordKey, RecordState, StoreErrorKind, StoredResponse,
};

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
    let results = join_all(begins).await;
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
/// conflict). Never a panic. Not in [`run_all`](super::run_all): only the store's own tests know how to
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
