#!/usr/bin/env python3
"""Check the build budget of the README's first command, `cargo run --example orders`:
the number of crates it compiles from clean (the library with its default features, its
dev-dependencies, and everything they pull in). Counting crates, not seconds, gives the
same answer on any machine; on the 2-core dev machine, 104 crates build in ~43 s."""
import subprocess
import sys

BUDGET = 110

tree = subprocess.check_output(
    ["cargo", "tree", "-p", "tower-idempotency", "--locked",
     "-e", "normal,build,dev", "--prefix", "none", "-f", "{p}"],
    text=True,
)
crates = {" ".join(line.split()[:2]) for line in tree.splitlines() if line.strip()}
if len(crates) > BUDGET:
    sys.exit(
        f"`cargo run --example orders` compiles {len(crates)} crates, over the budget of "
        f"{BUDGET}: put heavy test-only crates in another package of the workspace, or "
        "behind a feature"
    )
print(f"`cargo run --example orders` compiles {len(crates)} crates (budget {BUDGET})")
