//! PostgreSQL at volume: sweeping a table of 1M expired records while claims go on.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench sweep --features postgres
//! ```
//!
//! Fills a table of its own with 1M expired rows, measures claim+complete latency alone
//! (the baseline), then again while `sweep()` deletes the rows, half the claims on keys
//! the sweep is deleting. Prints the sweep's rows per second and the claims' median,
//! p99.9 and worst latency in both phases, as ratios to the baseline. The table is
//! dropped at the end.

#[cfg(feature = "postgres")]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!("DATABASE_URL is not set: nothing to measure");
        return;
    };
    measure::run(&url).await;
}

#[cfg(not(feature = "postgres"))]
fn main() {
    println!("built without --features postgres: nothing to measure");
}

#[cfg(feature = "postgres")]
mod measure {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use tower_idempotency::store::{
        Fingerprint, IdempotencyStore, LockToken, PostgresStore, RecordKey, StoredResponse,
    };

    const ROWS: u64 = 1_000_000;

    async fn claim_and_complete(
        store: &PostgresStore,
        key: &str,
        response: &StoredResponse,
    ) -> Duration {
        let started = Instant::now();
        let key = RecordKey::new("idem", "", key);
        let token = LockToken::generate();
        let fingerprint = Fingerprint::new([1; 32], [2; 32]);
        store
            .begin(&key, &fingerprint, &token, Duration::from_secs(30))
            .await
            .expect("claim");
        store
            .complete(&key, &token, response, Duration::from_secs(3600))
            .await
            .expect("complete");
        started.elapsed()
    }

    struct Latencies(Vec<Duration>);

    impl Latencies {
        fn at(&self, quantile: f64) -> Duration {
            let mut sorted = self.0.clone();
            sorted.sort();
            sorted[((sorted.len() - 1) as f64 * quantile) as usize]
        }
    }

    pub(super) async fn run(url: &str) {
        let base = PostgresStore::connect(url)
            .await
            .expect("DATABASE_URL reachable");
        let pool = base.pool().expect("a pool of its own").clone();
        let table = format!("idem_sweep_bench_{}", uuid::Uuid::new_v4().simple());
        let store = PostgresStore::with_pool(pool.clone(), &table).unwrap();
        store.migrate().await.unwrap();
        let client = pool.get().await.unwrap();
        let filled = Instant::now();
        client
            .batch_execute(&format!(
                "INSERT INTO {table} (key, fingerprint, version, expires_at)
                 SELECT 'idem:0::sweep-' || g, '\\x00'::bytea, 2, now() - interval '1 hour'
                 FROM generate_series(1, {ROWS}) g"
            ))
            .await
            .unwrap();
        println!("filled {ROWS} expired rows in {:.1?}", filled.elapsed());
        let response = StoredResponse {
            status: StatusCode::CREATED,
            headers: HeaderMap::new(),
            body: Some(Bytes::from(vec![b'x'; 1024])),
            trailers: None,
        };
        let run = uuid::Uuid::new_v4();

        let mut alone = Latencies(Vec::new());
        for i in 0..2_000 {
            alone
                .0
                .push(claim_and_complete(&store, &format!("alone-{run}-{i}"), &response).await);
        }

        let sweeper = tokio::spawn({
            let store = store.clone();
            async move {
                let started = Instant::now();
                let deleted = store.sweep().await.expect("sweep");
                (deleted, started.elapsed())
            }
        });
        let mut during = Latencies(Vec::new());
        let mut i = 0u64;
        while !sweeper.is_finished() {
            // Every other claim takes a key whose expired row the sweep is deleting.
            let key = if i.is_multiple_of(2) {
                format!("sweep-{}", 1 + (i * 7919) % ROWS)
            } else {
                format!("during-{run}-{i}")
            };
            during
                .0
                .push(claim_and_complete(&store, &key, &response).await);
            i += 1;
        }
        let (deleted, took) = sweeper.await.unwrap();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let median = alone.at(0.5);
        println!(
            "sweep: {deleted} rows in {took:.1?}, {:.0} rows/s",
            deleted as f64 / took.as_secs_f64()
        );
        for (name, latencies) in [("alone", &alone), ("during the sweep", &during)] {
            let (p50, p999, max) = (latencies.at(0.5), latencies.at(0.999), latencies.at(1.0));
            println!(
                "claim+complete {name} ({} claims): median {:.2} ms ({:.2}x), p99.9 {:.2} ms ({:.2}x), worst {:.2} ms ({:.2}x) of the baseline median",
                latencies.0.len(),
                ms(p50),
                ms(p50) / ms(median),
                ms(p999),
                ms(p999) / ms(median),
                ms(max),
                ms(max) / ms(median),
            );
        }
        client
            .batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
    }
}
