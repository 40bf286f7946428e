#!/usr/bin/env bash
# The real-client suite: starts the real `ouroboros` binary on a loopback port
# with a fresh data directory and drives it with the aws CLI, boto3, rclone and
# s3cmd at their default settings. Every download is compared byte for byte.
# Installs the clients when they are missing (Debian packages, boto3 from PyPI).
# CLUSTER_SIZE=3 runs it against a cluster of three nodes instead, each client
# on another node, and reads what one client wrote through every node.
set -uo pipefail
cd "$(dirname "$0")/.."

ensure_tools() {
    local missing=()
    command -v aws >/dev/null 2>&1 || missing+=(awscli)
    command -v rclone >/dev/null 2>&1 || missing+=(rclone)
    command -v s3cmd >/dev/null 2>&1 || missing+=(s3cmd)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# boto3 at its latest release, in a folder of the suite's own: the system's
# Python (and the aws CLI built on its botocore) stays as it is. Where PyPI is
# out of reach, the installed boto3 is used and its version printed.
BOTO3_DIR=$PWD/target/client-suite/python
ensure_latest_boto3() {
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "== installing pip"
        apt-get install -y -qq python3-pip >/dev/null
    fi
    if python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$BOTO3_DIR" boto3 >/dev/null 2>&1; then
        BOTO3_PATH=$BOTO3_DIR
    elif python3 -c "import boto3" 2>/dev/null; then
        echo "== PyPI out of reach: using the installed boto3"
        BOTO3_PATH=
    else
        echo "boto3 is neither installable nor installed" >&2
        exit 1
    fi
    echo "== boto3 $(PYTHONPATH=$BOTO3_PATH python3 -c 'import boto3; print(boto3.__version__)')"
}

ensure_tools
ensure_latest_boto3
cargo build --quiet -p ouroboros-gateway --bin ouroboros
BIN=target/debug/ouroboros

WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
ENDPOINT="http://127.0.0.1:$PORT"
export AWS_ACCESS_KEY_ID=OBCLIENTSUITE0000001 AWS_SECRET_ACCESS_KEY=client-suite-secret-0123456789abcdefghij
export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
# shellcheck source=scripts/node.sh
source scripts/node.sh
CLUSTER_SIZE=${CLUSTER_SIZE:-1}
if [ "$CLUSTER_SIZE" -gt 1 ]; then
    start_cluster "$BIN" "$CLUSTER_SIZE"
    echo "== a cluster of $CLUSTER_SIZE nodes: aws CLI, boto3, rclone and s3cmd each on another"
else
    start_node "$BIN"
    ENDPOINTS=("$ENDPOINT")
    LOGS=("$WORK/server.log")
fi
# Each client on its own node (all on the one node when alone).
endpoint_of() { echo "${ENDPOINTS[$(($1 % ${#ENDPOINTS[@]}))]}"; }
ENDPOINT_AWS=$(endpoint_of 0)
ENDPOINT_BOTO3=$(endpoint_of 1)
ENDPOINT_RCLONE=$(endpoint_of 2)
ENDPOINT_S3CMD=$(endpoint_of 4)

PASSED=0
FAILED=0
# check NAME COMMAND...: runs a step, counts it, shows its output on failure.
check() {
    local name=$1
    shift
    if out=$("$@" 2>&1); then
        PASSED=$((PASSED + 1))
        echo "ok   $name"
    else
        FAILED=$((FAILED + 1))
        echo "FAIL $name"
        echo "$out" | tail -20 | sed 's/^/     /'
    fi
}

AWS="aws --endpoint-url $ENDPOINT_AWS"
head -c 52428800 /dev/urandom >"$WORK/big.bin"
mkdir -p "$WORK/tree/sub"
for i in $(seq 1 200); do
    d="$WORK/tree"
    [ $((i % 3)) -eq 0 ] && d="$WORK/tree/sub"
    head -c $((i * 37)) /dev/urandom >"$d/file-$i.txt"
done

# --- aws CLI -------------------------------------------------------------
check "aws s3 mb" $AWS s3 mb s3://cli
check "aws s3 cp 50 MiB up (multipart)" $AWS s3 cp "$WORK/big.bin" s3://cli/big.bin
check "aws s3 cp 50 MiB down" $AWS s3 cp s3://cli/big.bin "$WORK/big.back"
check "50 MiB round trip is byte-exact" cmp "$WORK/big.bin" "$WORK/big.back"
for endpoint in "${ENDPOINTS[@]}"; do
    check "50 MiB read back byte-exact through $endpoint" bash -c \
        "aws --endpoint-url $endpoint s3 cp s3://cli/big.bin - | cmp - '$WORK/big.bin'"
done
check "aws s3 sync 200 files up" $AWS s3 sync "$WORK/tree" s3://cli/tree
check "aws s3 sync 200 files down" $AWS s3 sync s3://cli/tree "$WORK/tree.back"
check "synced tree is byte-exact" diff -r "$WORK/tree" "$WORK/tree.back"
check "aws s3 ls lists 200 files" bash -c "[ \$($AWS s3 ls --recursive s3://cli/tree/ | wc -l) -eq 200 ]"
check "aws s3api put-object with metadata" $AWS s3api put-object --bucket cli --key "dir one/héllo +%.txt" \
    --body "$WORK/tree/file-1.txt" --content-type text/plain --metadata owner=ann
check "aws s3api head-object returns metadata" bash -c \
    "$AWS s3api head-object --bucket cli --key 'dir one/héllo +%.txt' | grep -q '\"owner\": \"ann\"'"
check "aws s3api get-object" $AWS s3api get-object --bucket cli --key "dir one/héllo +%.txt" "$WORK/odd.back"
check "odd key round trip is byte-exact" cmp "$WORK/tree/file-1.txt" "$WORK/odd.back"
check "aws s3api list-objects-v2 with delimiter" bash -c \
    "$AWS s3api list-objects-v2 --bucket cli --prefix tree/ --delimiter / | grep -q '\"Prefix\": \"tree/sub/\"'"
check "presigned URL fetched with curl" bash -c \
    "curl -sf \"\$($AWS s3 presign s3://cli/tree/file-5.txt --expires-in 300)\" -o '$WORK/presigned.back' && cmp '$WORK/tree/file-5.txt' '$WORK/presigned.back'"
check "wrong secret is refused" bash -c \
    "! AWS_SECRET_ACCESS_KEY=wrong $AWS s3 ls s3://cli 2>&1 | grep -q file; AWS_SECRET_ACCESS_KEY=wrong $AWS s3 ls s3://cli 2>&1 | grep -q SignatureDoesNotMatch"
check "aws s3 rm" $AWS s3 rm s3://cli/big.bin
check "removed object is gone" bash -c "! $AWS s3api head-object --bucket cli --key big.bin >/dev/null 2>&1"

# --- versioning with the aws CLI -------------------------------------------
check "aws s3api put-bucket-versioning" bash -c \
    "$AWS s3api create-bucket --bucket vcli >/dev/null && $AWS s3api put-bucket-versioning --bucket vcli --versioning-configuration Status=Enabled"
check "aws s3api get-bucket-versioning says Enabled" bash -c \
    "$AWS s3api get-bucket-versioning --bucket vcli --query Status --output text | grep -qx Enabled"
check "aws s3api versioned puts, delete marker, get by version" bash -c '
    set -e
    v1=$('"$AWS"' s3api put-object --bucket vcli --key doc --body "'"$WORK"'/tree/file-1.txt" --query VersionId --output text)
    '"$AWS"' s3api put-object --bucket vcli --key doc --body "'"$WORK"'/tree/file-2.txt" >/dev/null
    '"$AWS"' s3api delete-object --bucket vcli --key doc >/dev/null
    ! '"$AWS"' s3api head-object --bucket vcli --key doc >/dev/null 2>&1
    '"$AWS"' s3api get-object --bucket vcli --key doc --version-id "$v1" "'"$WORK"'/v1.back" >/dev/null
    cmp "'"$WORK"'/tree/file-1.txt" "'"$WORK"'/v1.back"
    [ "$('"$AWS"' s3api list-object-versions --bucket vcli --query "length(Versions)" --output text)" = 2 ]
    [ "$('"$AWS"' s3api list-object-versions --bucket vcli --query "DeleteMarkers[0].IsLatest" --output text)" = True ]'

# --- boto3 at default settings -------------------------------------------
check "boto3 put/get, upload_file/download_file, paging" env PYTHONPATH="$BOTO3_PATH" python3 - "$ENDPOINT_BOTO3" "$WORK" <<'PY'
import hashlib, os, sys
import boto3
from boto3.s3.transfer import TransferConfig

endpoint, work = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint)
s3.create_bucket(Bucket="boto")
body = os.urandom(300_000)
s3.put_object(Bucket="boto", Key="small.bin", Body=body)
assert s3.get_object(Bucket="boto", Key="small.bin")["Body"].read() == body
path = os.path.join(work, "boto-big.bin")
with open(path, "wb") as f:
    f.write(os.urandom(40 * 1024 * 1024))
s3.upload_file(path, "boto", "big.bin", Config=TransferConfig(max_concurrency=10))
s3.download_file("boto", "big.bin", path + ".back")
digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
assert digest(path) == digest(path + ".back"), "upload_file/download_file differ"
for i in range(120):
    s3.put_object(Bucket="boto", Key=f"page/{i:04d}", Body=str(i).encode())
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="boto", Prefix="page/", PaginationConfig={"PageSize": 25}):
    keys += [o["Key"] for o in page.get("Contents", [])]
assert keys == [f"page/{i:04d}" for i in range(120)], keys[:5]
# Presigned URLs as boto3 makes them by default (SigV2 query strings in
# us-east-1): an object, and a bucket listing, which SigV2 signs as "/boto/".
import urllib.request
url = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "small.bin"})
assert urllib.request.urlopen(url).read() == body, "presigned GET differs"
url = s3.generate_presigned_url("list_objects", Params={"Bucket": "boto", "Prefix": "page/", "MaxKeys": 3})
listing = urllib.request.urlopen(url).read().decode()
assert "<Key>page/0000</Key>" in listing and "<Key>page/0003</Key>" not in listing, listing[:300]
print("boto3 ok")
PY

check "boto3 versioning: 1200 versions paged, restore by copy, heads and merges" env PYTHONPATH="$BOTO3_PATH" python3 - "$ENDPOINT_BOTO3" <<'PY'
import sys
import boto3
from botocore.exceptions import ClientError

endpoint = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=endpoint)
s3.create_bucket(Bucket="vpy")
s3.put_bucket_versioning(Bucket="vpy", VersioningConfiguration={"Status": "Enabled"})
written = {}
for i in range(1200):
    key = f"k{i % 3}"
    written.setdefault(key, []).append(s3.put_object(Bucket="vpy", Key=key, Body=f"{key} v{i}".encode())["VersionId"])
seen = []
for page in s3.get_paginator("list_object_versions").paginate(Bucket="vpy", PaginationConfig={"PageSize": 250}):
    seen += [(v["Key"], v["VersionId"], v["IsLatest"]) for v in page.get("Versions", [])]
expected = [(k, vid, i == 0) for k in sorted(written) for i, vid in enumerate(reversed(written[k]))]
assert seen == expected, "paged versions differ from what was written"

# Restore an old version by copying it over the key.
old = written["k0"][0]
s3.copy_object(Bucket="vpy", Key="k0", CopySource={"Bucket": "vpy", "Key": "k0", "VersionId": old})
assert s3.get_object(Bucket="vpy", Key="k0")["Body"].read() == b"k0 v0"

# Delete marker, then undelete by removing it.
marker = s3.delete_object(Bucket="vpy", Key="k1")
assert marker["DeleteMarker"] is True
try:
    s3.get_object(Bucket="vpy", Key="k1")
    raise AssertionError("a deleted key still reads")
except ClientError as error:
    assert error.response["Error"]["Code"] == "NoSuchKey"
s3.delete_object(Bucket="vpy", Key="k1", VersionId=marker["VersionId"])
assert s3.get_object(Bucket="vpy", Key="k1")["Body"].read() == f"k1 v{1198}".encode()

# The heads extension: headers added with an event hook.
extra = {}
def add_headers(request, **kwargs):
    for name, value in extra.items():
        request.headers[name] = value
s3.meta.events.register("before-sign.s3.*", add_headers)
base = s3.put_object(Bucket="vpy", Key="doc", Body=b"base")["ResponseMetadata"]["HTTPHeaders"]["x-ouroboros-version"]
extra = {"x-ouroboros-parents": base}
left = s3.put_object(Bucket="vpy", Key="doc", Body=b"left")["ResponseMetadata"]["HTTPHeaders"]["x-ouroboros-version"]
right = s3.put_object(Bucket="vpy", Key="doc", Body=b"right")["ResponseMetadata"]["HTTPHeaders"]["x-ouroboros-version"]
extra = {"x-ouroboros-heads": "1"}
heads = s3.head_object(Bucket="vpy", Key="doc")["ResponseMetadata"]["HTTPHeaders"]["x-ouroboros-heads"]
assert sorted(h.split(";")[0] for h in heads.split(",")) == sorted([left, right]), heads
assert s3.get_object(Bucket="vpy", Key="doc")["Body"].read() == b"right", "plain GET reads the newest head"
extra = {"x-ouroboros-parents": f"{left},{right}"}
merged = s3.put_object(Bucket="vpy", Key="doc", Body=b"merged")["ResponseMetadata"]["HTTPHeaders"]["x-ouroboros-version"]
extra = {"x-ouroboros-heads": "1", "x-ouroboros-children": "1"}
headers = s3.head_object(Bucket="vpy", Key="doc", VersionId=left)["ResponseMetadata"]["HTTPHeaders"]
assert headers["x-ouroboros-parents"] == base and headers["x-ouroboros-children"] == merged, headers
assert headers["x-ouroboros-heads"].split(";")[0] == merged, headers
print("boto3 versioning ok")
PY

# --- rclone --------------------------------------------------------------
export RCLONE_CONFIG_OB_TYPE=s3 RCLONE_CONFIG_OB_PROVIDER=Other RCLONE_CONFIG_OB_ENDPOINT=$ENDPOINT_RCLONE
export RCLONE_CONFIG_OB_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_OB_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export RCLONE_CONFIG_OB_REGION=us-east-1
# Plain HTTP on loopback: a CA bundle from the environment only trips rclone's SDK.
RCLONE="env -u AWS_CA_BUNDLE rclone"
check "rclone mkdir" $RCLONE mkdir ob:rclone
check "rclone copy" $RCLONE copy "$WORK/tree" ob:rclone/tree
check "rclone check --download" $RCLONE check --download "$WORK/tree" ob:rclone/tree
check "rclone lsjson" bash -c "[ \$($RCLONE lsjson -R --files-only ob:rclone/tree | grep -c '\"Path\"') -eq 200 ]"
check "rclone cat" bash -c "$RCLONE cat ob:rclone/tree/file-2.txt | cmp - '$WORK/tree/file-2.txt'"
check "rclone delete" $RCLONE delete ob:rclone/tree/sub
check "rclone sees the deletion" bash -c "[ \$($RCLONE lsf -R --files-only ob:rclone/tree | wc -l) -eq 134 ]"
# SigV2 in headers, which rclone signs over the path as sent ("/bucket" for a listing).
check "rclone with v2 signatures lists and reads" bash -c \
    "[ \$(RCLONE_CONFIG_OB_REGION=other-v2-signature $RCLONE lsf -R --files-only ob:rclone/tree | wc -l) -eq 134 ] &&
     RCLONE_CONFIG_OB_REGION=other-v2-signature $RCLONE cat ob:rclone/tree/file-2.txt | cmp - '$WORK/tree/file-2.txt'"

# --- large objects through multipart ---------------------------------------
head -c 1073741824 /dev/urandom >"$WORK/gib.bin"
check "aws s3 cp 1 GiB up (multipart)" $AWS s3 cp "$WORK/gib.bin" s3://cli/gib.bin
check "aws s3 cp 1 GiB down" $AWS s3 cp s3://cli/gib.bin "$WORK/gib.back"
check "1 GiB round trip has the same sha256" bash -c \
    "[ \"\$(sha256sum <'$WORK/gib.bin')\" = \"\$(sha256sum <'$WORK/gib.back')\" ]"
rm -f "$WORK/gib.back"
mkdir -p "$WORK/sizes"
for size in 0 1 5242879 5242880 104857600; do
    head -c "$size" /dev/urandom >"$WORK/sizes/size-$size"
done
ln "$WORK/gib.bin" "$WORK/sizes/size-1073741824"
check "rclone copy of 0 B, 1 B, 5 MiB-1, 5 MiB, 100 MiB and 1 GiB" $RCLONE copy "$WORK/sizes" ob:rclone/sizes
check "rclone check --download of those sizes" $RCLONE check --download "$WORK/sizes" ob:rclone/sizes

# --- s3cmd ---------------------------------------------------------------
cat >"$WORK/s3cfg" <<EOF
[default]
access_key = $AWS_ACCESS_KEY_ID
secret_key = $AWS_SECRET_ACCESS_KEY
host_base = ${ENDPOINT_S3CMD#http://}
host_bucket = ${ENDPOINT_S3CMD#http://}
use_https = False
signature_v2 = False
bucket_location = us-east-1
EOF
S3CMD="s3cmd -c $WORK/s3cfg --no-progress"
check "s3cmd mb" $S3CMD mb s3://s3cmd
check "s3cmd put" $S3CMD put "$WORK/tree/file-7.txt" s3://s3cmd/file-7.txt
check "s3cmd get" $S3CMD get --force s3://s3cmd/file-7.txt "$WORK/s3cmd.back"
check "s3cmd round trip is byte-exact" cmp "$WORK/tree/file-7.txt" "$WORK/s3cmd.back"
check "s3cmd ls" bash -c "$S3CMD ls s3://s3cmd | grep -q file-7.txt"
check "s3cmd info" bash -c "$S3CMD info s3://s3cmd/file-7.txt | grep -qi 'md5'"
check "s3cmd del" $S3CMD del s3://s3cmd/file-7.txt
check "s3cmd sees the deletion" bash -c "! $S3CMD ls s3://s3cmd | grep -q file-7.txt"

echo
echo "clients: $PASSED passed, $FAILED failed"
if [ "$FAILED" -gt 0 ]; then
    for log in "${LOGS[@]}"; do
        echo "--- $log (tail)"
        tail -40 "$log"
    done
    exit 1
fi
