//! Instructions per request, counted by callgrind (the count does not depend on a noisy
//! clock): the bare handler (sent no key, and sent the key header a fresh request
//! carries), a layer that does nothing, the pass-through, a fresh request and a replay
//! with the layer's defaults on the default memory store (and on one that evicts the
//! least recently used records, which also keeps their order of use), a replay a
//! `ReplayCache` answers from its copy, and the SHA-256 of
//! the same 1 KiB order, so that the layer's own work beside the digest is
//! `fresh - bare_keyed - sha256`.
//!
//! ```text
//! cargo bench --bench instructions              # needs valgrind on the PATH
//! cargo bench --bench instructions -- --requests 2000
//! cargo bench --bench instructions -- --only fresh,bare   # some scenarios, no comparisons
//! REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench instructions --features redis
//! ```
//!
//! With `REDIS_URL` set (and the feature `redis`), a fresh request and a replay on the
//! Redis store are counted too: this process's instructions only (the layer, the store,
//! the Redis client), not the Redis server's; and a replay a `ReplayCache` in front of
//! that store answers from its copy. Their keys are deleted afterwards.
//!
//! Each scenario runs twice under `valgrind --tool=callgrind`, counting only inside
//! `measured` (warm-up excluded), with `n` and `2n` requests; the difference over `n`
//! removes what a run costs once (the first allocations, the runtime's start).
//!
//! Three figures per scenario: all instructions; the instructions outside the allocator
//! (those inside `__rust_alloc`, `__rust_dealloc`, `__rust_realloc` taken out); and the
//! allocator calls (allocations and reallocations). The total moves
//! with the heap the warm-up leaves (whether glibc's `realloc` of a growing buffer finds
//! room in place): the other two do not, so a change of a few hundred instructions shows
//! in them when the total's noise would hide it.

use std::{hint::black_box, process::Command, time::Duration};

use axum::Router;
use bytes::Bytes;
use tower_idempotency::{store::Eviction, IdempotencyLayer, MemoryStore};

mod common;

const SCENARIOS: [&str; 10] = [
    "bare",
    "bare_keyed",
    "noop_layer",
    "pass_through",
    "fresh",
    "replay",
    "fresh_lru",
    "replay_lru",
    "replay_cached",
    "sha256",
];

/// Counted when `REDIS_URL` is set (the last: a replay answered by a `ReplayCache`'s copy).
const REDIS_SCENARIOS: [&str; 3] = ["fresh_redis", "replay_redis", "replay_redis_cached"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        let scenario = &args[at + 1];
        let n: u64 = args[at + 2].parse().expect("request count");
        return child(scenario, n);
    }
    let n: u64 = args
        .iter()
        .position(|a| a == "--requests")
        .map(|at| args[at + 1].parse().expect("--requests N"))
        .unwrap_or(1000);
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("valgrind is not on the PATH: no instruction counts (apt install valgrind)");
        return;
    }
    // `--only fresh,replay`: those scenarios' figures, without the comparisons.
    let only: Option<Vec<&str>> = args
        .iter()
        .position(|a| a == "--only")
        .map(|at| args[at + 1].split(',').collect());
    let redis = cfg!(feature = "redis") && std::env::var_os("REDIS_URL").is_some();
    let per: Vec<(&str, PerRequest)> = SCENARIOS
        .iter()
        .chain(if redis { &REDIS_SCENARIOS[..] } else { &[] })
        .filter(|scenario| only.as_ref().is_none_or(|only| only.contains(scenario)))
        .map(|&scenario| (scenario, per_request(&args[0], scenario, n)))
        .collect();
    let of = |name: &str| per.iter().find(|(s, _)| *s == name).unwrap().1;
    println!(
        "\ninstructions per request ({} B order, callgrind):",
        common::BODY_BYTES
    );
    println!(
        "{:>13}  {:>9}  {:>17}  {:>11}",
        "", "all", "outside allocator", "allocations"
    );
    for (scenario, figures) in &per {
        println!(
            "{scenario:>13}: {:>9.0}  {:>17.0}  {:>11.1}",
            figures.all, figures.outside_allocator, figures.allocations
        );
    }
    if only.is_some() {
        return;
    }
    // A keyed request is compared with the bare handler sent the same key header: the
    // client's building of the header (and hyper's dropping it) is not the layer's work.
    let sha = of("sha256");
    let beside = |name: &str, baseline: &str, f: fn(&PerRequest) -> f64| {
        let digest = if baseline == "bare_keyed" {
            f(&sha)
        } else {
            0.0
        };
        f(&of(name)) - f(&of(baseline)) - digest
    };
    for (what, f) in [
        ("all instructions", (|p| p.all) as fn(&PerRequest) -> f64),
        ("outside the allocator", |p| p.outside_allocator),
    ] {
        println!(
            "layer beside the SHA-256, {what}: fresh {:.0}, replay {:.0} (the handler skipped), pass-through {:.0}",
            beside("fresh", "bare_keyed", f),
            beside("replay", "bare_keyed", f),
            beside("pass_through", "bare", f),
        );
    }
    // The same two requests on another store: beside the same baseline and digest.
    let stores: [(&str, &str, bool); 2] = [
        ("with least-recently-used eviction", "_lru", true),
        ("on Redis (this process only)", "_redis", redis),
    ];
    for (label, suffix, _) in stores.into_iter().filter(|&(_, _, counted)| counted) {
        let (fresh, replay) = (format!("fresh{suffix}"), format!("replay{suffix}"));
        let pair = |f: fn(&PerRequest) -> f64| {
            (
                beside(&fresh, "bare_keyed", f),
                beside(&replay, "bare_keyed", f),
            )
        };
        let ((fresh_all, replay_all), (fresh_out, replay_out), (fresh_allocs, replay_allocs)) = (
            pair(|p| p.all),
            pair(|p| p.outside_allocator),
            pair(|p| p.allocations),
        );
        println!(
            "{label}: fresh {fresh_all:.0}, replay {replay_all:.0} (outside the allocator: fresh {fresh_out:.0}, replay {replay_out:.0}; allocations {fresh_allocs:.1}, {replay_allocs:.1})",
        );
    }
    println!(
        "a replay answered by a ReplayCache's copy (in front of a memory store): {:.0} ({:.0} outside the allocator; allocations {:.1})",
        beside("replay_cached", "bare_keyed", |p| p.all),
        beside("replay_cached", "bare_keyed", |p| p.outside_allocator),
        beside("replay_cached", "bare_keyed", |p| p.allocations),
    );
    if redis {
        println!(
            "a replay on Redis answered by a ReplayCache's copy: {:.0} ({:.0} outside the allocator; allocations {:.1})",
            beside("replay_redis_cached", "bare_keyed", |p| p.all),
            beside("replay_redis_cached", "bare_keyed", |p| p.outside_allocator),
            beside("replay_redis_cached", "bare_keyed", |p| p.allocations),
        );
    }
    println!(
        "allocations beyond the bare handler's: fresh {:.1}, replay {:.1}, pass-through {:.1}",
        beside("fresh", "bare_keyed", |p| p.allocations),
        beside("replay", "bare_keyed", |p| p.allocations),
        beside("pass_through", "bare", |p| p.allocations),
    );
    println!(
        "(against the bare handler without the key header, as measured before: fresh {:.0}, replay {:.0}; the header costs {:.0})",
        of("fresh").all - of("bare").all - sha.all,
        of("replay").all - of("bare").all - sha.all,
        of("bare_keyed").all - of("bare").all,
    );
    println!(
        "pass-through beside a layer that does nothing (axum's boxed route and future): {:.0} ({:.0} outside the allocator)",
        of("pass_through").all - of("noop_layer").all,
        of("pass_through").outside_allocator - of("noop_layer").outside_allocator,
    );
}

/// One scenario's figures per request.
#[derive(Clone, Copy)]
struct PerRequest {
    all: f64,
    outside_allocator: f64,
    allocations: f64,
}

/// The figures of `scenario`: each the difference between runs of `2n` and `n`
/// requests, over `n`.
fn per_request(exe: &str, scenario: &str, n: u64) -> PerRequest {
    let once = count(exe, scenario, n);
    let twice = count(exe, scenario, 2 * n);
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
    PerRequest {
        all: per(once.instructions, twice.instructions),
        outside_allocator: per(
            once.instructions - once.in_allocator,
            twice.instructions - twice.in_allocator,
        ),
        allocations: per(once.allocations, twice.allocations),
    }
}

/// What one run under callgrind counted.
struct Counted {
    instructions: u64,
    /// Of those, the instructions inside the allocator's entry points.
    in_allocator: u64,
    /// Calls that allocate or reallocate.
    allocations: u64,
}

/// The allocator's entry points (the first three allocate).
const ALLOCATOR: [&str; 4] = [
    "__rustc::__rust_alloc",
    "__rustc::__rust_alloc_zeroed",
    "__rustc::__rust_realloc",
    "__rustc::__rust_dealloc",
];

/// What callgrind counted inside `measured` for `n` requests of `scenario`.
fn count(exe: &str, scenario: &str, n: u64) -> Counted {
    let out = std::env::temp_dir().join(format!("instructions-{}.out", std::process::id()));
    let output = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--collect-atstart=no",
            // Exactly these two: a pattern that also matched `measured`'s own closure
            // would toggle counting off inside it when it is not inlined.
            "--toggle-collect=instructions::measured",
            "--toggle-collect=instructions::sha256_measured",
        ])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .args([exe, "--child", scenario, &n.to_string()])
        .output()
        .expect("valgrind runs");
    let profile = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{scenario}: {stderr}");
    let instructions = stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in callgrind's output: {stderr}"));
    let (in_allocator, allocations) = allocator_calls(&profile);
    Counted {
        instructions,
        in_allocator,
        allocations,
    }
}

/// The instructions spent in calls to the allocator's entry points, and the number of
/// calls that allocate, from a callgrind profile. Each call site is a `cfn=` line naming
/// the callee (`(id) name` where the id is first seen, in it or in an `fn=` line, `(id)`
/// after that), a `calls=` line counting the calls, and a line whose last field is what
/// they cost inclusively, counted only while collecting. (Callgrind counts calls whether
/// or not it collects, so the warm-up's are in the number: the difference of two runs
/// drops them.)
fn allocator_calls(profile: &str) -> (u64, u64) {
    let mut names = std::collections::HashMap::new();
    let mut callee: Option<usize> = None;
    let mut cost_line_next = false;
    let (mut cost, mut calls) = (0, 0);
    for line in profile.lines() {
        if cost_line_next {
            cost_line_next = false;
            cost += line
                .split(' ')
                .next_back()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        } else if let Some(function) = line.strip_prefix("fn=") {
            if let Some((id, name)) = function.split_once(' ') {
                names.insert(id.to_owned(), name.to_owned());
            }
        } else if let Some(called) = line.strip_prefix("cfn=") {
            let (id, name) = called.split_once(' ').unwrap_or((called, ""));
            if !name.is_empty() {
                names.insert(id.to_owned(), name.to_owned());
            }
            callee = names
                .get(id)
                .and_then(|name| ALLOCATOR.iter().position(|entry| entry == name));
        } else if let Some(rest) = line.strip_prefix("calls=") {
            if let Some(entry) = callee.take() {
                cost_line_next = true;
                if entry < 3 {
                    calls += rest
                        .split(' ')
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    (cost, calls)
}

fn child(scenario: &str, n: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = common::order(common::BODY_BYTES);
    if scenario == "sha256" {
        return sha256(&body, n);
    }
    // The layer as configured by default, on the default memory store.
    let app = match scenario {
        "bare" | "bare_keyed" => common::bare(Duration::ZERO),
        "noop_layer" => common::noop_layered(),
        // A replay a `ReplayCache` answers from its copy (here in front of a memory store:
        // what the copy costs, without a server).
        "replay_cached" => common::bare(Duration::ZERO).layer(IdempotencyLayer::new(
            tower_idempotency::store::ReplayCache::new(MemoryStore::new()),
        )),
        "fresh_lru" | "replay_lru" => {
            let store = MemoryStore::builder()
                .eviction(Eviction::LeastRecentlyUsed)
                .build();
            common::bare(Duration::ZERO).layer(IdempotencyLayer::new(store))
        }
        #[cfg(feature = "redis")]
        "fresh_redis" | "replay_redis" | "replay_redis_cached" => {
            let url = std::env::var("REDIS_URL").expect("REDIS_URL");
            let store = runtime
                .block_on(tower_idempotency::store::RedisStore::connect(&url))
                .expect("REDIS_URL reachable");
            let app = common::bare(Duration::ZERO);
            if scenario == "replay_redis_cached" {
                let cache = tower_idempotency::store::ReplayCache::new(store);
                app.layer(IdempotencyLayer::new(cache))
            } else {
                app.layer(IdempotencyLayer::new(store))
            }
        }
        _ => common::bare(Duration::ZERO).layer(IdempotencyLayer::new(MemoryStore::new())),
    };
    // On a store outside the process, keys of this run only: it keeps what earlier runs
    // left. (In process, the short keys the figures were first measured with.)
    let run = uuid::Uuid::new_v4();
    let on_redis = scenario.contains("_redis");
    let prefix = if on_redis {
        format!("instructions-{run}-")
    } else {
        String::new()
    };
    let replay_key = format!("{prefix}replay-key");
    // The keys are made before counting: making them is the client's work.
    let mut keys: Vec<Option<String>> = (0..n + 50)
        .map(|i| match scenario {
            "fresh" | "fresh_lru" | "fresh_redis" | "bare_keyed" => {
                Some(format!("{prefix}fresh-{i}"))
            }
            "replay" | "replay_lru" | "replay_cached" | "replay_redis" | "replay_redis_cached" => {
                Some(replay_key.clone())
            }
            _ => None,
        })
        .collect();
    runtime.block_on(async {
        // Warm up: the replayed record, and the allocator's first pages.
        common::call(&app, Some(replay_key.clone()), &body).await;
        for key in keys.drain(n as usize..) {
            common::call(&app, key, &body).await;
        }
    });
    measured(&runtime, &app, keys, &body);
    #[cfg(feature = "redis")]
    if on_redis {
        let url = std::env::var("REDIS_URL").expect("REDIS_URL");
        runtime.block_on(common::leftovers::delete(
            &url,
            &format!("instructions-{run}-"),
        ));
    }
}

#[inline(never)]
fn measured(
    runtime: &tokio::runtime::Runtime,
    app: &Router,
    keys: Vec<Option<String>>,
    body: &Bytes,
) {
    runtime.block_on(async {
        for key in keys {
            common::call(app, key, body).await;
        }
    });
}

#[inline(never)]
fn sha256(body: &Bytes, n: u64) {
    sha256_measured(body, n);
}

#[inline(never)]
fn sha256_measured(body: &Bytes, n: u64) {
    use sha2::Digest;
    for _ in 0..n {
        black_box(sha2::Sha256::digest(black_box(&body[..])));
    }
}
