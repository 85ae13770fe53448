//! Fresh and replay latency through the layer on each store, in process, against the bare
//! handler in the same run:
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench --bench stores --all-features
//! ```
//!
//! A store whose variable is unset (or whose feature is off) is left out. With `REDIS_URL`
//! set, the bench also starts a primary with one replica of its own (`redis-server` on the
//! `PATH`) to measure what `wait_for_replicas` costs; with `REDIS_CLUSTER_URL`, the cluster.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use criterion::{criterion_group, criterion_main, Criterion};
use tower_idempotency::{IdempotencyLayer, IdempotencyStore, MemoryStore};

mod common;

/// Fresh requests and replays on `store`; the keys written are deleted afterwards from the
/// server `url` names, if any (the bench's own Redis pair and a cluster are not kept).
fn bench_store<St: IdempotencyStore>(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    store: St,
    url: Option<&str>,
) {
    let app = common::bare(Duration::ZERO).layer(IdempotencyLayer::new(store));
    let body = common::order(common::BODY_BYTES);
    let run = uuid::Uuid::new_v4();
    let replay_key = format!("bench-{run}-replay");
    runtime.block_on(common::call(&app, Some(replay_key.clone()), &body));
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group(name);
    group.bench_function("fresh", |b| {
        b.to_async(runtime).iter(|| {
            common::call(
                &app,
                Some(format!(
                    "bench-{run}-{}",
                    counter.fetch_add(1, Ordering::Relaxed)
                )),
                &body,
            )
        });
    });
    group.bench_function("replay", |b| {
        b.to_async(runtime)
            .iter(|| common::call(&app, Some(replay_key.clone()), &body))
    });
    group.finish();
    if let Some(url) = url {
        runtime.block_on(common::leftovers::delete(url, &format!("bench-{run}-")));
    }
}

fn stores(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bare = common::bare(Duration::ZERO);
    let body = common::order(common::BODY_BYTES);
    c.bench_function("bare", |b| {
        b.to_async(&runtime)
            .iter(|| common::call(&bare, None, &body))
    });
    // Bounds wide enough for every fresh request of the run (the default bounds would
    // refuse claims partway, and measure 503s).
    let memory = MemoryStore::builder()
        .max_bytes(8 << 30)
        .max_entries(20_000_000)
        .build();
    bench_store(c, &runtime, "memory", memory, None);
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("REDIS_URL") {
        let store = runtime
            .block_on(tower_idempotency::store::RedisStore::connect(&url))
            .expect("REDIS_URL reachable");
        bench_store(c, &runtime, "redis", store.clone(), Some(&url));
        runtime.block_on(print_redis_commands(&url, store));
        // What `wait_for_replicas` costs: a primary with one replica of its own, with and
        // without waiting for it.
        let pair = replicated::Pair::start();
        let connect = || {
            runtime
                .block_on(tower_idempotency::store::RedisStore::connect(&pair.url()))
                .expect("the bench's own primary")
        };
        bench_store(c, &runtime, "redis-replicated", connect(), None);
        let waiting = runtime
            .block_on(connect().wait_for_replicas(1, Duration::from_millis(500)))
            .unwrap();
        bench_store(c, &runtime, "redis-replicated-wait-1", waiting, None);
    }
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("REDIS_CLUSTER_URL") {
        let store = runtime
            .block_on(tower_idempotency::store::RedisStore::connect(&url))
            .expect("REDIS_CLUSTER_URL reachable");
        bench_store(c, &runtime, "redis-cluster", store, Some(&url));
    }
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let store = runtime
            .block_on(tower_idempotency::store::PostgresStore::connect(&url))
            .expect("DATABASE_URL reachable");
        bench_store(c, &runtime, "postgres", store, Some(&url));
    }
}

/// The commands Redis runs per fresh request and per replay (`INFO commandstats`, the
/// scripts' own commands included), counted over 200 requests of each.
#[cfg(feature = "redis")]
async fn print_redis_commands(url: &str, store: tower_idempotency::store::RedisStore) {
    async fn calls(connection: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(connection)
            .await
            .unwrap();
        let (mut all, mut scripts) = (0, 0);
        for line in info.lines().filter(|l| l.starts_with("cmdstat_")) {
            let name = &line["cmdstat_".len()..line.find(':').unwrap()];
            let n: u64 = line
                .split("calls=")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if name != "info" {
                all += n;
            }
            if name == "evalsha" || name == "eval" {
                scripts += n;
            }
        }
        (all, scripts)
    }
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let app = common::bare(Duration::ZERO).layer(IdempotencyLayer::new(store));
    let run = uuid::Uuid::new_v4();
    let replay_key = format!("bench-count-{run}");
    let body = common::order(common::BODY_BYTES);
    common::call(&app, Some(replay_key.clone()), &body).await;
    const N: u64 = 200;
    let before = calls(&mut connection).await;
    for i in 0..N {
        common::call(&app, Some(format!("bench-count-{run}-{i}")), &body).await;
    }
    let fresh = calls(&mut connection).await;
    for _ in 0..N {
        common::call(&app, Some(replay_key.clone()), &body).await;
    }
    let replay = calls(&mut connection).await;
    let per = |a: (u64, u64), b: (u64, u64)| {
        ((b.0 - a.0) as f64 / N as f64, (b.1 - a.1) as f64 / N as f64)
    };
    let (fresh_all, fresh_scripts) = per(before, fresh);
    let (replay_all, replay_scripts) = per(fresh, replay);
    println!(
        "redis commands per fresh request: {fresh_all:.1} ({fresh_scripts:.1} scripts); per replay: {replay_all:.1} ({replay_scripts:.1} scripts)"
    );
    common::leftovers::delete(url, &format!("bench-count-{run}")).await;
}

/// A Redis primary and its replica on free loopback ports, stopped when dropped.
#[cfg(feature = "redis")]
mod replicated {
    use std::process::Command;

    pub(super) struct Pair {
        ports: [u16; 2],
        dir: std::path::PathBuf,
    }

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    impl Pair {
        pub(super) fn start() -> Self {
            let dir = std::env::temp_dir().join(format!("idem-bench-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let ports = [free_port(), free_port()];
            for (i, port) in ports.iter().enumerate() {
                let mut server = Command::new("redis-server");
                server
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
                    .arg("--dir")
                    .arg(&dir)
                    .arg("--pidfile")
                    .arg(dir.join(format!("{port}.pid")));
                if i == 1 {
                    server.args(["--replicaof", "127.0.0.1", &ports[0].to_string()]);
                }
                assert!(server.status().expect("redis-server on the PATH").success());
            }
            for _ in 0..100 {
                let info = Command::new("redis-cli")
                    .args(["-p", &ports[1].to_string(), "info", "replication"])
                    .output()
                    .expect("redis-cli on the PATH");
                if String::from_utf8_lossy(&info.stdout).contains("master_link_status:up") {
                    return Self { ports, dir };
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            panic!("the replica did not sync");
        }

        pub(super) fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.ports[0])
        }
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            for port in self.ports {
                if let Ok(pid) = std::fs::read_to_string(self.dir.join(format!("{port}.pid"))) {
                    let _ = Command::new("kill").arg(pid.trim()).status();
                }
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

criterion_group!(benches, stores);
criterion_main!(benches);
