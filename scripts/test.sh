#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what it needs, builds, runs
# the Rust tests (unit, sqllogictest over the wire, differential, restart) and the Python
# tests (psycopg, pgjdbc, Kafka against a real Tansu broker, the compose file) against real
# server processes, with two dataflow workers (and the sqllogictest files with one too).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_test_deps
export CARGO_TERM_COLOR=never
# Every server the tests start maintains its views with two workers (exchanges, clocks
# combined across workers, checkpoints at a quiet point), whatever the machine's cores; the
# sqllogictest files run once more with one worker below.
export RUNNEL_WORKERS=2
# The broker for the Kafka tests builds in the background while Runnel builds and its Rust
# tests run (its compile is mostly serial and leaves a core idle).
mkdir -p target
install_tansu > target/tansu-install.log 2>&1 &
tansu_job=$!
cargo build -j2 --workspace --all-targets
cargo test -j2 --workspace
RUNNEL_WORKERS=1 cargo test -j2 --workspace --test slt
if ! wait "$tansu_job"; then
    cat target/tansu-install.log >&2
    echo "installing the Tansu broker failed" >&2
    exit 1
fi
RUNNEL_BIN="$PWD/target/debug/runnel" .venv/bin/python -m pytest -q tests/python
