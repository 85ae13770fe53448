#!/usr/bin/env python3
"""Check the build budget of the README's first command, `cargo run --example orders`:
the number of crates it compiles from clean (the demo package, the library with the
features the demo asks for, and everything they pull in). Counting crates, not seconds,
gives the same answer on any machine."""
import subprocess
import sys

BUDGET = 85

tree = subprocess.check_output(
    ["cargo", "tree", "-p", "tower-idempotency-demo", "--locked",
     "-e", "normal,build,dev", "--prefix", "none", "-f", "{p}"],
    text=True,
)
crates = {" ".join(line.split()[:2]) for line in tree.splitlines() if line.strip()}
if len(crates) > BUDGET:
    sys.exit(
        f"`cargo run --example orders` compiles {len(crates)} crates, over the budget of "
        f"{BUDGET}: keep test- and bench-only crates out of the demo package, and optional ones "
        "behind a feature of the demo package"
    )
print(f"`cargo run --example orders` compiles {len(crates)} crates (budget {BUDGET})")
