#!/usr/bin/env python3
"""Check that Cargo.toml's rust-version is the oldest toolchain the crate's own
dependencies (normal and build, every feature on, any target) allow: the highest
`rust-version` any of them declares. Dev-dependencies do not count: users never
build them."""
import json
import subprocess
import sys


def version(text):
    return tuple(int(part) for part in text.split("."))[:2]


meta = json.loads(
    subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--all-features", "--locked"]
    )
)
by_id = {(p["name"], p["version"]): p for p in meta["packages"]}
root = next(
    p for p in meta["packages"]
    if p["id"] in meta["workspace_members"] and p["name"] == "tower-idempotency"
)
tree = subprocess.check_output(
    ["cargo", "tree", "-p", "tower-idempotency", "--all-features", "--locked", "--target", "all",
     "-e", "normal,build", "--prefix", "none", "-f", "{p}"],
    text=True,
)
needs = []
for line in tree.splitlines():
    parts = line.split()
    if len(parts) < 2 or not parts[1].startswith("v"):
        continue
    package = by_id.get((parts[0], parts[1][1:]))
    if package and package is not root and package.get("rust_version"):
        needs.append((version(package["rust_version"]), package["name"], package["version"]))
needed, name, at = max(needs)
stated = version(root["rust_version"])
shown = ".".join(map(str, needed))
if stated < needed:
    sys.exit(f"rust-version {root['rust_version']} is untrue: {name} {at} needs {shown}")
if stated > needed:
    sys.exit(f"rust-version {root['rust_version']} is higher than needed: the dependencies allow {shown} ({name} {at})")
print(f"rust-version {root['rust_version']}: the oldest the dependencies allow ({name} {at})")
