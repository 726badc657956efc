#!/usr/bin/env bash
# Benchmarks (print numbers, never part of the test suite).
#   scripts/bench.sh [--rows N] [--keys K]       COPY N rows into an embedded stream while a view
#                                                maintains count/sum/avg/min/max per key, vs DuckDB.
#   scripts/bench.sh kafka [--events N]          backfill a per-user view from a 4-partition
#                                                topic (default 5,000,000 JSON events) vs a raw
#                                                librdkafka consumer and DuckDB.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_test_deps
install_tansu
cargo build --release -j2 -p runnel
if [ "${1:-}" = "kafka" ]; then
    shift
    exec .venv/bin/python benches/kafka_backfill.py --bin target/release/runnel "$@"
fi
exec .venv/bin/python benches/copy_aggregate.py --bin target/release/runnel "$@"
