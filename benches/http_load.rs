//! Throughput over real loopback HTTP: bare handler, pass-through, fresh and replay, as
//! ratios to the bare handler measured in the same run. Fresh requests and replays are
//! also compared with `bare_keyed`, the bare handler sent the same keyed requests: the
//! load generator shares the two cores, and a key it formats for each request is work
//! it does not do for a keyless bare request.
//!
//! ```text
//! cargo bench --bench http_load                     # 3 rounds of 2 s per scenario
//! cargo bench --bench http_load -- --seconds 5 --rounds 5 --connections 64
//! cargo bench --bench http_load -- --commit-ms 1   # a handler that waits 1 ms on I/O
//! cargo bench --bench http_load -- --body-bytes 40  # a tiny order instead of 1 KiB
//! cargo bench --bench http_load -- --only fresh     # one scenario (to profile it)
//! cargo bench --bench http_load -- --max-entries 10000  # a memory store of 10k records
//! cargo bench --bench http_load --features redis -- --store redis://127.0.0.1:6379
//! cargo bench --bench http_load --features postgres -- --store postgres://postgres@127.0.0.1:5432/test
//! cargo bench --bench http_load --features redis -- --store redis://127.0.0.1:6379 --replay-cache
//! ```
//!
//! The default handler is CPU-only (parse a 1 KiB JSON order and answer it back as JSON),
//! the worst case for any middleware's relative cost; `--commit-ms` makes it wait like a
//! handler that commits to a database. `--store` puts the layer on Redis or PostgreSQL
//! instead of the in-memory store (each run uses keys of its own); `--replay-cache` puts a
//! `ReplayCache` in front of it, so that a replay after the first is answered in process.
//!
//! The server runs on one runtime thread and the load generator on another, each with
//! keep-alive HTTP/1.1 connections, so on a two-core machine each side has a core.
//! Scenarios are interleaved round by round, and each figure is the median of its rounds.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

mod common;

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Bare,
    /// The bare handler sent the requests of `Fresh`, key header and all: the same bytes
    /// on the wire and the same work for the load generator, which shares the machine.
    BareKeyed,
    PassThrough,
    Fresh,
    Replay,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Self::Bare,
        Self::BareKeyed,
        Self::PassThrough,
        Self::Fresh,
        Self::Replay,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::BareKeyed => "bare_keyed",
            Self::PassThrough => "pass_through",
            Self::Fresh => "fresh",
            Self::Replay => "replay",
        }
    }
}

struct Options {
    seconds: f64,
    rounds: usize,
    connections: usize,
    commit: Duration,
    body_bytes: usize,
    store: String,
    max_entries: Option<usize>,
    replay_cache: bool,
    only: Option<String>,
}

fn options() -> Options {
    let mut options = Options {
        seconds: 2.0,
        rounds: 3,
        connections: 32,
        commit: Duration::ZERO,
        body_bytes: common::BODY_BYTES,
        store: "memory".to_owned(),
        max_entries: None,
        replay_cache: false,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("flag needs a value");
        match arg.as_str() {
            "--seconds" => options.seconds = value().parse().expect("--seconds"),
            "--rounds" => options.rounds = value().parse().expect("--rounds"),
            "--connections" => options.connections = value().parse().expect("--connections"),
            "--commit-ms" => {
                options.commit = Duration::from_millis(value().parse().expect("--commit-ms"))
            }
            "--body-bytes" => options.body_bytes = value().parse().expect("--body-bytes"),
            "--store" => options.store = value(),
            "--only" => options.only = Some(value()),
            "--max-entries" => options.max_entries = Some(value().parse().expect("--max-entries")),
            "--replay-cache" => options.replay_cache = true,
            _ => {} // cargo bench passes --bench
        }
    }
    options
}

/// Serves the app `build` makes, on a runtime thread of its own (where a store's
/// connections are made too).
fn serve<F, Fut>(build: F) -> SocketAddr
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Router>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = build().await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

static KEYS: AtomicU64 = AtomicU64::new(0);

/// The handler behind the layer on `store`, or on a replay cache in front of it.
#[cfg(any(feature = "redis", feature = "postgres"))]
fn layered_on<St: tower_idempotency::IdempotencyStore>(
    store: St,
    commit: Duration,
    replay_cache: bool,
) -> Router {
    use tower_idempotency::{store::ReplayCache, IdempotencyLayer};
    if replay_cache {
        common::bare(commit).layer(IdempotencyLayer::new(ReplayCache::new(store)))
    } else {
        common::bare(commit).layer(IdempotencyLayer::new(store))
    }
}

/// The handler behind the layer on the store `url` names (`memory`, `redis://…`,
/// `postgres://…`).
async fn layered(
    url: String,
    commit: Duration,
    max_entries: Option<usize>,
    replay_cache: bool,
) -> Router {
    if url == "memory" {
        assert!(
            !replay_cache,
            "--replay-cache needs --store redis://… or postgres://…"
        );
        return match max_entries {
            Some(max_entries) => common::layered_holding(commit, max_entries),
            None => common::layered(commit),
        };
    }
    #[cfg(feature = "redis")]
    if url.starts_with("redis") {
        let store = tower_idempotency::store::RedisStore::connect(&url)
            .await
            .expect("--store reachable");
        return layered_on(store, commit, replay_cache);
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres") {
        let store = tower_idempotency::store::PostgresStore::connect(&url)
            .await
            .expect("--store reachable");
        return layered_on(store, commit, replay_cache);
    }
    panic!("--store {url}: not a store this build knows (memory, or redis:// / postgres:// with its feature)");
}

/// Requests per second over `seconds` with `connections` keep-alive connections.
async fn load(
    addr: SocketAddr,
    scenario: Scenario,
    seconds: f64,
    connections: usize,
    body: &Bytes,
    run: &str,
) -> f64 {
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (done, count) = (done.clone(), count.clone());
        let (body, run) = (body.clone(), run.to_owned());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            while !done.load(Ordering::Relaxed) {
                let mut request = http::Request::post("/orders")
                    .header("host", "bench")
                    .header("content-type", "application/json");
                match scenario {
                    Scenario::Fresh | Scenario::BareKeyed => {
                        request = request.header(
                            "idempotency-key",
                            format!("fresh-{run}-{}", KEYS.fetch_add(1, Ordering::Relaxed)),
                        );
                    }
                    Scenario::Replay => {
                        request = request.header("idempotency-key", format!("replay-{run}"))
                    }
                    Scenario::Bare | Scenario::PassThrough => {}
                }
                let request = request.body(Full::new(body.clone())).unwrap();
                sender.ready().await.unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                response.into_body().collect().await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Warm the connections up, then count over the window.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start_count = count.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let measured = count.load(Ordering::Relaxed) - start_count;
    let elapsed = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    measured as f64 / elapsed
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let options = options();
    let commit = options.commit;
    let bare = serve(move || async move { common::bare(commit) });
    let store = options.store.clone();
    let (max_entries, replay_cache) = (options.max_entries, options.replay_cache);
    let layered = serve(move || layered(store, commit, max_entries, replay_cache));
    let body = common::order(options.body_bytes);
    let run = std::process::id().to_string()
        + &std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            .to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); Scenario::ALL.len()];
    runtime.block_on(async {
        // Record the replayed response once.
        load(layered, Scenario::Replay, 0.1, 1, &body, &run).await;
        for round in 1..=options.rounds {
            for (i, scenario) in Scenario::ALL.into_iter().enumerate() {
                if options
                    .only
                    .as_deref()
                    .is_some_and(|only| only != scenario.name())
                {
                    continue;
                }
                let addr = if matches!(scenario, Scenario::Bare | Scenario::BareKeyed) {
                    bare
                } else {
                    layered
                };
                let rps = load(
                    addr,
                    scenario,
                    options.seconds,
                    options.connections,
                    &body,
                    &run,
                )
                .await;
                eprintln!("round {round} {:>12}: {rps:>9.0} req/s", scenario.name());
                results[i].push(rps);
            }
        }
    });
    // What the run wrote to a store outside the process: its keys all hold `run`.
    runtime.block_on(common::leftovers::delete(&options.store, &run));
    if options.only.is_some() {
        return; // no baseline to compare with
    }
    let baseline = median(results[0].clone());
    let keyed = median(results[1].clone());
    println!(
        "\nmedian of {} rounds x {} s, {} connections, {}-byte order, handler commit {:?}, store {}{}{}",
        options.rounds,
        options.seconds,
        options.connections,
        options.body_bytes,
        options.commit,
        options.store,
        options
            .max_entries
            .map_or(String::new(), |n| format!(" holding at most {n} records")),
        if options.replay_cache {
            " behind a replay cache"
        } else {
            ""
        },
    );
    for (scenario, rounds) in Scenario::ALL.into_iter().zip(results) {
        let rps = median(rounds);
        // A keyed request is compared with the bare handler sent the same request too:
        // making its key is the client's work, on the machine the server shares.
        let against_keyed = match scenario {
            Scenario::Fresh | Scenario::Replay => format!("  to bare_keyed {:.3}", rps / keyed),
            _ => String::new(),
        };
        println!(
            "{:>12}: {rps:>9.0} req/s  ratio to bare {:.3}{against_keyed}",
            scenario.name(),
            rps / baseline
        );
    }
}
