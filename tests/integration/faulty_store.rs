//! A store wrapper that injects the faults a real network gives: a write that fails, a
//! claim that lands but whose reply is lost, a renewal that fails. Each fault is armed by
//! count and fires that many times.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tower_idempotency::store::{
    Begin, Fingerprint, IdempotencyStore, LockToken, Record, RecordKey, StoreError, StoreErrorKind,
    StoredResponse,
};

/// How many more times each fault fires.
#[derive(Default)]
pub(crate) struct Faults {
    /// `complete` fails without writing.
    pub(crate) failing_completes: AtomicUsize,
    /// `begin` runs on the store, then its reply is lost (a timeout).
    pub(crate) lost_begin_replies: AtomicUsize,
    /// `renew` fails without writing.
    pub(crate) failing_renewals: AtomicUsize,
    /// `renew` hangs for a long time (a slow store, not a dead one) before it writes.
    pub(crate) slow_renewals: AtomicUsize,
    /// How many `complete` calls reached the wrapper.
    pub(crate) completes: AtomicUsize,
    /// How many `begin` calls reached the wrapper.
    pub(crate) begins: AtomicUsize,
    /// While set, every write (and `begin`) fails without reaching the store: an outage.
    pub(crate) down: AtomicBool,
}

impl Faults {
    fn fire(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub(crate) fn arm(counter: &AtomicUsize, times: usize) {
        counter.store(times, Ordering::SeqCst);
    }
}

/// `inner` with [`Faults`].
#[derive(Clone)]
pub(crate) struct FaultyStore<S> {
    inner: S,
    pub(crate) faults: Arc<Faults>,
}

impl<S> FaultyStore<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            faults: Arc::default(),
        }
    }
}

fn blip() -> StoreError {
    StoreError::unavailable("connection reset by peer (injected)")
}

impl<S> FaultyStore<S> {
    /// How many `begin` calls reached the wrapper.
    pub(crate) fn begins(&self) -> usize {
        self.faults.begins.load(Ordering::SeqCst)
    }

    /// An outage while `down` is set.
    fn up(&self) -> Result<(), StoreError> {
        if self.faults.down.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("the store is down (injected)"));
        }
        Ok(())
    }
}

impl<S: IdempotencyStore> IdempotencyStore for FaultyStore<S> {
    async fn begin(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        token: &LockToken,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        self.faults.begins.fetch_add(1, Ordering::SeqCst);
        self.up()?;
        let begun = self.inner.begin(key, fingerprint, token, lease).await;
        if Faults::fire(&self.faults.lost_begin_replies) {
            return Err(StoreError::from_kind(StoreErrorKind::Timeout));
        }
        begun
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: &LockToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.faults.completes.fetch_add(1, Ordering::SeqCst);
        self.up()?;
        if Faults::fire(&self.faults.failing_completes) {
            return Err(blip());
        }
        self.inner.complete(key, token, response, ttl).await
    }

    async fn release(&self, key: &RecordKey, token: &LockToken) -> Result<(), StoreError> {
        self.up()?;
        self.inner.release(key, token).await
    }

    async fn renew(
        &self,
        key: &RecordKey,
        token: &LockToken,
        lease: Duration,
    ) -> Result<(), StoreError> {
        self.up()?;
        if Faults::fire(&self.faults.failing_renewals) {
            return Err(blip());
        }
        if Faults::fire(&self.faults.slow_renewals) {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        self.inner.renew(key, token, lease).await
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.inner.get(key).await
    }
}
