#!/usr/bin/env bash
# Benchmark (prints numbers, never part of the test suite): COPY N rows into an embedded
# stream while a view maintains count/sum/avg/min/max per key, compared with DuckDB computing
# the same aggregate over the same rows. Usage: scripts/bench.sh [--rows N] [--keys K]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_test_deps
cargo build --release -j2 -p runnel
exec .venv/bin/python benches/copy_aggregate.py --bin target/release/runnel "$@"
