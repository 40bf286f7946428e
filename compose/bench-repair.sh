#!/usr/bin/env bash
# Benchmark of repair (not a test, not in CI): one node of a six-node
# compose cluster (4+2) lost for good, with no operator step.
#
# A fresh cluster holding GIB GiB (default 2) of new incompressible bytes
# written through the aws CLI; then, idle, node 6 is killed, and
# the others mark it gone after dead_after (10 s here) and repair rebuilds
# what it held. Measured: the seconds from the kill to the gone mark, and
# from the mark until every member reports no chunk short of a slice and
# no pass under way; the slices the six held and the five hold then; the
# bytes node 6 held; and the bytes the five sent over the network
# meanwhile (read from each container's /proc/PID/net/dev by the host),
# over the bytes lost: Reed-Solomon reads k = 4 slices for each one it
# rebuilds.
# Not yet measured: client throughput while repair runs (docs/STATUS.md).
# Repair keeps to repair_bytes_per_sec (64 MiB/s, the default here; set
# REPAIR_BYTES_PER_SEC to change it).
#
#   compose/bench-repair.sh            # builds the release binary and the image first
#   GIB=4 compose/bench-repair.sh
set -euo pipefail
cd "$(dirname "$0")"
GIB=${GIB:-2}

(cd .. && cargo build --release --quiet -p ouroboros-gateway --bin ouroboros)
OUROBOROS_BIN=../target/release/ouroboros ./build.sh >/dev/null

WHAT="repair benchmark"
PROJECT_KIND=repair
SUBNET=172.31.216
NODE_SETTINGS="OUROBOROS_DEAD_AFTER_SECS=10
OUROBOROS_REPAIR_BYTES_PER_SEC=${REPAIR_BYTES_PER_SEC:-67108864}"
set +e
# shellcheck source=compose/lib.sh
. ./lib.sh
set -e
unset AWS_CA_BUNDLE

# Bytes sent by node $1's container on every interface but loopback.
sent_bytes() {
    local pid
    pid=$(docker inspect -f '{{.State.Pid}}' "$(container "$1")")
    awk -F'[: ]+' 'NR > 2 && $2 != "lo" {sum += $11} END {print sum + 0}' "/proc/$pid/net/dev"
}
# "SLICES BYTES" node $1 reports for member N ($2, 1-based as the services).
member_slices() {
    status_json "$1" | python3 -c "
import json, sys
report = json.load(sys.stdin)
addr = '$OUROBOROS_SUBNET.1$2:7000'
m = next(m for m in report['members'] if m['addr'] == addr)
print(m['slices'], m['slice_bytes'])"
}
# Slices held by the members node $1 reaches, once each of them reports
# nothing left to move, repair or sync; empty otherwise.
settled_slices() {
    status_json "$1" | python3 -c "
import json, sys
report = json.load(sys.stdin)
total = 0
for m in report['members']:
    if m.get('slices') is None:
        continue
    if m['partitions_unsynced'] or m['chunks_degraded'] or m['slices_to_move'] or m['repairing'] or m['moving']:
        sys.exit(0)
    total += m['slices']
print(total)" 2>/dev/null || true
}
# Whether node $1 sees a repair pass under way on some member, or a chunk
# short of a slice.
repairing() {
    status_json "$1" | python3 -c "
import json, sys
report = json.load(sys.stdin)
sys.exit(0 if any(m.get('repairing') or m.get('chunks_degraded') for m in report['members']) else 1)" 2>/dev/null
}
# Until node $1 sees repair begin (at most a minute: a pass can be over
# between two looks), then until every member reports it settled.
wait_repaired() {
    for _ in $(seq 1 120); do
        repairing "$1" && break
        sleep 0.5
    done
    for _ in $(seq 1 1200); do
        [ -n "$(settled_slices "$1")" ] && return 0
        sleep 0.5
    done
    echo "repair never settled" >&2
    status_json "$1" >&2
    return 1
}
# Until node $1's layout holds node 6 as gone.
wait_gone() {
    for _ in $(seq 1 600); do
        status_json "$1" | python3 -c "
import json, sys
report = json.load(sys.stdin)
m = next(m for m in report['members'] if m['addr'] == '$OUROBOROS_SUBNET.16:7000')
sys.exit(0 if m.get('layout') == 'gone' else 1)" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "node 6 was never marked gone" >&2
    return 1
}
now() { date +%s.%N; }
# filled_cluster runs in a subshell: the compose file is set here for all.
FILE=docker-compose.6.yml
# A fresh six-node cluster holding GIB GiB of new bytes; prints its slices.
filled_cluster() {
    up docker-compose.6.yml 6 >&2
    s3 1 mb s3://bench >/dev/null
    for i in $(seq 1 "$GIB"); do
        head -c 1073741824 /dev/urandom >"$WORK/fill"
        s3 $(((i % 6) + 1)) cp --only-show-errors "$WORK/fill" "s3://bench/fill-$i"
    done
    local total=""
    for _ in $(seq 1 600); do
        total=$(settled_slices 1)
        [ -n "$total" ] && break
        sleep 0.5
    done
    echo "$total"
}
echo "== 1. idle: six nodes (4+2) holding $GIB GiB, node 6 lost ($(nproc) cores, clients and nodes on one machine)"
total=$(filled_cluster)
read -r lost_slices lost_bytes <<<"$(member_slices 1 6)"
declare -A SENT
for n in 1 2 3 4 5; do SENT[$n]=$(sent_bytes "$n"); done
killed=$(now)
docker kill "$(container 6)" >/dev/null
wait_gone 1
gone=$(now)
wait_repaired 1
healed=$(now)
after=$(settled_slices 1)
moved=0
for n in 1 2 3 4 5; do moved=$((moved + $(sent_bytes "$n") - SENT[$n])); done
printf '| slices: six nodes, then the five | node 6 held | marked gone after | repaired after the mark | network bytes / bytes lost |\n'
printf '|---|---|---|---|---|\n'
printf '| %d, then %d | %d slices, %.1f MiB | %.1f s | %.1f s (%.1f MiB/s) | %.2f |\n' "$total" "$after" "$lost_slices" \
    "$(echo "$lost_bytes / 1048576" | bc -l)" "$(echo "$gone - $killed" | bc -l)" "$(echo "$healed - $gone" | bc -l)" \
    "$(echo "$lost_bytes / 1048576 / ($healed - $gone)" | bc -l)" "$(echo "$moved / $lost_bytes" | bc -l)"

