#!/usr/bin/env bash
# Runs Runnel with embedded defaults on a fresh Debian machine: installs the build
# dependencies, builds the release binary and serves on 127.0.0.1:6875 with ./runnel-data.
# Extra arguments are passed to `runnel serve` (see `runnel serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_build_deps
cargo build --release -j2 -p runnel
exec target/release/runnel serve --data-dir ./runnel-data --listen 127.0.0.1:6875 "$@"
