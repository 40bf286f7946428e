#!/usr/bin/env bash
# Peak resident memory of one OuroborosDB node (release build, default
# settings) while the aws CLI moves large objects: a 5 GiB single PUT and its
# GET (S3's largest single PUT), then a 10 GiB multipart upload and its GET.
# The peak (VmHWM) is reset before each step. Needs about 3 × the sizes in
# free disk space under TMPDIR.
#
# Settings: SINGLE_GIB (default 5), MULTIPART_GIB (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."

SINGLE_GIB=${SINGLE_GIB:-5}
MULTIPART_GIB=${MULTIPART_GIB:-10}

cargo build --release --quiet -p ouroboros-gateway --bin ouroboros
WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
ENDPOINT="http://127.0.0.1:$PORT"
export AWS_ACCESS_KEY_ID=OBMEMORYBENCH0000001 AWS_SECRET_ACCESS_KEY=memory-bench-secret-0123456789abcdefghij
export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
# shellcheck source=scripts/node.sh
source scripts/node.sh
start_node target/release/ouroboros
AWS="aws --endpoint-url $ENDPOINT"
$AWS s3 mb s3://memory >/dev/null

# step NAME COMMAND...: run a step with the peak reset, print its peak and rate.
step() {
    local name=$1 bytes=$2
    shift 2
    echo 5 >"/proc/$SERVER/clear_refs"
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    local peak
    peak=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status")
    printf '%-32s peak %6d MB   %6.1f MB/s\n' "$name" $((peak / 1024)) "$(echo "$bytes / ($end - $start) / 1000000" | bc -l)"
}

single=$((SINGLE_GIB * 1073741824))
multi=$((MULTIPART_GIB * 1073741824))
head -c "$single" /dev/urandom >"$WORK/single.bin"
step "${SINGLE_GIB} GiB single PUT (s3api)" "$single" \
    $AWS s3api put-object --bucket memory --key single.bin --body "$WORK/single.bin"
rm -f "$WORK/single.bin"
step "${SINGLE_GIB} GiB GET (s3api)" "$single" \
    $AWS s3api get-object --bucket memory --key single.bin /dev/null
head -c "$multi" /dev/urandom >"$WORK/multi.bin"
step "${MULTIPART_GIB} GiB multipart PUT (s3 cp)" "$multi" $AWS s3 cp "$WORK/multi.bin" s3://memory/multi.bin
rm -f "$WORK/multi.bin"
step "${MULTIPART_GIB} GiB GET (s3 cp)" "$multi" $AWS s3 cp s3://memory/multi.bin /dev/null
