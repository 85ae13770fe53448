//! What `MemoryStore` really holds, and how long a claim and completion take while it
//! grows: `cargo bench --bench memory [-- --records N]` (default 1,000,000 records of a
//! 1 KiB JSON response).
//!
//! A counting allocator measures the live heap before and after the store is filled; the
//! store's own count (`MemoryStore::bytes`) is printed beside it, as is the latency of
//! each claim + completion (median, p99.9, slowest) as the store grows from empty.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower_idempotency::{
    store::{Begin, Fingerprint, IdempotencyStore, LockToken, RecordKey, StoredResponse},
    MemoryStore,
};

/// The system allocator, counting what is allocated and freed.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// The bytes live on the heap now that were not when `region` began (a reallocation's
/// growth or shrink is counted in these two as well).
fn live_since(region: &Region<'_, std::alloc::System>) -> f64 {
    let change = region.change();
    change.bytes_allocated as f64 - change.bytes_deallocated as f64
}

/// A response as the layer records it from an axum JSON handler: a 1 KiB body read out of
/// a buffer that grew larger than it, and the usual headers.
fn response(i: usize) -> StoredResponse {
    let json = format!("{{\"id\":{i:010},\"note\":\"{}\"}}", "x".repeat(997));
    assert_eq!(json.len(), 1024);
    let mut buffer = BytesMut::with_capacity(2032);
    buffer.extend_from_slice(&json.as_bytes()[..1024]);
    // Sized for its headers, as the layer builds it.
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "location",
        HeaderValue::from_str(&format!("/orders/{i}")).unwrap(),
    );
    StoredResponse {
        status: StatusCode::CREATED,
        headers,
        body: Some(Bytes::from(buffer)),
        trailers: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let mut records = 1_000_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--records" {
            records = args
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--records N");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = MemoryStore::builder()
            .max_bytes(usize::MAX / 2)
            .max_entries(records + 1)
            .build();
        let fingerprint = Fingerprint::new([1; 32], [2; 32]);
        let lease = Duration::from_secs(30);
        let ttl = Duration::from_secs(24 * 3600);
        let mut latencies = Vec::with_capacity(records);
        // Allocated before the region, so not counted as the store's.
        let region = Region::new(ALLOCATOR);
        for i in 0..records {
            // What the layer hands the store: its own key and record, built per request.
            let key = RecordKey::new("idem", "", &format!("order-{i:016}"));
            let reply = response(i);
            let token = LockToken::generate();
            let started = Instant::now();
            let begun = store.begin(&key, &fingerprint, &token, lease).await;
            assert!(matches!(begun, Ok(Begin::Claimed)), "{begun:?}");
            store.complete(&key, &token, &reply, ttl).await.unwrap();
            latencies.push(started.elapsed());
        }
        let heap = live_since(&region);
        let counted = store.bytes() as f64;
        latencies.sort_unstable();
        let n = records as f64;
        println!("memory store, {records} records of a 1 KiB response");
        println!(
            "  heap bytes per record   {:>8.0}   (real, counting allocator)",
            heap / n
        );
        println!(
            "  store's count           {:>8.0}   ({:.2} of the real heap)",
            counted / n,
            counted / heap
        );
        println!(
            "  claim + complete        median {:?}, p99.9 {:?} ({:.1}x the median), slowest {:?}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.999),
            percentile(&latencies, 0.999).as_secs_f64() / percentile(&latencies, 0.5).as_secs_f64(),
            latencies[latencies.len() - 1],
        );
        drop(store);
    });
}
