//! The metrics the layer and the memory store emit through the `metrics` facade, read by
//! a recorder of the test's own.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::StatusCode;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tower_idempotency::{telemetry, IdempotencyLayer, MemoryStore};

use crate::support::{app, post_with_key, send, unique};

/// Every value recorded, by name and labels (`name{label=value,…}`); a histogram's value
/// is its number of samples.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<BTreeMap<String, f64>>>);

struct Handle {
    seen: Seen,
    key: String,
}

impl Handle {
    fn change(&self, by: f64) {
        *self
            .seen
            .0
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() += by;
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.change(value as f64);
    }
    fn absolute(&self, value: u64) {
        self.seen
            .0
            .lock()
            .unwrap()
            .insert(self.key.clone(), value as f64);
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        self.change(value);
    }
    fn decrement(&self, value: f64) {
        self.change(-value);
    }
    fn set(&self, value: f64) {
        self.seen.0.lock().unwrap().insert(self.key.clone(), value);
    }
}

impl HistogramFn for Handle {
    fn record(&self, _: f64) {
        self.change(1.0);
    }
}

impl Seen {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        Arc::new(Handle {
            seen: self.clone(),
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
        })
    }

    fn value(&self, key: &str) -> f64 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0.0)
    }
}

impl Recorder for Seen {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}

/// Runs `test` on a runtime of its own (clock paused), with `seen` as the recorder of
/// this thread, where the runtime runs every task.
fn recorded(seen: &Seen, test: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(seen, || runtime.block_on(test));
}

#[test]
fn outcomes_store_calls_and_claims_in_flight_are_emitted() {
    let seen = Seen::default();
    recorded(&seen, async {
        let (app, counter) = app(IdempotencyLayer::new(MemoryStore::new()));
        let key = unique("metrics");
        send(&app, post_with_key("/orders", &key, "a")).await;
        send(&app, post_with_key("/orders", &key, "a")).await;
        send(&app, post_with_key("/orders", &key, "b")).await;

        // A slow request holds its claim, and renews its lease every third of it.
        let slow = unique("metrics-slow");
        let started = counter.started.notified();
        let running = tokio::spawn({
            let (app, slow) = (app.clone(), slow.clone());
            async move { send(&app, post_with_key("/slow", &slow, "s")).await }
        });
        started.await;
        assert_eq!(seen.value("idempotency_claims_in_flight{}"), 1.0);
        tokio::time::sleep(Duration::from_secs(11)).await;
        counter.gate.add_permits(1);
        assert_eq!(running.await.unwrap().status, StatusCode::CREATED);
    });
    let requests =
        |outcome: &str| seen.value(&format!("{}{{outcome={outcome}}}", telemetry::REQUESTS));
    assert_eq!(requests("fresh"), 2.0);
    assert_eq!(requests("replayed"), 1.0);
    assert_eq!(requests("conflict"), 1.0);
    let calls = |operation: &str| {
        seen.value(&format!(
            "{}{{operation={operation},result=ok,store=MemoryStore}}",
            telemetry::STORE_CALL_SECONDS
        ))
    };
    assert_eq!(calls("begin"), 4.0);
    assert_eq!(calls("complete"), 2.0);
    assert_eq!(
        seen.value("idempotency_claims_in_flight{}"),
        0.0,
        "all settled"
    );
    assert!(seen.value(&format!("{}{{result=ok}}", telemetry::LEASE_RENEWALS)) >= 1.0);
}

#[test]
fn the_memory_stores_refusals_are_emitted() {
    let seen = Seen::default();
    recorded(&seen, async {
        let store = MemoryStore::builder().max_entries(1).build();
        let (app, _) = app(IdempotencyLayer::new(store));
        send(&app, post_with_key("/orders", &unique("first"), "a")).await;
        let refused = send(&app, post_with_key("/orders", &unique("second"), "a")).await;
        refused.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
    });
    assert_eq!(
        seen.value(&format!("{}{{}}", telemetry::MEMORY_REFUSED_CLAIMS)),
        1.0
    );
    assert_eq!(
        seen.value(&format!("{}{{outcome=store_error}}", telemetry::REQUESTS)),
        1.0
    );
}

#[test]
fn a_replay_caches_lookups_are_emitted_and_its_evictions_are_not_the_stores() {
    let seen = Seen::default();
    recorded(&seen, async {
        let cache = tower_idempotency::store::ReplayCache::new(MemoryStore::new()).max_entries(1);
        let (app, _) = app(IdempotencyLayer::new(cache.clone()));
        for name in ["a", "b"] {
            let key = unique(name);
            for _ in 0..3 {
                send(&app, post_with_key("/orders", &key, "a")).await;
            }
        }
        assert_eq!(
            cache.stats().records,
            1,
            "the copy of the first was evicted"
        );
    });
    let lookups = |result: &str| {
        seen.value(&format!(
            "{}{{result={result},store=ReplayCache<MemoryStore>}}",
            telemetry::REPLAY_CACHE_LOOKUPS
        ))
    };
    // Per key: the claim and the first replay miss, the second replay hits.
    assert_eq!((lookups("miss"), lookups("hit")), (4.0, 2.0));
    // The copy of "a" was evicted for "b"'s: the cache's, not a store's record, lost.
    let evictions = seen.value(&format!("{}{{reason=lru}}", telemetry::MEMORY_EVICTIONS));
    assert_eq!(evictions, 0.0);
    // Labelled as the cache in front of its store: a hit is not a call of that store.
    let begins = seen.value(&format!(
        "{}{{operation=begin,result=ok,store=ReplayCache<MemoryStore>}}",
        telemetry::STORE_CALL_SECONDS
    ));
    assert_eq!(begins, 6.0);
}

#[test]
fn a_boxed_stores_calls_are_labelled_with_the_store_inside() {
    let seen = Seen::default();
    recorded(&seen, async {
        let store = tower_idempotency::store::BoxedStore::new(MemoryStore::new());
        let (app, _) = app(IdempotencyLayer::new(store));
        send(&app, post_with_key("/orders", &unique("boxed"), "a")).await;
    });
    let calls = seen.value(&format!(
        "{}{{operation=complete,result=ok,store=MemoryStore}}",
        telemetry::STORE_CALL_SECONDS
    ));
    assert_eq!(calls, 1.0);
}
