#!/usr/bin/env bash
# Benchmark of the docker-compose cluster (not a test, not in CI).
#
# Starts the three-node cluster of docker-compose.yml (2+1) and, beside it,
# one node of the same image in a container of its own, both with default
# settings (`sync` durability). Rounds alternate between the two:
#   - 3 × 1 GiB of new incompressible bytes, one aws CLI per node at once
#     (all three at the single node), PUT then GET;
#   - 3 × 1000 objects of 4 KiB, one rclone (16 transfers) per node at once,
#     PUT then GET;
# and prints the aggregate MB/s or objects/s, median of ROUNDS (3).
# Then bytes on disk per byte stored: 1 GiB of new bytes and 1000 × 4 KiB
# stored through one node, measured as the growth of every node's volume,
# for the single node, the three-node cluster (2+1) and a six-node one
# (docker-compose.6.yml, 4+2).
#
#   compose/bench.sh            # builds the release binary and the image first
#   ROUNDS=5 compose/bench.sh
set -euo pipefail
cd "$(dirname "$0")"
ROUNDS=${ROUNDS:-3}

(cd .. && cargo build --release --quiet -p ouroboros-gateway --bin ouroboros)
OUROBOROS_BIN=../target/release/ouroboros ./build.sh >/dev/null

WHAT="compose benchmark"
PROJECT_KIND=bench
SUBNET=172.31.215
NODE_SETTINGS=""
set +e
# shellcheck source=compose/lib.sh
. ./lib.sh
set -e

# The single node: node "0", a container of the same image, outside compose
# but under the project's label, so teardown removes it too.
OUROBOROS_S3_PORT_0=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export OUROBOROS_S3_PORT_0
start_single() {
    local label="com.docker.compose.project=$PROJECT"
    docker volume create --label "$label" "${PROJECT}_single" >/dev/null
    docker run -d --name "${PROJECT}_single" --label "$label" --env-file "$OUROBOROS_ENV_FILE" \
        -v "${PROJECT}_single:/data" -p "127.0.0.1:$OUROBOROS_S3_PORT_0:9000" ouroboros:dev >/dev/null
    for _ in $(seq 1 100); do
        curl -sf "$(endpoint 0)/_ouroboros/health" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "the single node never answered" >&2
    return 1
}
# The volumes of a setup's nodes.
volumes() { # single | cluster
    if [ "$1" = single ]; then
        echo "${PROJECT}_single"
    else
        docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | grep -v "_single$"
    fi
}
volume_bytes() { # single | cluster: bytes in the setup's volumes
    local v total=0
    sync
    for v in $(volumes "$1"); do
        total=$((total + $(du -sb "$(docker volume inspect -f '{{.Mountpoint}}' "$v")" | cut -f1)))
    done
    echo "$total"
}

# The nodes a setup's three clients talk to.
declare -A NODES=([single]="0 0 0" [cluster]="1 2 3")
declare -A RESULT
add() { RESULT[$1]="${RESULT[$1]:-} $2"; }
# measure SETUP WORKLOAD AMOUNT COMMAND...: AMOUNT per second of COMMAND.
measure() {
    local setup=$1 workload=$2 amount=$3 start end
    shift 3
    # Dirty pages of the previous workload are written back now, not inside
    # this one's window.
    sync
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    add "$setup:$workload" "$(echo "$amount / ($end - $start)" | bc -l)"
}
# at_once SETUP EACH ROUND: `EACH NODE I ROUND` for each of the three
# clients at once, client I against the setup's I-th node.
at_once() {
    local setup=$1 each=$2 round=$3 i=0 node pids=()
    for node in ${NODES[$setup]}; do
        i=$((i + 1))
        "$each" "$node" "$i" "$round" &
        pids+=($!)
    done
    wait "${pids[@]}"
}
big_put() { s3 "$1" cp --only-show-errors "$WORK/big-$2" "s3://bench/r$3-big-$2"; }
big_get() { s3 "$1" cp --only-show-errors "s3://bench/r$3-big-$2" "$WORK/got-$2"; }
small_put() { rc "$1" copy --transfers 16 "$WORK/small-$2" ":s3:bench/r$3-small-$2"; }
small_get() { rc "$1" copy --transfers 16 ":s3:bench/r$3-small-$2" "$WORK/got-small-$2"; }
# 16 requests at once for the aws CLI, without touching the user's config.
printf '[default]\ns3 =\n    max_concurrent_requests = 16\n' >"$WORK/aws-config"
export AWS_CONFIG_FILE=$WORK/aws-config
unset AWS_CA_BUNDLE

echo "== starting one node and a three-node cluster ($(nproc) cores, clients and nodes on one machine)"
teardown
start_single
FILE=docker-compose.yml
compose up -d node1 node2 node3 >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; exit 1; }
wait_active 1 3
s3 0 mb s3://bench >/dev/null
s3 1 mb s3://bench >/dev/null

GIB=1073.741824
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round of $ROUNDS"
    # New bytes every round: the same ones again would only be deduplicated.
    for i in 1 2 3; do
        head -c 1073741824 /dev/urandom >"$WORK/big-$i"
        rm -rf "$WORK/small-$i" && mkdir -p "$WORK/small-$i"
        for f in $(seq 1 1000); do head -c 4096 /dev/urandom >"$WORK/small-$i/$f"; done
    done
    for setup in single cluster; do
        measure "$setup" "3 × 1 GiB PUT, aws CLI (MB/s)" "$(echo "3 * $GIB" | bc -l)" at_once "$setup" big_put "$round"
        measure "$setup" "3 × 1 GiB GET, aws CLI (MB/s)" "$(echo "3 * $GIB" | bc -l)" at_once "$setup" big_get "$round"
        rm -f "$WORK"/got-*
        measure "$setup" "3 × 1000 × 4 KiB PUT, rclone (obj/s)" 3000 at_once "$setup" small_put "$round"
        measure "$setup" "3 × 1000 × 4 KiB GET, rclone (obj/s)" 3000 at_once "$setup" small_get "$round"
        rm -rf "$WORK"/got-small-*
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "| workload | one node | three nodes, clients spread | one / three |"
echo "|---|---|---|---|"
for w in "3 × 1 GiB PUT, aws CLI (MB/s)" "3 × 1 GiB GET, aws CLI (MB/s)" \
    "3 × 1000 × 4 KiB PUT, rclone (obj/s)" "3 × 1000 × 4 KiB GET, rclone (obj/s)"; do
    one=$(echo "${RESULT[single:$w]}" | median)
    three=$(echo "${RESULT[cluster:$w]}" | median)
    printf '| %s | %.1f | %.1f | %.2f× |\n' "$w" "$one" "$three" "$(echo "$one / $three" | bc -l)"
done
echo "(median of $ROUNDS rounds)"

# store_growth SETUP NODE: volume bytes per byte stored, for 1 GiB of new
# bytes and for 1000 × 4 KiB, through NODE.
store_growth() {
    local setup=$1 node=$2 before after
    head -c 1073741824 /dev/urandom >"$WORK/disk-big"
    rm -rf "$WORK/disk-small" && mkdir -p "$WORK/disk-small"
    for f in $(seq 1 1000); do head -c 4096 /dev/urandom >"$WORK/disk-small/$f"; done
    sleep 5
    before=$(volume_bytes "$setup")
    s3 "$node" cp --only-show-errors "$WORK/disk-big" s3://bench/disk-big
    sleep 5
    after=$(volume_bytes "$setup")
    printf '%.2f' "$(echo "($after - $before) / 1073741824" | bc -l)"
    before=$after
    rc "$node" copy --transfers 16 "$WORK/disk-small" :s3:bench/disk-small
    sleep 5
    after=$(volume_bytes "$setup")
    printf ' %.2f\n' "$(echo "($after - $before) / (1000 * 4096)" | bc -l)"
}
echo
echo "== bytes on disk per byte stored"
one=$(store_growth single 0)
three=$(store_growth cluster 1)
teardown
FILE=docker-compose.6.yml
compose up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; exit 1; }
wait_active 1 6
s3 1 mb s3://bench >/dev/null
six=$(store_growth cluster 1)
echo "| setup | 1 GiB of new bytes | 1000 × 4 KiB |"
echo "|---|---|---|"
echo "| one node (1+0) | ${one% *} | ${one#* } |"
echo "| three nodes (2+1) | ${three% *} | ${three#* } |"
echo "| six nodes (4+2) | ${six% *} | ${six#* } |"
