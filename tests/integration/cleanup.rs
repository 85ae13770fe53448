//! Every backend test removes what it wrote to the shared Redis and PostgreSQL servers.
//!
//! Two records of what a test wrote: the keys it made with [`unique`](crate::support::unique)
//! on its own thread (the layer's record keys contain them, whichever process wrote
//! them), and every key handed to a [`Tracked`] store (the conformance checks make
//! theirs). [`TestUrl`], the server's URL as a test holds it, deletes both when the test
//! ends, passed or failed; a [`Tracked`] store does when its last clone goes.

use std::{
    cell::RefCell,
    collections::BTreeSet,
    marker::PhantomData,
    ops::Deref,
    sync::{Arc, Mutex},
    time::Duration,
};

use tower_idempotency::store::{
    Begin, Fingerprint, IdempotencyStore, LockToken, Record, RecordKey, StoreError, StoredResponse,
};

use crate::backends::Backend;

thread_local! {
    /// The keys [`unique`](crate::support::unique) made on this thread.
    static MADE: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Notes a key a test made, so that the records holding it are deleted when it ends.
pub(crate) fn note(key: &str) {
    MADE.with(|made| made.borrow_mut().push(key.to_owned()));
}

/// What a test wrote: record keys exactly, and strings its record keys contain.
#[derive(Default)]
pub(crate) struct Written {
    pub(crate) exact: BTreeSet<String>,
    pub(crate) containing: BTreeSet<String>,
}

/// Deletes `written` from the server at `url`, on a thread and runtime of its own (this
/// runs from `Drop`, maybe inside the test's runtime).
fn remove<B: Backend>(url: String, written: Written) {
    if written.exact.is_empty() && written.containing.is_empty() {
        return;
    }
    let done = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), B::remove(&url, &written)).await
        })
    })
    .join();
    match done {
        Ok(Ok(())) => {}
        // Reported, not raised: the test's own verdict stands.
        Ok(Err(_)) => eprintln!("cleanup: removing the test's records timed out"),
        Err(_) => eprintln!("cleanup: removing the test's records failed"),
    }
}

/// The URL of a backend, held for one test: when the test ends, the records holding the
/// keys it made with `unique` since are deleted. Reads as the URL (`&url` is a `&str`).
pub(crate) struct TestUrl<B: Backend> {
    url: String,
    /// How many keys this thread had made before the test began.
    from: usize,
    backend: PhantomData<fn() -> B>,
}

impl<B: Backend> TestUrl<B> {
    pub(crate) fn new(url: String) -> Self {
        let from = MADE.with(|made| made.borrow().len());
        Self {
            url,
            from,
            backend: PhantomData,
        }
    }
}

impl<B: Backend> Deref for TestUrl<B> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.url
    }
}

impl<B: Backend> std::fmt::Display for TestUrl<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl<B: Backend> Drop for TestUrl<B> {
    fn drop(&mut self) {
        let made = MADE.with(|made| {
            let mut made = made.borrow_mut();
            let from = self.from.min(made.len());
            made.split_off(from)
        });
        let written = Written {
            exact: BTreeSet::new(),
            containing: made.into_iter().collect(),
        };
        remove::<B>(std::mem::take(&mut self.url), written);
    }
}

/// The keys a [`Tracked`] store was handed; deleted when its last clone goes.
struct Tracker<B: Backend> {
    url: String,
    keys: Mutex<BTreeSet<String>>,
    backend: PhantomData<fn() -> B>,
}

impl<B: Backend> Drop for Tracker<B> {
    fn drop(&mut self) {
        let written = Written {
            exact: std::mem::take(self.keys.get_mut().unwrap()),
            containing: BTreeSet::new(),
        };
        remove::<B>(std::mem::take(&mut self.url), written);
    }
}

/// A backend's store that notes every key it is handed, and deletes them all when its
/// last clone is dropped.
pub(crate) struct Tracked<B: Backend> {
    store: B::Store,
    tracker: Arc<Tracker<B>>,
}

impl<B: Backend> Clone for Tracked<B> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            tracker: Arc::clone(&self.tracker),
        }
    }
}

impl<B: Backend> Tracked<B> {
    pub(crate) fn new(store: B::Store, url: &str) -> Self {
        Self {
            store,
            tracker: Arc::new(Tracker {
                url: url.to_owned(),
                keys: Mutex::default(),
                backend: PhantomData,
            }),
        }
    }

    fn note(&self, key: &RecordKey) -> &B::Store {
        self.tracker
            .keys
            .lock()
            .unwrap()
            .insert(key.as_str().to_owned());
        &self.store
    }
}

impl<B: Backend> IdempotencyStore for Tracked<B> {
    async fn begin(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        token: &LockToken,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        self.note(key).begin(key, fingerprint, token, lease).await
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: &LockToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.note(key).complete(key, token, response, ttl).await
    }

    async fn release(&self, key: &RecordKey, token: &LockToken) -> Result<(), StoreError> {
        self.note(key).release(key, token).await
    }

    async fn renew(
        &self,
        key: &RecordKey,
        token: &LockToken,
        lease: Duration,
    ) -> Result<(), StoreError> {
        self.note(key).renew(key, token, lease).await
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.note(key).get(key).await
    }
}

/// What a test wrote is gone once it ends: the records of the keys it made (written by
/// a layer), and the keys its tracked store was handed.
pub(crate) async fn a_test_leaves_nothing_behind<B: Backend>(url: &str) {
    let store = crate::backends::store::<B>(url).await;
    let layer_key;
    let tracked_key = RecordKey::new("cleanup", &crate::support::unique("scope"), "key");
    {
        let test = TestUrl::<B>::new(url.to_owned());
        let (app, _) = crate::support::app(tower_idempotency::IdempotencyLayer::new(store.clone()));
        layer_key = crate::support::unique("left-behind");
        let answer = crate::support::send(
            &app,
            crate::support::post_with_key("/orders", &layer_key, "x"),
        )
        .await;
        assert_eq!(answer.status, 201);
        let tracked = Tracked::<B>::new(store.clone(), &test);
        let fingerprint = Fingerprint::new([1; 32], [2; 32]);
        let token = LockToken::generate();
        tracked
            .begin(&tracked_key, &fingerprint, &token, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let layer_record = RecordKey::new("idem", "", &layer_key);
    assert_eq!(
        store.get(&layer_record).await.unwrap(),
        None,
        "the layer's record"
    );
    assert_eq!(
        store.get(&tracked_key).await.unwrap(),
        None,
        "the tracked key"
    );
}
