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
