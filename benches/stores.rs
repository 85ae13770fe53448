//! Fresh and replay latency through the layer on each store, in process, against the bare
//! handler in the same run:
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench --bench stores --all-features
//! ```
//!
//! A store whose variable is unset (or whose feature is off) is left out.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use criterion::{criterion_group, criterion_main, Criterion};
use tower_idempotency::{IdempotencyLayer, IdempotencyStore, MemoryStore};

mod common;

fn bench_store<St: IdempotencyStore>(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    store: St,
) {
    let app = common::bare(Duration::ZERO).layer(IdempotencyLayer::new(store));
    let replay_key = format!("bench-replay-{}", uuid::Uuid::new_v4());
    runtime.block_on(common::call(&app, Some(replay_key.clone())));
    let counter = AtomicU64::new(0);
    let run = uuid::Uuid::new_v4();
    let mut group = c.benchmark_group(name);
    group.bench_function("fresh", |b| {
        b.to_async(runtime).iter(|| {
            common::call(
                &app,
                Some(format!(
                    "bench-{run}-{}",
                    counter.fetch_add(1, Ordering::Relaxed)
                )),
            )
        });
    });
    group.bench_function("replay", |b| {
        b.to_async(runtime)
            .iter(|| common::call(&app, Some(replay_key.clone())))
    });
    group.finish();
}

fn stores(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bare = common::bare(Duration::ZERO);
    c.bench_function("bare", |b| {
        b.to_async(&runtime).iter(|| common::call(&bare, None))
    });
    bench_store(c, &runtime, "memory", MemoryStore::new());
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("REDIS_URL") {
        let store = runtime
            .block_on(tower_idempotency::store::RedisStore::connect(&url))
            .expect("REDIS_URL reachable");
        bench_store(c, &runtime, "redis", store);
    }
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let store = runtime
            .block_on(tower_idempotency::store::PostgresStore::connect(&url))
            .expect("DATABASE_URL reachable");
        bench_store(c, &runtime, "postgres", store);
    }
}

criterion_group!(benches, stores);
criterion_main!(benches);
