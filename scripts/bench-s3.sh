#!/usr/bin/env bash
# S3 benchmark against peers on one machine (not a test, not in CI).
#
# Starts OuroborosDB (release build) alone and as a three-node cluster on
# loopback (`cluster3`, measured through its first node; BENCH_CLUSTER=0 leaves
# it out) and, where their binaries are cached, Garage 2.5.0 (single node,
# replication factor 1) and s3s-fs 0.14.1. Runs
# the same workloads against each, rounds alternating between servers:
#   - one 1 GiB incompressible object: PUT and GET, with rclone and the aws CLI
#   - 2000 objects of 4 KiB: PUT, GET and LIST with 16 parallel transfers (rclone)
# and prints MB/s or objects/s per server and the ratio ours/peer.
#
# Peers are built once into a cache outside the repository:
#   BUILD_PEERS=1 scripts/bench-s3.sh     (Garage takes about 30 minutes here)
# Settings: BENCH_CACHE (default ~/.cache/ouroboros-bench), ROUNDS (default 3),
# LISTS (listings per LIST round, default 5).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${BENCH_CACHE:-$HOME/.cache/ouroboros-bench}
ROUNDS=${ROUNDS:-3}
mkdir -p "$CACHE/bin"
export PATH="$CACHE/bin:$PATH"

if [ "${BUILD_PEERS:-0}" = 1 ]; then
    command -v s3s-fs >/dev/null || cargo install --locked s3s-fs --version 0.14.1 --features binary --root "$CACHE"
    command -v garage >/dev/null || cargo install --locked garage --version 2.5.0 --root "$CACHE"
fi
cargo build --release --quiet -p ouroboros-gateway --bin ouroboros
command -v rclone >/dev/null && command -v aws >/dev/null || {
    echo "needs rclone and the aws CLI (scripts/client-suite.sh installs them)" >&2
    exit 1
}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

AK=OBBENCHKEY0000000001
SK=bench-secret-0123456789abcdefghijklmnopq
declare -A ENDPOINT KEY SECRET PID

wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1 never opened" >&2
    return 1
}

start_ouroboros() {
    OUROBOROS_ACCESS_KEY_ID=$AK OUROBOROS_SECRET_ACCESS_KEY=$SK OUROBOROS_LOG=warn \
        target/release/ouroboros serve --data-dir "$WORK/ouroboros" --listen 127.0.0.1:9301 &
    PIDS+=($!)
    OUROBOROS_PID=$!
    PID[ouroboros]=$!
    wait_port 9301
    ENDPOINT[ouroboros]=http://127.0.0.1:9301 KEY[ouroboros]=$AK SECRET[ouroboros]=$SK
}

# Three nodes on one machine: node 1 answers the clients, all three store.
start_ouroboros_cluster() {
    local secret data_key i join
    secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    data_key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    CLUSTER_PORTS=()
    for i in 1 2 3; do
        join=()
        [ "$i" -gt 1 ] && join=(--join 127.0.0.1:9331)
        OUROBOROS_ACCESS_KEY_ID=$AK OUROBOROS_SECRET_ACCESS_KEY=$SK OUROBOROS_LOG=warn \
            OUROBOROS_CLUSTER_SECRET=$secret OUROBOROS_DATA_KEY=$data_key \
            target/release/ouroboros serve --data-dir "$WORK/cluster-$i" --listen "127.0.0.1:932$i" \
            --cluster-listen "127.0.0.1:933$i" "${join[@]}" &
        PIDS+=($!)
        [ "$i" -eq 1 ] && PID[cluster3]=$!
        CLUSTER_PORTS+=("932$i")
        wait_port "932$i"
    done
    for port in "${CLUSTER_PORTS[@]}"; do
        for _ in $(seq 1 100); do
            curl -sf "http://127.0.0.1:$port/_ouroboros/health" | grep -q '"alive":3,"active":3,' && break
            sleep 0.1
        done
    done
    ENDPOINT[cluster3]=http://127.0.0.1:9321 KEY[cluster3]=$AK SECRET[cluster3]=$SK
}
# Message bytes the cluster's nodes have sent each other so far.
cluster_bytes() {
    for port in "${CLUSTER_PORTS[@]}"; do
        curl -sf "http://127.0.0.1:$port/_ouroboros/metrics"
    done | awk '/^ouroboros_cluster_sent_bytes_total/ {s += $2} END {printf "%.0f", s}'
}

start_s3s_fs() {
    mkdir -p "$WORK/s3s-fs"
    s3s-fs --host 127.0.0.1 --port 9302 --access-key "$AK" --secret-key "$SK" "$WORK/s3s-fs" >/dev/null 2>&1 &
    PIDS+=($!)
    PID[s3s-fs]=$!
    wait_port 9302
    ENDPOINT[s3s-fs]=http://127.0.0.1:9302 KEY[s3s-fs]=$AK SECRET[s3s-fs]=$SK
}

start_garage() {
    local dir=$WORK/garage
    mkdir -p "$dir/meta" "$dir/data"
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:9311"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:9303"
EOF
    local g="garage -c $dir/garage.toml"
    $g server >"$dir/log" 2>&1 &
    PIDS+=($!)
    PID[garage]=$!
    wait_port 9303
    sleep 1
    local node
    node=$($g status 2>/dev/null | awk '/^[0-9a-f]{16}/ {print $1; exit}')
    $g layout assign -z dc1 -c 10G "$node" >/dev/null
    $g layout apply --version 1 >/dev/null
    local out
    out=$($g key create bench-key)
    KEY[garage]=$(echo "$out" | awk -F': *' '/Key ID/ {print $2}')
    SECRET[garage]=$(echo "$out" | awk -F': *' '/Secret key/ {print $2}')
    ENDPOINT[garage]=http://127.0.0.1:9303
    GARAGE="$g"
}

SERVERS=(ouroboros)
start_ouroboros
if [ "${BENCH_CLUSTER:-1}" = 1 ]; then start_ouroboros_cluster && SERVERS+=(cluster3); fi
if command -v garage >/dev/null; then start_garage && SERVERS+=(garage); fi
if command -v s3s-fs >/dev/null; then start_s3s_fs && SERVERS+=(s3s-fs); fi
echo "servers: ${SERVERS[*]} ($(nproc) cores, client and servers on one machine)"

make_bucket() { # SERVER BUCKET
    if [ "$1" = garage ]; then
        $GARAGE bucket create "$2" >/dev/null
        $GARAGE bucket allow --read --write --owner "$2" --key bench-key >/dev/null
    else
        awscli "$1" s3 mb "s3://$2" >/dev/null
    fi
}
awscli() { # SERVER ARGS...
    local s=$1
    shift
    AWS_ACCESS_KEY_ID=${KEY[$s]} AWS_SECRET_ACCESS_KEY=${SECRET[$s]} AWS_DEFAULT_REGION=$(region "$s") \
        AWS_CA_BUNDLE= aws --endpoint-url "${ENDPOINT[$s]}" "$@"
}
region() { [ "$1" = garage ] && echo garage || echo us-east-1; }
rc() { # SERVER ARGS...
    local s=$1
    shift
    env -u AWS_CA_BUNDLE RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other \
        RCLONE_CONFIG_B_ENDPOINT="${ENDPOINT[$s]}" RCLONE_CONFIG_B_ACCESS_KEY_ID="${KEY[$s]}" \
        RCLONE_CONFIG_B_SECRET_ACCESS_KEY="${SECRET[$s]}" RCLONE_CONFIG_B_REGION="$(region "$s")" \
        rclone --s3-upload-concurrency 4 "$@"
}
cpu_ticks() { # PID -> user + system clock ticks so far
    awk '{print $14 + $15}' "/proc/$1/stat"
}
head -c 1073741824 /dev/urandom >"$WORK/1g.bin"
mkdir -p "$WORK/small"
for i in $(seq 1 2000); do head -c 4096 /dev/urandom >"$WORK/small/$i"; done
# 16 requests at once for the aws CLI, without touching the user's config.
printf '[default]\ns3 =\n    max_concurrent_requests = 16\n' >"$WORK/aws-config"
export AWS_CONFIG_FILE=$WORK/aws-config

declare -A RESULT
add() { RESULT[$1]="${RESULT[$1]:-} $2"; }
measure() { # SERVER WORKLOAD AMOUNT COMMAND...: AMOUNT (MB or objects) per second, and the server's busy cores
    local s=$1 w=$2 amount=$3 pid=${PID[$1]} start end before t
    shift 3
    # Dirty pages of the previous workload are written back now, not inside
    # this one's window.
    sync
    before=$(cpu_ticks "$pid")
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s.%N)
    t=$(echo "$end - $start" | bc -l)
    add "$s:$w" "$(echo "$amount / $t" | bc -l)"
    add "$s:$w:cpu" "$(echo "($(cpu_ticks "$pid") - $before) / $(getconf CLK_TCK) / $t" | bc -l)"
}
for s in "${SERVERS[@]}"; do make_bucket "$s" bench; done
# One listing of 2000 keys takes about 0.2 s, most of it rclone starting, so
# a round lists LISTS times in one window to measure more than start-up noise
# (s3s-fs, which takes a minute per listing, lists once).
LISTS=${LISTS:-5}
lists() { if [ "$1" = s3s-fs ]; then echo 1; else echo "$LISTS"; fi; }
list_repeatedly() { # SERVER REMOTE
    for _ in $(seq 1 "$(lists "$1")"); do rc "$1" lsf "$2" >/dev/null; done
}

GIB=1073.741824
for round in $(seq 1 "$ROUNDS"); do
    for s in "${SERVERS[@]}"; do
        measure "$s" "1GiB PUT rclone MB/s" $GIB rc "$s" copyto "$WORK/1g.bin" "b:bench/r$round-rclone.bin"
        measure "$s" "1GiB GET rclone MB/s" $GIB rc "$s" copyto "b:bench/r$round-rclone.bin" "$WORK/get-$s.bin"
        # A download renamed over an existing file makes ext4 write the whole
        # new file back at once, inside the timed window: start from no file.
        rm -f "$WORK/get-$s.bin"
        measure "$s" "1GiB PUT aws MB/s" $GIB awscli "$s" s3 cp --only-show-errors "$WORK/1g.bin" "s3://bench/r$round-aws.bin"
        measure "$s" "1GiB GET aws MB/s" $GIB awscli "$s" s3 cp --only-show-errors "s3://bench/r$round-aws.bin" "$WORK/get-$s.bin"
        rm -f "$WORK/get-$s.bin"
        measure "$s" "4KiB PUT x2000 obj/s" 2000 rc "$s" copy --transfers 16 "$WORK/small" "b:bench/r$round-small"
        measure "$s" "4KiB GET x2000 obj/s" 2000 rc "$s" copy --transfers 16 "b:bench/r$round-small" "$WORK/small-$s"
        rm -rf "$WORK/small-$s"
        measure "$s" "LIST 2000 obj/s" $((2000 * $(lists "$s"))) list_repeatedly "$s" "b:bench/r$round-small"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '\n%-22s' workload
for s in "${SERVERS[@]}"; do printf '%14s' "$s"; done
for s in "${SERVERS[@]:1}"; do printf '%16s' "ours/$s"; done
echo
for w in "1GiB PUT rclone MB/s" "1GiB GET rclone MB/s" "1GiB PUT aws MB/s" "1GiB GET aws MB/s" \
    "4KiB PUT x2000 obj/s" "4KiB GET x2000 obj/s" "LIST 2000 obj/s"; do
    printf '%-22s' "$w"
    declare -A M=()
    for s in "${SERVERS[@]}"; do
        M[$s]=$(echo "${RESULT[$s:$w]}" | median)
        printf '%14.1f' "${M[$s]}"
    done
    for s in "${SERVERS[@]:1}"; do printf '%15.2fx' "$(echo "${M[ouroboros]} / ${M[$s]}" | bc -l)"; done
    echo
done
printf '\nserver CPU, cores busy during the workload (median)\n%-22s' workload
for s in "${SERVERS[@]}"; do printf '%14s' "$s"; done
echo
for w in "1GiB PUT rclone MB/s" "1GiB GET rclone MB/s" "1GiB PUT aws MB/s" "1GiB GET aws MB/s" \
    "4KiB PUT x2000 obj/s" "4KiB GET x2000 obj/s" "LIST 2000 obj/s"; do
    printf '%-22s' "$w"
    for s in "${SERVERS[@]}"; do printf '%14.2f' "$(echo "${RESULT[$s:$w:cpu]}" | median)"; done
    echo
done
echo "(median of $ROUNDS rounds)"
if [ -n "${PID[cluster3]:-}" ]; then
    # New bytes: the rounds' objects would only be deduplicated.
    head -c 268435456 /dev/urandom >"$WORK/traffic.bin"
    before=$(cluster_bytes)
    awscli cluster3 s3 cp --only-show-errors "$WORK/traffic.bin" s3://bench/traffic.bin
    after=$(cluster_bytes)
    echo "cluster3: bytes between nodes per byte stored (new 256 MiB through node 1): $(echo "($after - $before) / 268435456" | bc -l | cut -c1-5)"
    before=$after
    awscli cluster3 s3 cp --only-show-errors s3://bench/traffic.bin "$WORK/traffic.back"
    after=$(cluster_bytes)
    rm -f "$WORK/traffic.back" "$WORK/traffic.bin"
    echo "cluster3: bytes between nodes per byte read (the same object read back through node 1): $(echo "($after - $before) / 268435456" | bc -l | cut -c1-5)"
fi
echo "ouroboros peak resident memory: $(awk '/VmHWM/ {print $2, $3}' "/proc/$OUROBOROS_PID/status")"
