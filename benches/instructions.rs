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
    let per: Vec<(&str, f64)> = SCENARIOS
        .iter()
        .map(|&scenario| {
            let once = count(&args[0], scenario, n);
            let twice = count(&args[0], scenario, 2 * n);
            (scenario, (twice - once) as f64 / n as f64)
        })
        .collect();
    let of = |name: &str| per.iter().find(|(s, _)| *s == name).unwrap().1;
    println!(
        "\ninstructions per request ({} B order, callgrind):",
        common::BODY_BYTES
    );
    for (scenario, instructions) in &per {
        println!("{scenario:>13}: {instructions:>9.0}");
    }
    let (bare, sha) = (of("bare"), of("sha256"));
    println!(
        "layer beside the SHA-256: fresh {:.0}, replay {:.0} (the handler skipped), pass-through {:.0}",
        of("fresh") - bare - sha,
        of("replay") - bare - sha,
        of("pass_through") - bare,
    );
    println!(
        "pass-through beside a layer that does nothing (axum's boxed route and future): {:.0}",
        of("pass_through") - of("noop_layer"),
    );
}

/// Instructions callgrind counted inside `measured` for `n` requests of `scenario`.
fn count(exe: &str, scenario: &str, n: u64) -> u64 {
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
    let _ = std::fs::remove_file(&out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{scenario}: {stderr}");
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in callgrind's output: {stderr}"))
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
