#!/usr/bin/env bash
# Benchmark (not a test, not in CI): a 1 GiB file of new random bytes
# uploaded with `aws s3 cp` at its defaults (multipart, 8 MiB parts, 10
# requests at once) to a fresh node, ROUNDS times (default 5), rounds
# alternating between the binaries given (default: this tree's release
# build), to compare builds, e.g. before and after a change:
#
#   scripts/bench-multipart.sh /tmp/ouroboros-before target/release/ouroboros
#
# Prints each upload's seconds and the server's CPU seconds for it (user and
# system), and each binary's medians. Each round then
# uploads the same file again under another key with boto3 (8 MiB parts, 10
# at once) and times the CompleteMultipartUpload call alone: the time a
# client waits once its last part is stored.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
    cargo build --release --quiet -p ouroboros-gateway --bin ouroboros
    BINS=(target/release/ouroboros)
fi
WORK=$(mktemp -d)
SERVER=
cleanup() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
export AWS_ACCESS_KEY_ID=OBBENCHMULTIPART01 AWS_SECRET_ACCESS_KEY=bench-multipart-secret-0123456789 AWS_DEFAULT_REGION=us-east-1
unset AWS_CA_BUNDLE
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# Seconds the CompleteMultipartUpload call of a boto3 upload of FILE takes.
complete_seconds() {
    python3 - "$1" "$2" <<'PY'
import sys, time, boto3
from concurrent.futures import ThreadPoolExecutor
endpoint, path = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint)
part = 8 << 20
upload = s3.create_multipart_upload(Bucket="bench", Key="completed")["UploadId"]
def send(number):
    with open(path, "rb") as f:
        f.seek((number - 1) * part)
        body = f.read(part)
    etag = s3.upload_part(Bucket="bench", Key="completed", UploadId=upload, PartNumber=number, Body=body)["ETag"]
    return {"PartNumber": number, "ETag": etag}
size = __import__("os").path.getsize(path)
with ThreadPoolExecutor(10) as pool:
    parts = list(pool.map(send, range(1, (size + part - 1) // part + 1)))
start = time.monotonic()
s3.complete_multipart_upload(Bucket="bench", Key="completed", UploadId=upload, MultipartUpload={"Parts": parts})
print(f"{time.monotonic() - start:.3f}")
PY
}

# CPU seconds (user and system) process $1 has used so far.
TICKS=$(getconf CLK_TCK)
cpu_seconds() { awk -v ticks="$TICKS" '{print ($14 + $15) / ticks}' "/proc/$1/stat"; }

declare -A TIMES COMPLETIONS CPUS
for round in $(seq 1 "$ROUNDS"); do
    head -c 1073741824 /dev/urandom >"$WORK/gib.bin"
    for bin in "${BINS[@]}"; do
        rm -rf "$WORK/data"
        OUROBOROS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID OUROBOROS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY OUROBOROS_LOG=warn \
            "$bin" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
        SERVER=$!
        for _ in $(seq 1 100); do
            curl -sf "http://127.0.0.1:$PORT/_ouroboros/health" >/dev/null && break
            sleep 0.1
        done
        aws --endpoint-url "http://127.0.0.1:$PORT" s3 mb s3://bench >/dev/null
        sync
        start=$(date +%s.%N)
        cpu_start=$(cpu_seconds "$SERVER")
        aws --endpoint-url "http://127.0.0.1:$PORT" s3 cp --quiet "$WORK/gib.bin" s3://bench/gib.bin
        end=$(date +%s.%N)
        # Junctions cut ahead may still be running in the background.
        sleep 2
        cpu=$(echo "$(cpu_seconds "$SERVER") - $cpu_start" | bc -l)
        seconds=$(echo "$end - $start" | bc -l)
        TIMES[$bin]="${TIMES[$bin]:-} $seconds"
        CPUS[$bin]="${CPUS[$bin]:-} $cpu"
        completion=$(complete_seconds "http://127.0.0.1:$PORT" "$WORK/gib.bin")
        COMPLETIONS[$bin]="${COMPLETIONS[$bin]:-} $completion"
        printf 'round %d  %-40s %6.2f s  (server CPU %5.2f s, completion %5.2f s)\n' \
            "$round" "$bin" "$seconds" "$cpu" "$completion"
        kill "$SERVER" && wait "$SERVER" 2>/dev/null || true
        SERVER=
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
for bin in "${BINS[@]}"; do
    m=$(echo "${TIMES[$bin]}" | median)
    c=$(echo "${COMPLETIONS[$bin]}" | median)
    u=$(echo "${CPUS[$bin]}" | median)
    printf '%-40s median %6.2f s  (%.1f MB/s), server CPU %5.2f s, completion %5.2f s\n' \
        "$bin" "$m" "$(echo "1073.741824 / $m" | bc -l)" "$u" "$c"
done
