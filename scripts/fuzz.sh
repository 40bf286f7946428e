#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60), after the
# committed seeds. `scripts/test.sh` calls it with a few seconds as a smoke
# run; longer runs are for people (docs/FUZZING.md). Installs cargo-fuzz when
# it is missing. The stable toolchain builds the targets without a
# sanitizer: libFuzzer's coverage needs none, and Rust's own bounds and
# overflow checks (on in fuzz builds) catch what ASan would in safe code.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(records slices front_door xml_bodies cluster_wire)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

cargo fuzz build --sanitizer none
bin="target/$(rustc -vV | sed -n 's/^host: //p')/release"
mkdir -p logs
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${seconds}s"
    mkdir -p "corpus/$target" "artifacts/$target"
    seeds=()
    if [ -d "seeds/$target" ]; then
        seeds=("seeds/$target")
    fi
    # -rss_limit_mb also bounds a single allocation: a decoder that trusts
    # a length from its input fails here instead of in production.
    status=0
    "$bin/$target" "corpus/$target" "${seeds[@]}" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"logs/$target.log" 2>&1 || status=$?
    grep -E '^Done|stat::number_of_executed_units|stat::peak_rss_mb' "logs/$target.log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "logs/$target.log" >&2
        echo "fuzz target $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
