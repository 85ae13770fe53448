//! Instructions per request, counted by callgrind (the count does not depend on a noisy
//! clock): the bare handler, a layer that does nothing, the pass-through, a fresh request and a replay with the
//! layer's defaults on the default memory store, and the SHA-256 of the same 1 KiB order, so that the layer's own work beside the
//! digest is `fresh - bare - sha256`.
//!
//! ```text
//! cargo bench --bench instructions              # needs valgrind on the PATH
//! cargo bench --bench instructions -- --requests 2000
//! ```
//!
//! Each scenario runs twice under `valgrind --tool=callgrind`, counting only inside
//! `measured` (warm-up excluded), with `n` and `2n` requests; the difference over `n`
//! removes what a run costs once (the first allocations, the runtime's start).
//!
//! Three figures per scenario: all instructions; the instructions outside the allocator
//! (`__rust_alloc`, `__rust_dealloc`, `__rust_realloc` counted as nothing, a second pair
//! of runs); and the allocator calls (allocations and reallocations). The total moves
//! with the heap the warm-up leaves (whether glibc's `realloc` of a growing buffer finds
//! room in place): the other two do not, so a change of a few hundred instructions shows
//! in them when the total's noise would hide it.

use std::{hint::black_box, process::Command, time::Duration};

use axum::Router;
use bytes::Bytes;
use tower_idempotency::{IdempotencyLayer, MemoryStore};

mod common;

const SCENARIOS: [&str; 6] = [
    "bare",
    "noop_layer",
    "pass_through",
    "fresh",
    "replay",
    "sha256",
];

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
    let per: Vec<(&str, PerRequest)> = SCENARIOS
        .iter()
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
    let (bare, sha) = (of("bare"), of("sha256"));
    let beside = |name: &str, f: fn(&PerRequest) -> f64, minus_sha: bool| {
        f(&of(name)) - f(&bare) - if minus_sha { f(&sha) } else { 0.0 }
    };
    for (what, f) in [
        ("all instructions", (|p| p.all) as fn(&PerRequest) -> f64),
        ("outside the allocator", |p| p.outside_allocator),
    ] {
        println!(
            "layer beside the SHA-256, {what}: fresh {:.0}, replay {:.0} (the handler skipped), pass-through {:.0}",
            beside("fresh", f, true),
            beside("replay", f, true),
            beside("pass_through", f, false),
        );
    }
    println!(
        "allocations beyond bare: fresh {:.1}, replay {:.1}, pass-through {:.1}",
        beside("fresh", |p| p.allocations, false),
        beside("replay", |p| p.allocations, false),
        beside("pass_through", |p| p.allocations, false),
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
    let once = count(exe, scenario, n, false);
    let twice = count(exe, scenario, 2 * n, false);
    let once_outside = count(exe, scenario, n, true);
    let twice_outside = count(exe, scenario, 2 * n, true);
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
    PerRequest {
        all: per(once.instructions, twice.instructions),
        outside_allocator: per(once_outside.instructions, twice_outside.instructions),
        allocations: per(once.allocations, twice.allocations),
    }
}

/// What one run under callgrind counted.
struct Counted {
    instructions: u64,
    allocations: u64,
}

/// The allocator's entry points: their calls are counted, and with `outside_allocator`
/// their instructions are not.
const ALLOCATOR: [&str; 4] = [
    "__rustc::__rust_alloc",
    "__rustc::__rust_alloc_zeroed",
    "__rustc::__rust_realloc",
    "__rustc::__rust_dealloc",
];

/// Instructions callgrind counted inside `measured` for `n` requests of `scenario` (those
/// inside the allocator too, unless `outside_allocator`), and the allocator calls made.
fn count(exe: &str, scenario: &str, n: u64, outside_allocator: bool) -> Counted {
    let out = std::env::temp_dir().join(format!("instructions-{}.out", std::process::id()));
    let mut valgrind = Command::new("valgrind");
    valgrind.args([
        "--tool=callgrind",
        "--collect-atstart=no",
        // Exactly these two: a pattern that also matched `measured`'s own closure
        // would toggle counting off inside it when it is not inlined.
        "--toggle-collect=instructions::measured",
        "--toggle-collect=instructions::sha256_measured",
    ]);
    if outside_allocator {
        // Toggled off on entry inside `measured`, back on at return. (During the warm-up
        // they toggle counting on: the same in both runs, so the difference drops it.)
        for entry in ALLOCATOR {
            valgrind.arg(format!("--toggle-collect={entry}"));
        }
    }
    let output = valgrind
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
    Counted {
        instructions,
        allocations: allocator_calls(&profile),
    }
}

/// Calls to `__rust_alloc`, `__rust_alloc_zeroed` and `__rust_realloc` in a callgrind
/// profile (a `cfn=` line names the callee, by `(id) name` where the id is first seen, in
/// it or in an `fn=` line, by `(id)` after that; the next `calls=` line counts the calls;
/// callgrind counts calls whether or not it collects, so a run's warm-up is in them).
fn allocator_calls(profile: &str) -> u64 {
    let mut names = std::collections::HashMap::new();
    let mut counting = false;
    let mut calls = 0;
    for line in profile.lines() {
        if let Some(function) = line.strip_prefix("fn=") {
            if let Some((id, name)) = function.split_once(' ') {
                names.insert(id.to_owned(), name.to_owned());
            }
        } else if let Some(callee) = line.strip_prefix("cfn=") {
            // `(id) name` the first time a name appears, `(id)` after that.
            let (id, name) = callee.split_once(' ').unwrap_or((callee, ""));
            if !name.is_empty() {
                names.insert(id.to_owned(), name.to_owned());
            }
            counting = names
                .get(id)
                .is_some_and(|name| ALLOCATOR[..3].contains(&name.as_str()));
        } else if let Some(rest) = line.strip_prefix("calls=") {
            if counting {
                calls += rest
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            counting = false;
        }
    }
    calls
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
        "bare" => common::bare(Duration::ZERO),
        "noop_layer" => common::noop_layered(),
        _ => common::bare(Duration::ZERO).layer(IdempotencyLayer::new(MemoryStore::new())),
    };
    // The keys are made before counting: making them is the client's work.
    let mut keys: Vec<Option<String>> = (0..n + 50)
        .map(|i| match scenario {
            "fresh" => Some(format!("fresh-{i}")),
            "replay" => Some("replay-key".to_owned()),
            _ => None,
        })
        .collect();
    runtime.block_on(async {
        // Warm up: the replayed record, and the allocator's first pages.
        common::call(&app, Some("replay-key".to_owned()), &body).await;
        for key in keys.drain(n as usize..) {
            common::call(&app, key, &body).await;
        }
    });
    measured(&runtime, &app, keys, &body);
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
