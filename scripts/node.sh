# Sourced by the scripts that drive a real node: start_node BIN starts
# `BIN serve` on $WORK/data and 127.0.0.1:$PORT with the root key from
# $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY, stops it and removes $WORK on
# exit, and returns once the node answers its health check.
start_node() {
    local bin=$1
    OUROBOROS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID OUROBOROS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
        "$bin" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
    SERVER=$!
    trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$PORT/_ouroboros/health" >/dev/null && return 0
        sleep 0.1
    done
    echo "the node did not become healthy; its log:" >&2
    cat "$WORK/server.log" >&2
    return 1
}

# start_cluster BIN SIZE: SIZE nodes of one cluster on loopback, node i
# (from 1) with S3 on $PORT+i-1, cluster traffic on $PORT+100+i-1 and data in
# $WORK/node-i; the others join node 1. Sets ENDPOINTS (one per node) and
# LOGS, stops every node and removes $WORK on exit, and returns once every
# node sees all SIZE alive and active in its layout.
start_cluster() {
    local bin=$1 size=$2 i
    local secret data_key
    secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    data_key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    SERVERS=()
    ENDPOINTS=()
    LOGS=()
    trap 'for pid in "${SERVERS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
    for i in $(seq 1 "$size"); do
        local s3=$((PORT + i - 1)) cluster=$((PORT + 100 + i - 1)) join=()
        [ "$i" -gt 1 ] && join=(--join "127.0.0.1:$((PORT + 100))")
        OUROBOROS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID OUROBOROS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
            OUROBOROS_CLUSTER_SECRET=$secret OUROBOROS_DATA_KEY=$data_key \
            "$bin" serve --data-dir "$WORK/node-$i" --listen "127.0.0.1:$s3" \
            --cluster-listen "127.0.0.1:$cluster" "${join[@]}" >"$WORK/node-$i.log" 2>&1 &
        SERVERS+=($!)
        ENDPOINTS+=("http://127.0.0.1:$s3")
        LOGS+=("$WORK/node-$i.log")
    done
    for i in $(seq 1 "$size"); do
        local ready=0
        for _ in $(seq 1 300); do
            if curl -sf "${ENDPOINTS[$((i - 1))]}/_ouroboros/health" | grep -q "\"alive\":$size,\"active\":$size,"; then
                ready=1
                break
            fi
            sleep 0.1
        done
        if [ "$ready" -eq 0 ]; then
            echo "node $i did not see $size nodes alive; its log:" >&2
            cat "${LOGS[$((i - 1))]}" >&2
            return 1
        fi
    done
}
