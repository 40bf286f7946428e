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
# rebuilds. Then the same on a second fresh cluster with a client at work:
# rounds of one PUT and one GET of PROBE_MIB MiB (default 128) through the
# aws CLI, timed on the six nodes idle before the kill (ROUNDS rounds,
# default 3), on the five while repair runs (the rounds that finish before
# it settles), and on the five idle after it; and how long repair takes
# under that load.
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
    awk -F'[: ]+' 'NR > 2 && $2 != "lo" {sum += $11} END {printf "%.0f\n", sum}' "/proc/$pid/net/dev"
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
    wait_settled_total
}
# Slices the members hold once they report nothing left to do.
wait_settled_total() {
    local total=""
    for _ in $(seq 1 600); do
        total=$(settled_slices 1)
        [ -n "$total" ] && break
        sleep 0.5
    done
    echo "$total"
}
PROBE_MIB=${PROBE_MIB:-128}
ROUNDS=${ROUNDS:-3}
# One client round through node $1: PUT a new PROBE_MIB MiB object and GET
# the probe object written with the fill; prints "PUT_SECS GET_SECS".
client_round() {
    head -c $((PROBE_MIB << 20)) /dev/urandom >"$WORK/round-$1"
    local start mid end
    start=$(now)
    s3 "$1" cp --only-show-errors "$WORK/round-$1" "s3://bench/round-$RANDOM$RANDOM"
    mid=$(now)
    s3 "$1" cp --only-show-errors s3://bench/probe "$WORK/probe-back-$1"
    end=$(now)
    cmp -s "$WORK/probe" "$WORK/probe-back-$1" || { echo "probe read back wrong" >&2; return 1; }
    echo "$(echo "$mid - $start" | bc -l) $(echo "$end - $mid" | bc -l)"
}
# "PUT_MIBS GET_MIBS ROUNDS" over the rounds in file $1 ("PUT_SECS GET_SECS" lines).
throughput() {
    awk -v mib="$PROBE_MIB" '{put += $1; get += $2; n++} END {if (n) printf "%.1f %.1f %d\n", n * mib / put, n * mib / get, n; else print "- - 0"}' "$1"
}
# A fresh filled cluster; node 6 killed; sets KILLED GONE HEALED (times),
# TOTAL and AFTER (slices settled before and after) and LOST_SLICES
# LOST_BYTES (what node 6 held). With $1 = clients, client rounds run
# through node 2 from the gone mark until repair settles (a round that
# ends after it settled is not counted), and the rounds of the six idle
# before and the five idle after are timed too.
lose_node_6() {
    TOTAL=$(filled_cluster)
    if [ "$1" = clients ]; then
        head -c $((PROBE_MIB << 20)) /dev/urandom >"$WORK/probe"
        s3 1 cp --only-show-errors "$WORK/probe" s3://bench/probe
        for _ in $(seq 1 "$ROUNDS"); do client_round 1 >>"$WORK/idle-six"; done
        TOTAL=$(wait_settled_total)
    fi
    read -r LOST_SLICES LOST_BYTES <<<"$(member_slices 1 6)"
    for n in 1 2 3 4 5; do SENT[$n]=$(sent_bytes "$n"); done
    KILLED=$(now)
    docker kill "$(container 6)" >/dev/null
    wait_gone 1
    GONE=$(now)
    rm -f "$WORK/healed"
    (if wait_repaired 1; then now >"$WORK/healed"; else echo failed >"$WORK/healed"; fi) &
    local watch=$!
    while [ "$1" = clients ] && [ ! -s "$WORK/healed" ]; do
        local round
        round=$(client_round 2)
        [ -s "$WORK/healed" ] || echo "$round" >>"$WORK/during"
    done
    wait "$watch"
    HEALED=$(cat "$WORK/healed")
    [ "$HEALED" != failed ] || exit 1
    AFTER=$(settled_slices 1)
    MOVED=0
    for n in 1 2 3 4 5; do MOVED=$((MOVED + $(sent_bytes "$n") - SENT[$n])); done
    if [ "$1" = clients ]; then
        for _ in $(seq 1 "$ROUNDS"); do client_round 2 >>"$WORK/idle-five"; done
    fi
}
declare -A SENT
echo "== 1. idle: six nodes (4+2) holding $GIB GiB, node 6 lost ($(nproc) cores, clients and nodes on one machine)"
lose_node_6 idle
printf '| slices: six nodes, then the five | node 6 held | marked gone after | repaired after the mark | network bytes / bytes lost |\n'
printf '|---|---|---|---|---|\n'
printf '| %d, then %d | %d slices, %.1f MiB | %.1f s | %.1f s (%.1f MiB/s) | %.2f |\n' "$TOTAL" "$AFTER" "$LOST_SLICES" \
    "$(echo "$LOST_BYTES / 1048576" | bc -l)" "$(echo "$GONE - $KILLED" | bc -l)" "$(echo "$HEALED - $GONE" | bc -l)" \
    "$(echo "$LOST_BYTES / 1048576 / ($HEALED - $GONE)" | bc -l)" "$(echo "$MOVED / $LOST_BYTES" | bc -l)"

echo
echo "== 2. the same, with a client putting and getting $PROBE_MIB MiB objects through node 2 while repair runs"
lose_node_6 clients
printf 'node 6 held %d slices, %.1f MiB; marked gone after %.1f s; repaired %.1f s after the mark (%.1f MiB/s)\n' \
    "$LOST_SLICES" "$(echo "$LOST_BYTES / 1048576" | bc -l)" "$(echo "$GONE - $KILLED" | bc -l)" \
    "$(echo "$HEALED - $GONE" | bc -l)" "$(echo "$LOST_BYTES / 1048576 / ($HEALED - $GONE)" | bc -l)"
echo "client throughput, MiB/s (aws CLI, $PROBE_MIB MiB objects):"
printf '| cluster | PUT | GET | rounds |\n|---|---|---|---|\n'
for phase in "six nodes, idle:idle-six" "five nodes, repair running:during" "five nodes, idle after repair:idle-five"; do
    touch "$WORK/${phase#*:}"
    read -r put get rounds <<<"$(throughput "$WORK/${phase#*:}")"
    printf '| %s | %s | %s | %s |\n' "${phase%%:*}" "$put" "$get" "$rounds"
done
