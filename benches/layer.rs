//! In-process cost of the layer on the memory store, against the bare handler in the same
//! run, with a 1 KiB JSON order: `cargo bench --bench layer`. `fresh_canonical_json` is
//! `fresh` with the body fingerprinted as canonical JSON instead of its bytes.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use criterion::{criterion_group, criterion_main, Criterion};

mod common;

fn layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare = common::bare(Duration::ZERO);
    let noop = common::noop_layered();
    let layered = common::layered(Duration::ZERO);
    let counter = AtomicU64::new(0);
    let body = common::order(common::BODY_BYTES);
    runtime.block_on(common::call(&layered, Some("replay-key".to_owned()), &body));

    let mut group = c.benchmark_group("layer");
    group.bench_function("bare", |b| {
        b.to_async(&runtime)
            .iter(|| common::call(&bare, None, &body))
    });
    group.bench_function("noop_layer", |b| {
        b.to_async(&runtime)
            .iter(|| common::call(&noop, None, &body))
    });
    group.bench_function("pass_through", |b| {
        b.to_async(&runtime)
            .iter(|| common::call(&layered, None, &body))
    });
    group.bench_function("fresh", |b| {
        b.to_async(&runtime).iter(|| {
            common::call(
                &layered,
                Some(format!("fresh-{}", counter.fetch_add(1, Ordering::Relaxed))),
                &body,
            )
        })
    });
    group.bench_function("replay", |b| {
        b.to_async(&runtime)
            .iter(|| common::call(&layered, Some("replay-key".to_owned()), &body))
    });
    // The same fresh request with the body fingerprinted as canonical JSON: its cost
    // beside the byte-exact fingerprint above.
    let canonical = common::layered_canonical_json();
    group.bench_function("fresh_canonical_json", |b| {
        b.to_async(&runtime).iter(|| {
            common::call(
                &canonical,
                Some(format!("json-{}", counter.fetch_add(1, Ordering::Relaxed))),
                &body,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
