//! The storage contract behind the layer, and the stores that ship with the crate.
//!
//! A store keeps one record per `(namespace, scope, key)` ([`RecordKey`]). A record is
//! either *in flight* (claimed by one request, fenced by a [`LockToken`], alive for a lease)
//! or *completed* (holding the [`StoredResponse`] to replay, alive for a TTL). Every method
//! is a single atomic operation on one record: there is no read-then-write that another
//! instance could slip between.
//!
//! # Writing a store
//!
//! Implement [`IdempotencyStore`]. The contract of each method is documented on the trait;
//! the `test-util` feature exports a conformance suite (`store::conformance`, and the
//! `store_conformance_tests!` macro) that checks it. Here is a complete store over a
//! `HashMap` (no expiry and no bound, so only fit for a doctest; see [`MemoryStore`] for
//! one that is):
//!
//! ```
//! use std::{collections::HashMap, sync::Mutex, time::Duration};
//! use tower_idempotency::store::{
//!     Begin, Fingerprint, IdempotencyStore, LockToken, Record, RecordKey, RecordState,
//!     StoreError, StoredResponse,
//! };
//!
//! #[derive(Default)]
//! struct MapStore(Mutex<HashMap<String, (Fingerprint, Result<StoredResponse, LockToken>)>>);
//!
//! impl IdempotencyStore for MapStore {
//!     async fn begin(&self, key: &RecordKey, fp: &Fingerprint, token: &LockToken,
//!         _lease: Duration) -> Result<Begin, StoreError>
//!     {
//!         let mut map = self.0.lock().unwrap();
//!         Ok(match map.get(key.as_str()) {
//!             Some((_, Err(owner))) if owner == token => Begin::OwnClaim,
//!             Some((stored, _)) if stored != fp => Begin::Conflict(*stored),
//!             Some((_, Ok(response))) => Begin::Completed(response.clone()),
//!             Some((_, Err(_))) => Begin::InProgress,
//!             None => {
//!                 map.insert(key.as_str().to_owned(), (*fp, Err(*token)));
//!                 Begin::Claimed
//!             }
//!         })
//!     }
//!
//!     async fn complete(&self, key: &RecordKey, token: &LockToken, response: &StoredResponse,
//!         _ttl: Duration) -> Result<(), StoreError>
//!     {
//!         match self.0.lock().unwrap().get_mut(key.as_str()) {
//!             Some((_, state)) if *state == Err(*token) => {
//!                 *state = Ok(response.clone());
//!                 Ok(())
//!             }
//!             _ => Err(StoreError::fenced()),
//!         }
//!     }
//!
//!     async fn release(&self, key: &RecordKey, token: &LockToken) -> Result<(), StoreError> {
//!         let mut map = self.0.lock().unwrap();
//!         match map.get(key.as_str()) {
//!             Some((_, Err(owner))) if owner == token => {
//!                 map.remove(key.as_str());
//!                 Ok(())
//!             }
//!             _ => Err(StoreError::fenced()),
//!         }
//!     }
//!
//!     async fn renew(&self, key: &RecordKey, token: &LockToken, _lease: Duration)
//!         -> Result<(), StoreError>
//!     {
//!         match self.0.lock().unwrap().get(key.as_str()) {
//!             Some((_, Err(owner))) if owner == token => Ok(()),
//!             _ => Err(StoreError::fenced()),
//!         }
//!     }
//!
//!     async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
//!         Ok(self.0.lock().unwrap().get(key.as_str()).map(|(fp, state)| Record {
//!             fingerprint: *fp,
//!             state: match state {
//!                 Ok(response) => RecordState::Completed(response.clone()),
//!                 Err(_) => RecordState::InFlight,
//!             },
//!         }))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MapStore::default();
//! let key = RecordKey::new("idem", "", "order-1");
//! let fp = Fingerprint::new([7; 32], [8; 32]);
//! let (token, other) = (LockToken::generate(), LockToken::generate());
//! let lease = Duration::from_secs(30);
//! assert_eq!(store.begin(&key, &fp, &token, lease).await?, Begin::Claimed);
//! assert_eq!(store.begin(&key, &fp, &token, lease).await?, Begin::OwnClaim);
//! assert_eq!(store.begin(&key, &fp, &other, lease).await?, Begin::InProgress);
//! # Ok::<(), StoreError>(())
//! # }).unwrap();
//! ```

mod boxed;
mod error;
mod memory;
mod record;
mod replay_cache;

#[cfg(any(feature = "redis", feature = "postgres", test))]
mod codec;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;

use std::{future::Future, time::Duration};

pub use self::boxed::BoxedStore;
pub use self::error::{StoreError, StoreErrorKind};
pub use self::memory::{Eviction, MemoryStats, MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "postgres")]
pub use self::postgres::{PgTransaction, PostgresStore};
pub(crate) use self::record::MAX_HEADERS;
pub use self::record::{
    Begin, Fingerprint, LockToken, Record, RecordKey, RecordState, StoredResponse,
};
#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
pub use self::replay_cache::{ReplayCache, ReplayCacheStats};

/// Where the layer keeps its records.
///
/// Every method is one atomic operation on one record, and every write after
/// [`begin`](Self::begin) is *fenced*: it succeeds only while the caller's [`LockToken`] is
/// the record's current token, and otherwise fails with [`StoreErrorKind::Fenced`]. A process
/// whose lease expired and whose key was claimed again can therefore never overwrite the new
/// owner's record.
///
/// Expired records (an in-flight record past its lease, a completed record past its TTL)
/// are treated by every method as absent. ([`ReplayCache`] in front of a store bends
/// this one rule, in the safe direction: it may replay a completed record to the same
/// request for a while after it expired.)
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Atomically claims `key` with `token` (minted by the caller with
    /// [`LockToken::generate`]) or reports why it cannot be claimed.
    ///
    /// - no live record: write an in-flight record with `fingerprint`, `token` and a lease
    ///   of `lease`, and return [`Begin::Claimed`];
    /// - a live in-flight record held with this same `token`: [`Begin::OwnClaim`], the
    ///   record unchanged (the caller's earlier `begin` landed, though its reply may have
    ///   been lost; or an outer layer on this store holds the claim for the same request);
    /// - a live record whose fingerprint differs (in flight or completed):
    ///   [`Begin::Conflict`] with the record's fingerprint (both digests), nothing
    ///   written;
    /// - a live in-flight record with the same fingerprint: [`Begin::InProgress`];
    /// - a completed record with the same fingerprint: [`Begin::Completed`] with its
    ///   response.
    fn begin(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        token: &LockToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Begin, StoreError>> + Send;

    /// Turns the in-flight record held with `token` into a completed record holding
    /// `response`, kept for `ttl`. Fails with [`StoreErrorKind::Fenced`] when `token` is not
    /// the record's current token (the lease expired and the key was claimed again, or the
    /// record is gone).
    fn complete(
        &self,
        key: &RecordKey,
        token: &LockToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the in-flight record held with `token`, so that a retry runs afresh.
    /// Fenced like [`complete`](Self::complete).
    fn release(
        &self,
        key: &RecordKey,
        token: &LockToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Extends the lease of the in-flight record held with `token` to `lease` from now.
    /// Fenced like [`complete`](Self::complete).
    fn renew(
        &self,
        key: &RecordKey,
        token: &LockToken,
        lease: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads the live record under `key`, if any (for tooling and tests; the request path
    /// never calls it).
    fn get(
        &self,
        key: &RecordKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// The `store` label of this store's calls in the layer's metrics (feature
    /// `metrics`): by default the type's name without its path or generic arguments
    /// (`MemoryStore`, `RedisStore`). A wrapper that only passes calls on answers with the
    /// name of the store it wraps, as [`BoxedStore`] does; one that answers some calls
    /// itself says so, as [`ReplayCache`] does (`ReplayCache<RedisStore>`).
    fn metrics_name(&self) -> &'static str {
        short_type_name(std::any::type_name::<Self>())
    }
}

/// `full` (a type's name) without its path or generic arguments.
fn short_type_name(full: &'static str) -> &'static str {
    let plain = full.split('<').next().unwrap_or(full);
    plain.rsplit("::").next().unwrap_or(plain)
}
