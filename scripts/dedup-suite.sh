#!/usr/bin/env bash
# Dedup of multipart uploads, through the aws CLI at its defaults (8 MiB
# parts above 8 MiB): a shifted copy of a file, and the same bytes by one
# PUT or with other part sizes, store next to nothing again. Starts its own
# node (garbage collection 20 s after a chunk was stored, every second, so
# the chunks only the parts' own cuts made are gone before each measure),
# measures what each upload adds to the slices stored, prints a table and
# checks it. Every object is read back and compared.
#
#   scripts/dedup-suite.sh          # OUROBOROS_BIN=path for another binary
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${OUROBOROS_BIN:-target/debug/ouroboros}
[ -x "$BIN" ] || cargo build --quiet -p ouroboros-gateway --bin ouroboros

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export AWS_ACCESS_KEY_ID=OBDEDUPSUITE$$ AWS_DEFAULT_REGION=us-east-1
AWS_SECRET_ACCESS_KEY=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
export AWS_SECRET_ACCESS_KEY
unset AWS_CA_BUNDLE
GRACE=20
export OUROBOROS_GC_GRACE_SECS=$GRACE OUROBOROS_MAINTENANCE_INTERVAL_SECS=1 OUROBOROS_DURABILITY=flush
# shellcheck source=scripts/node.sh
source scripts/node.sh
start_node "$BIN" || exit 1
ENDPOINT=http://127.0.0.1:$PORT
AWS="aws --endpoint-url $ENDPOINT"

# Slice bytes the node stores.
stored() {
    OUROBOROS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID OUROBOROS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
        "$BIN" status --json --endpoint "$ENDPOINT" |
        python3 -c "import json,sys; print(sum(m.get('slice_bytes') or 0 for m in json.load(sys.stdin)['members']))"
}
# Slice bytes once garbage collection has freed what the last uploads
# left unreferenced: past the grace period, and steady.
settled() {
    sleep $((GRACE + 2))
    local last now
    last=$(stored)
    for _ in $(seq 1 30); do
        sleep 2
        now=$(stored)
        [ "$now" = "$last" ] && { echo "$now"; return; }
        last=$now
    done
    echo "$now"
}
# bytes COUNT SEED: COUNT pseudo-random bytes from SEED. The content is the
# same on every run, so what a shift stores again is too: it depends on
# where the chunks around the insert fall (about one chunk, 1 MiB on
# average, 4 MiB at most), which new random bytes would make vary by run.
bytes() {
    python3 -c "
import random, sys
r, left = random.Random($2), $1
while left:
    n = min(left, 1 << 20)
    sys.stdout.buffer.write(r.randbytes(n))
    left -= n"
}
# insert FILE AT OUT: FILE with 4 KiB of other bytes inserted at byte AT.
insert() {
    { head -c "$2" "$1"; bytes 4096 "$2"; tail -c +$(($2 + 1)) "$1"; } >"$3"
}
# upload FILE KEY [PART_MIB]: aws s3 cp at its defaults, or with other parts.
upload() {
    if [ -n "${3:-}" ]; then
        printf '[default]\ns3 =\n    multipart_chunksize = %sMB\n    multipart_threshold = %sMB\n' "$3" "$3" >"$WORK/aws-$3"
        AWS_CONFIG_FILE=$WORK/aws-$3 $AWS s3 cp --quiet "$1" "s3://dedup/$2"
    else
        $AWS s3 cp --quiet "$1" "s3://dedup/$2"
    fi
}
FAILED=0
# same FILE KEY: the object reads back as the file.
same() {
    $AWS s3 cp --quiet "s3://dedup/$2" "$WORK/back" && cmp -s "$1" "$WORK/back" || {
        echo "FAIL $2 does not read back as uploaded"
        FAILED=$((FAILED + 1))
    }
    rm -f "$WORK/back"
}
ROWS=()
# measure NAME BYTES_ADDED SIZE LIMIT_PERCENT
measure() {
    local percent
    percent=$(python3 -c "print(f'{100 * $2 / $3:.2f}')")
    ROWS+=("| $1 | $percent% |")
    if python3 -c "import sys; sys.exit(0 if $2 <= $3 * $4 / 100 else 1)"; then
        echo "ok   $1: $percent% stored again (under $4%)"
    else
        echo "FAIL $1: $percent% stored again (limit $4%)"
        FAILED=$((FAILED + 1))
    fi
}

MIB=1048576
$AWS s3 mb s3://dedup >/dev/null || exit 1
bytes $((64 * MIB)) 1 >"$WORK/a64"
bytes $((256 * MIB)) 2 >"$WORK/c256"
bytes $((64 * MIB)) 3 >"$WORK/f64"
insert "$WORK/a64" $((32 * MIB)) "$WORK/b64"
insert "$WORK/c256" $((1 * MIB)) "$WORK/d256"

upload "$WORK/a64" a64 && upload "$WORK/c256" c256 && upload "$WORK/f64" f64-5 5 || exit 1
before=$(settled)
upload "$WORK/b64" b64 || exit 1
after=$(settled)
measure "64 MiB, then again with 4 KiB inserted in the middle" $((after - before)) $((64 * MIB)) 2
before=$after
upload "$WORK/d256" d256 || exit 1
after=$(settled)
measure "256 MiB, then again with 4 KiB inserted at 1 MiB" $((after - before)) $((256 * MIB)) 2
before=$after
$AWS s3api put-object --bucket dedup --key c256-put --body "$WORK/c256" >/dev/null || exit 1
after=$(settled)
measure "256 MiB by multipart, then the same bytes by one PUT" $((after - before)) $((256 * MIB)) 1
before=$after
upload "$WORK/f64" f64-16 16 || exit 1
after=$(settled)
measure "64 MiB in 5 MiB parts, then in 16 MiB parts" $((after - before)) $((64 * MIB)) 1

same "$WORK/b64" b64
same "$WORK/d256" d256
same "$WORK/c256" c256-put
same "$WORK/f64" f64-16
same "$WORK/f64" f64-5
same "$WORK/c256" c256

echo
echo "| upload | stored again |"
echo "|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
if [ "$FAILED" -gt 0 ]; then
    echo "dedup: $FAILED failed"
    tail -20 "$WORK/server.log"
    exit 1
fi
echo "dedup: all passed"
