#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, and the whole workspace's
# tests (unit, property, in-process clusters, and the real-client suites once
# they exist). Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "== installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
# The cluster tests start real `ouroboros serve` processes: build the binary
# of this very tree first, as a server is built: without the core's
# `simulation` feature, which the test build below turns on (the core and
# the crates above it build twice; the dependencies once).
cargo build -p ouroboros-gateway --bin ouroboros
cargo nextest run --workspace --no-fail-fast
echo "== real-client suite (aws CLI, boto3, rclone, s3cmd)"
./scripts/client-suite.sh
echo "== real-client suite against a three-node cluster"
CLUSTER_SIZE=3 ./scripts/client-suite.sh
echo "== multipart dedup (aws CLI at its defaults)"
./scripts/dedup-suite.sh
echo "== fuzz smoke (each target ${FUZZ_SECONDS:-10}s; longer runs: scripts/fuzz.sh SECONDS)"
./scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
echo "== compose fault tests (docker-compose clusters of this build's image)"
if docker info >/dev/null 2>&1; then
    OUROBOROS_BIN=target/debug/ouroboros ./compose/build.sh
    ./compose/test.sh
else
    echo "compose tests skipped: no Docker daemon reachable"
fi
