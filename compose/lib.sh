# Shared by compose/test.sh and compose/bench.sh: finds Docker and the
# compose tool, makes a cluster's secrets and host ports, and starts, waits
# for, looks into and removes the clusters of compose/*.yml under a
# project name of their own. The sourcing script sets WHAT (its name in
# messages), PROJECT_KIND (part of the project name), SUBNET (the first
# three octets of the cluster network, 172.31.x; the clients' network is
# 172.30.x) and NODE_SETTINGS
# (more lines for the nodes' environment file), and runs in compose/.

if ! docker info >/dev/null 2>&1; then
    echo "$WHAT skipped: no Docker daemon reachable"
    exit 0
fi
if command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
else
    echo "$WHAT skipped: neither docker-compose nor docker compose is installed"
    exit 0
fi
for tool in aws rclone curl md5sum; do
    command -v "$tool" >/dev/null || { echo "$WHAT needs $tool (scripts/client-suite.sh installs it)" >&2; exit 1; }
done
docker image inspect ouroboros:dev >/dev/null 2>&1 || { echo "no ouroboros:dev image: run compose/build.sh" >&2; exit 1; }

WORK=$(mktemp -d)
PROJECT=ouroboros$PROJECT_KIND$$
export OUROBOROS_SUBNET=${OUROBOROS_TEST_SUBNET:-$SUBNET}
# The clients' network beside it: 172.31.x → 172.30.x.
export OUROBOROS_FRONT_SUBNET=${OUROBOROS_TEST_FRONT_SUBNET:-${OUROBOROS_SUBNET/#172.31./172.30.}}
FILE=docker-compose.yml
export OUROBOROS_ENV_FILE=$WORK/cluster.env
export AWS_ACCESS_KEY_ID=GKCOMPOSE$$ AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=us-east-1
AWS_SECRET_ACCESS_KEY=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
cat >"$OUROBOROS_ENV_FILE" <<ENV
OUROBOROS_CLUSTER_SECRET=$(hex 32)
OUROBOROS_DATA_KEY=$(hex 32)
OUROBOROS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
OUROBOROS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
${NODE_SETTINGS:-}
ENV
# Host ports for S3, free at the start.
for i in 1 2 3 4 5 6; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    export "OUROBOROS_S3_PORT_$i=$port"
done

compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$FILE" "$@"; }
endpoint() { local var="OUROBOROS_S3_PORT_$1"; echo "http://127.0.0.1:${!var}"; }
# rclone against node $1 (plain HTTP: a CA bundle from the environment
# only trips its SDK).
rc() {
    local node=$1
    shift
    env -u AWS_CA_BUNDLE RCLONE_CONFIG=/dev/null RCLONE_S3_PROVIDER=Other RCLONE_S3_ENV_AUTH=true RCLONE_S3_ENDPOINT="$(endpoint "$node")" rclone "$@"
}
s3() { local node=$1; shift; aws --endpoint-url "$(endpoint "$node")" --cli-read-timeout 20 --cli-connect-timeout 5 s3 "$@"; }
container() { compose ps -q "node$1"; }
teardown() {
    compose --profile grow down -v --remove-orphans >/dev/null 2>&1
    # Whatever another compose file of this project left behind.
    local label="label=com.docker.compose.project=$PROJECT"
    docker ps -aq --filter "$label" | xargs -r docker rm -f >/dev/null 2>&1
    docker network ls -q --filter "$label" | xargs -r docker network rm >/dev/null 2>&1
    docker volume ls -q --filter "$label" | xargs -r docker volume rm >/dev/null 2>&1
    # A network can outlive its containers by a moment, and the next
    # cluster's network must not find its subnet taken.
    for _ in $(seq 1 40); do
        [ -z "$(docker network ls -q --filter "$label")" ] && return 0
        sleep 0.5
        docker network ls -q --filter "$label" | xargs -r docker network rm >/dev/null 2>&1
    done
    return 0
}
# OUROBOROS_COMPOSE_KEEP=1 leaves the last cluster up, to look into.
trap '[ -n "${OUROBOROS_COMPOSE_KEEP:-}" ] || teardown; rm -rf "$WORK"' EXIT

# The JSON status node $1 gives, asked inside its container.
status_json() { docker exec "$(container "$1")" /ouroboros status --json --endpoint http://127.0.0.1:9000 2>/dev/null; }
# A field of every member that answered, one per line.
member_field() { status_json "$1" | python3 -c "import json,sys; [print(m.get('$2')) for m in json.load(sys.stdin)['members'] if m.get('slices') is not None]"; }

# up FILE N [services...]: a fresh cluster; returns once node 1 sees N
# nodes alive and N active and known so by all.
up() {
    teardown
    FILE=$1
    local n=$2
    shift 2
    compose up -d "$@" >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; return 1; }
    wait_active 1 "$n"
}
wait_active() {
    local node=$1 n=$2
    for _ in $(seq 1 150); do
        curl -sf "$(endpoint "$node")/_ouroboros/health" 2>/dev/null | grep -q "\"alive\":$n,\"active\":$n," && return 0
        sleep 0.4
    done
    echo "node $node never saw $n nodes active: $(curl -s "$(endpoint "$node")/_ouroboros/health")"
    return 1
}
# Until node $1 sees $2 nodes alive.
wait_alive() {
    for _ in $(seq 1 150); do
        curl -sf "$(endpoint "$1")/_ouroboros/health" 2>/dev/null | grep -q "\"alive\":$2," && return 0
        sleep 0.4
    done
    echo "node $1 never saw $2 nodes alive"
    return 1
}
# Until every member node $1 reaches reports its partitions in step and no
# chunk short of a slice.
wait_healed() {
    local unsynced degraded
    for _ in $(seq 1 120); do
        unsynced=$(member_field "$1" partitions_unsynced | sort -u | tr '\n' ' ')
        degraded=$(member_field "$1" chunks_degraded | sort -u | tr '\n' ' ')
        [ "$unsynced$degraded" = "0 0 " ] && return 0
        sleep 1
    done
    echo "never healed: partitions_unsynced of the members: $unsynced; chunks_degraded: $degraded"
    return 1
}

