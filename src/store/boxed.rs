//! [`BoxedStore`]: any store behind one type, chosen at run time.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use super::{
    Begin, Fingerprint, IdempotencyStore, LockToken, Record, RecordKey, StoreError, StoredResponse,
};

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The store methods with boxed futures: what makes a store usable as a trait object.
trait ErasedStore: Send + Sync + 'static {
    fn begin<'a>(
        &'a self,
        key: &'a RecordKey,
        fingerprint: &'a Fingerprint,
        token: &'a LockToken,
        lease: Duration,
    ) -> Boxed<'a, Begin>;
    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: &'a LockToken,
        response: &'a StoredResponse,
        ttl: Duration,
    ) -> Boxed<'a, ()>;
    fn release<'a>(&'a self, key: &'a RecordKey, token: &'a LockToken) -> Boxed<'a, ()>;
    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: &'a LockToken,
        lease: Duration,
    ) -> Boxed<'a, ()>;
    fn get<'a>(&'a self, key: &'a RecordKey) -> Boxed<'a, Option<Record>>;
    fn name(&self) -> &'static str;
    fn metrics_name(&self) -> &'static str;
}

impl<St: IdempotencyStore> ErasedStore for St {
    fn begin<'a>(
        &'a self,
        key: &'a RecordKey,
        fingerprint: &'a Fingerprint,
        token: &'a LockToken,
        lease: Duration,
    ) -> Boxed<'a, Begin> {
        Box::pin(IdempotencyStore::begin(
            self,
            key,
            fingerprint,
            token,
            lease,
        ))
    }

    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: &'a LockToken,
        response: &'a StoredResponse,
        ttl: Duration,
    ) -> Boxed<'a, ()> {
        Box::pin(IdempotencyStore::complete(self, key, token, response, ttl))
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: &'a LockToken) -> Boxed<'a, ()> {
        Box::pin(IdempotencyStore::release(self, key, token))
    }

    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: &'a LockToken,
        lease: Duration,
    ) -> Boxed<'a, ()> {
        Box::pin(IdempotencyStore::renew(self, key, token, lease))
    }

    fn get<'a>(&'a self, key: &'a RecordKey) -> Boxed<'a, Option<Record>> {
        Box::pin(IdempotencyStore::get(self, key))
    }

    fn name(&self) -> &'static str {
        std::any::type_name::<St>()
    }

    fn metrics_name(&self) -> &'static str {
        IdempotencyStore::metrics_name(self)
    }
}

/// Any store behind one type, so that the store can be chosen at run time (from a
/// configuration file, say) while the router code stays a plain function of
/// `IdempotencyLayer<BoxedStore>`.
///
/// [`IdempotencyStore`] itself is not dyn-compatible (its methods return `impl Future`);
/// this type boxes each call's future instead, which costs one allocation per store
/// call (a few dozen nanoseconds beside a network round trip). Cloning shares the store.
///
/// ```
/// use tower_idempotency::{store::BoxedStore, IdempotencyLayer, MemoryStore};
///
/// fn store_from(config: &str) -> BoxedStore {
///     match config {
///         "memory" => BoxedStore::new(MemoryStore::new()),
///         // "redis" => BoxedStore::new(RedisStore::connect(url).await?), …
///         other => panic!("unknown store {other}"),
///     }
/// }
///
/// let layer: IdempotencyLayer<BoxedStore> = IdempotencyLayer::new(store_from("memory"));
/// ```
#[derive(Clone)]
pub struct BoxedStore(Arc<dyn ErasedStore>);

impl BoxedStore {
    /// Boxes `store`. A store that is already a `BoxedStore` is taken as it is.
    pub fn new<St: IdempotencyStore>(store: St) -> Self {
        let any: Box<dyn std::any::Any> = Box::new(store);
        match any.downcast::<Self>() {
            Ok(boxed) => *boxed,
            Err(any) => match any.downcast::<St>() {
                Ok(store) => Self(Arc::new(*store)),
                Err(_) => unreachable!("the box holds an St"),
            },
        }
    }
}

impl fmt::Debug for BoxedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BoxedStore").field(&self.0.name()).finish()
    }
}

impl IdempotencyStore for BoxedStore {
    async fn begin(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        token: &LockToken,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        self.0.begin(key, fingerprint, token, lease).await
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: &LockToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.0.complete(key, token, response, ttl).await
    }

    async fn release(&self, key: &RecordKey, token: &LockToken) -> Result<(), StoreError> {
        self.0.release(key, token).await
    }

    async fn renew(
        &self,
        key: &RecordKey,
        token: &LockToken,
        lease: Duration,
    ) -> Result<(), StoreError> {
        self.0.renew(key, token, lease).await
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.0.get(key).await
    }

    fn metrics_name(&self) -> &'static str {
        self.0.metrics_name()
    }
}
