#!/usr/bin/env bash
# The seeded fault simulation (core/tests/simulation.rs):
#   scripts/simulate.sh N            N schedules from seed 1 (or SIM_FIRST_SEED)
#   scripts/simulate.sh 1 --seed S   replay the schedule of seed S
# Ends with the line "N passed, F failed"; exits non-zero when any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

count="${1:-300}"
if [ "${2:-}" = "--seed" ]; then
    [ -n "${3:-}" ] || { echo "usage: $0 N [--seed S]" >&2; exit 2; }
    export SIM_SEED="$3"
else
    export SIM_SCHEDULES="$count"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo nextest run --workspace -E 'test(seeded_fault)' --no-capture 2>&1 | tee "$log" >&2
status=${PIPESTATUS[0]}
summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)"
if [ -z "$summary" ]; then
    echo "0 passed, ${SIM_SEED:+1}${SIM_SEED:-$count} failed"
    exit 1
fi
echo "$summary"
exit "$status"
