#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what it needs, builds, runs
# the Rust tests (unit, sqllogictest over the wire, differential, restart) and the psycopg
# tests against a real server process.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_test_deps
export CARGO_TERM_COLOR=never
cargo build -j2 --workspace --all-targets
cargo test -j2 --workspace
RUNNEL_BIN="$PWD/target/debug/runnel" .venv/bin/python -m pytest -q tests/python
