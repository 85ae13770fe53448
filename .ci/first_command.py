#!/usr/bin/env python3
"""Check the build budget of the README's first command, `cargo run --example orders`:
the number of crates it compiles from clean, read from the unit graph of that very
command as cargo plans it (nightly's `--unit-graph`), so that features another package
of the workspace unifies into it count too. Counting crates, not seconds, gives the same
answer on any machine."""
import json
import subprocess
import sys

# 88 when this check moved to the unit graph (2026-12-03): the 79 `cargo tree -p` counted
# before missed the features the root package's dev-dependencies unify into the run
# (hyper-util's client, futures' extras: 9 small crates).
BUDGET = 90
# Crates the first command must never compile, whatever the budget says.
HEAVY = ("sqlx", "tonic", "reqwest", "metrics-exporter-prometheus", "h2", "criterion", "prost")

graph = json.loads(
    subprocess.check_output(
        ["cargo", "+nightly", "build", "--example", "orders", "--locked",
         "--unit-graph", "-Z", "unstable-options"],
        text=True,
    )
)
crates = set()
for unit in graph["units"]:
    # `registry+https://…#name@1.2.3`, or `path+file:///…#name@0.0.0`.
    crates.add(unit["pkg_id"].rsplit("#", 1)[-1])
heavy = sorted(c for c in crates if c.rsplit("@", 1)[0] in HEAVY)
if heavy:
    sys.exit(f"`cargo run --example orders` compiles {', '.join(heavy)}: keep them out of it")
if len(crates) > BUDGET:
    sys.exit(
        f"`cargo run --example orders` compiles {len(crates)} crates, over the budget of "
        f"{BUDGET}: keep test- and bench-only crates out of the demo package, optional ones "
        "behind a feature of the demo package, and packages whose features would be "
        "unified into it out of the workspace's default members"
    )
print(f"`cargo run --example orders` compiles {len(crates)} crates (budget {BUDGET})")
