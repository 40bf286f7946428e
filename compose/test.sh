#!/usr/bin/env bash
# Fault scenarios against docker-compose clusters of the `ouroboros:dev`
# image (compose/build.sh). Each scenario starts a fresh cluster, drives
# the aws CLI and rclone from the host, makes the fault with Docker itself
# (kill, pause, network disconnect, restart), and checks by checksum that
# nothing acknowledged is lost. One line per scenario, then "N passed, M
# failed". Containers, networks and volumes are removed, also on failure.
#
#   compose/test.sh            # every scenario
#   compose/test.sh 1 4        # some of them
#   compose/test.sh --soak     # soak: each scenario 3 times (or
#                              # OUROBOROS_SOAK_ROUNDS), ten times the objects
#
# Skips, saying so, when no Docker daemon is reachable.
set -uo pipefail
cd "$(dirname "$0")"

WHAT="compose tests"
PROJECT_KIND=test
# A subnet of its own, apart from a cluster the user runs.
SUBNET=172.31.214
# Short intervals, so that a scenario sees healing within seconds.
NODE_SETTINGS="OUROBOROS_SYNC_INTERVAL_SECS=2
OUROBOROS_MAINTENANCE_INTERVAL_SECS=3
OUROBOROS_DURABILITY=flush"
# shellcheck source=compose/lib.sh
. ./lib.sh
# Objects per scenario are multiplied by SCALE (--soak: 10).
SCALE=1

# put_files NODE PREFIX COUNT: write COUNT (times SCALE) files through NODE; records
# "key md5" of each acknowledged one in $WORK/acked.
put_files() {
    local node=$1 prefix=$2 count=$(($3 * SCALE)) i
    for i in $(seq 1 "$count"); do
        local file="$WORK/$prefix-$i"
        head -c $((RANDOM * 8 + i)) /dev/urandom >"$file"
        if s3 "$node" cp --quiet "$file" "s3://test/$prefix-$i" 2>/dev/null; then
            echo "$prefix-$i $(md5sum <"$file" | cut -c1-32)" >>"$WORK/acked"
        fi
        rm -f "$file"
    done
}
# check_acked NODE...: every acknowledged file reads back, by checksum,
# through each node.
check_acked() {
    local node key sum got
    for node in "$@"; do
        while read -r key sum; do
            got=$(s3 "$node" cp --quiet "s3://test/$key" - 2>/dev/null | md5sum | cut -c1-32)
            if [ "$got" != "$sum" ]; then
                echo "$key read through node $node: checksum $got, acknowledged $sum"
                return 1
            fi
        done <"$WORK/acked"
    done
}
fresh() { : >"$WORK/acked"; s3 1 mb s3://test >/dev/null; }

scenario_1() { # kill one node of three during a stream of PUTs through the other two
    up docker-compose.yml 3 node1 node2 node3 && fresh || return 1
    put_files 1 early 6
    (put_files 1 a 12) &
    local one=$!
    (put_files 2 b 12) &
    local two=$!
    sleep 2
    docker kill "$(container 3)" >/dev/null
    wait "$one" "$two"
    local before
    before=$(wc -l <"$WORK/acked")
    [ "$before" -ge $((20 * SCALE)) ] || { echo "only $before of $((30 * SCALE)) PUTs acknowledged around the kill"; return 1; }
    put_files 2 after 5
    [ "$(wc -l <"$WORK/acked")" -eq $((before + 5 * SCALE)) ] || { echo "writes failed after the kill"; return 1; }
    check_acked 1 2
}

scenario_2() { # restart the killed node: it rejoins under its id and catches up
    # Continues scenario 1's cluster when run after it; else makes one.
    if [ -z "$(container 3)" ]; then scenario_1 || return 1; fi
    compose start node3 >/dev/null 2>&1 || return 1
    wait_active 3 3 || return 1
    sleep 3
    wait_healed 1 || return 1
    check_acked 3 || return 1
    local slices
    slices=$(status_json 1 | python3 -c "import json,sys; r=json.load(sys.stdin); print(sum(1 for m in r['members'] if (m.get('slices') or 0) > 0))")
    [ "$slices" -eq 3 ] || { echo "only $slices of 3 nodes hold slices after the restart"; return 1; }
}

scenario_3() { # pause a node past the suspicion timeout, then resume it
    up docker-compose.yml 3 node1 node2 node3 && fresh || return 1
    put_files 1 before 5
    docker pause "$(container 2)" >/dev/null
    sleep 10
    local count
    count=$(wc -l <"$WORK/acked")
    put_files 1 paused1 5
    put_files 3 paused3 5
    [ "$(wc -l <"$WORK/acked")" -eq $((count + 10 * SCALE)) ] || { echo "writes through the other nodes failed while node 2 was paused"; return 1; }
    check_acked 1 3 || return 1
    docker unpause "$(container 2)" >/dev/null
    wait_active 2 3 || return 1
    put_files 2 resumed 3
    [ "$(wc -l <"$WORK/acked")" -eq $((count + 13 * SCALE)) ] || { echo "writes through node 2 failed after it resumed"; return 1; }
    check_acked 2
}

scenario_4() { # cut a node off the network while both sides write; heal
    up docker-compose.yml 3 node1 node2 node3 && fresh || return 1
    put_files 1 before 6
    s3 1 cp --quiet - s3://test/doomed <<<"delete me" || return 1
    # Off the cluster network only: its clients still reach it.
    local network=${PROJECT}_cluster address
    address=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$(container 3)")
    docker network disconnect "$network" "$(container 3)" || return 1
    sleep 8
    local count
    count=$(wc -l <"$WORK/acked")
    put_files 1 majority 6
    [ "$(wc -l <"$WORK/acked")" -eq $((count + 6 * SCALE)) ] || { echo "the majority side refused writes"; return 1; }
    s3 2 rm --quiet s3://test/doomed || { echo "a delete on the majority side failed"; return 1; }
    # The minority side refuses writes it cannot reach quorum for.
    if s3 3 cp --only-show-errors - s3://test/minority <<<"lost?" 2>"$WORK/minority.err"; then
        echo "the cut-off node acknowledged a write" && return 1
    fi
    grep -q "503\|ServiceUnavailable\|SlowDown" "$WORK/minority.err" || { echo "minority error: $(cat "$WORK/minority.err")"; return 1; }
    docker network connect --ip "$address" "$network" "$(container 3)" || return 1
    wait_active 3 3 || return 1
    sleep 3
    wait_healed 1 || return 1
    check_acked 1 2 3 || return 1
    for node in 1 2 3; do
        if s3 "$node" ls s3://test/doomed >/dev/null 2>&1; then
            echo "a delete made during the partition came back through node $node" && return 1
        fi
    done
}

scenario_5() { # six nodes at 4+2: two killed, everything reads; one removed, repair restores 4+2
    up docker-compose.6.yml 6 && fresh || return 1
    put_files 1 wide 12
    docker kill "$(container 5)" "$(container 6)" >/dev/null
    sleep 2
    check_acked 1 3 || return 1
    compose start node6 >/dev/null 2>&1
    wait_alive 1 5 || return 1
    local id
    id=$(status_json 1 | python3 -c "import json,sys; r=json.load(sys.stdin); print([m['id'] for m in r['members'] if m['state'] == 'down'][0])")
    docker exec "$(container 1)" /ouroboros node remove "$id" --endpoint http://127.0.0.1:9000 >/dev/null || return 1
    sleep 4
    wait_healed 1 || return 1
    check_acked 1 2 6
}

scenario_6() { # a node added to a running cluster; reads go on throughout
    up docker-compose.yml 3 node1 node2 node3 && fresh || return 1
    put_files 1 grow 12
    local count
    count=$(wc -l <"$WORK/acked")
    compose --profile grow up -d node4 >/dev/null 2>&1 || return 1
    # Writes go on while the node joins and data moves to it.
    (put_files 2 joining 12) &
    local writer=$! i
    for i in 1 2 3 4 5; do
        check_acked $((i % 3 + 1)) || return 1
    done
    wait "$writer"
    [ "$(wc -l <"$WORK/acked")" -eq $((count + 12 * SCALE)) ] || { echo "writes failed while node 4 joined"; return 1; }
    wait_active 1 4 || return 1
    sleep 4
    wait_healed 1 || return 1
    check_acked 4 || return 1
    local held
    held=$(status_json 4 | python3 -c "import json,sys; r=json.load(sys.stdin); print([m.get('slices') or 0 for m in r['members'] if m['id'] == r['node']][0])")
    [ "$held" -gt 0 ] || { echo "the new node holds no slices"; return 1; }
}

scenario_7() { # rolling restart of every node while rclone syncs a tree
    up docker-compose.yml 3 node1 node2 node3 && fresh || return 1
    local tree=$WORK/tree
    mkdir -p "$tree"
    for d in 1 2 3 4; do
        mkdir -p "$tree/dir$d"
        for f in $(seq 1 $((40 * SCALE))); do head -c $((RANDOM * 16 + f)) /dev/urandom >"$tree/dir$d/file$f"; done
    done
    (rc 1 sync --retries 10 --low-level-retries 10 --retries-sleep 2s "$tree" :s3:test/tree >"$WORK/rclone.log" 2>&1) &
    local sync=$!
    for node in 2 3 1; do
        [ "$node" = 1 ] && wait "$sync"
        compose restart "node$node" >/dev/null 2>&1 || return 1
        wait_active "$node" 3 || return 1
    done
    wait "$sync" 2>/dev/null
    rc 1 sync --retries 5 "$tree" :s3:test/tree >>"$WORK/rclone.log" 2>&1 || { tail -5 "$WORK/rclone.log"; return 1; }
    rc 2 check "$tree" :s3:test/tree >>"$WORK/rclone.log" 2>&1 || { tail -5 "$WORK/rclone.log"; return 1; }
}

NAMES=(
    ""
    "kill one of three during a stream of PUTs"
    "the killed node restarts, rejoins and catches up"
    "a paused node holds up no client of the others"
    "a partitioned node: majority writes, minority 503, deletes stay deleted"
    "six nodes at 4+2: two killed, one removed, repair restores 4+2"
    "a node added to a running cluster"
    "rolling restart while rclone syncs; rclone check passes"
)
REPEAT=1
if [ "${1:-}" = --soak ]; then
    shift
    REPEAT=${OUROBOROS_SOAK_ROUNDS:-3} SCALE=10
fi
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(1 2 3 4 5 6 7)
passed=0
failed=0
for round in $(seq 1 "$REPEAT"); do
    label=""
    [ "$REPEAT" -gt 1 ] && label=" [round $round of $REPEAT]"
    for n in "${wanted[@]}"; do
        started=$SECONDS
        if out=$("scenario_$n" 2>&1); then
            echo "ok   $n. ${NAMES[$n]}$label ($((SECONDS - started)) s)"
            passed=$((passed + 1))
        else
            echo "FAIL $n. ${NAMES[$n]}$label ($((SECONDS - started)) s)"
            echo "$out" | tail -15 | sed 's/^/     /'
            for i in 1 2 3 4 5 6; do
                c=$(container "$i" 2>/dev/null)
                [ -n "$c" ] && docker logs --tail 15 "$c" 2>&1 | sed "s/^/     node$i: /"
            done
            failed=$((failed + 1))
        fi
    done
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
