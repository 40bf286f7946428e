#!/usr/bin/env bash
# Builds the `ouroboros:dev` image from this tree's binary, with no base
# image and no registry: the binary (debug info stripped) and the shared
# libraries it loads, imported as a root file system (`docker import`).
# Writes compose/.env with a new cluster secret, data key and root access
# key when it is missing (it is never committed).
#
#   compose/build.sh                 # release build, then the image
#   OUROBOROS_BIN=path compose/build.sh   # image from a binary built already
set -euo pipefail
[ -n "${OUROBOROS_BIN:-}" ] && OUROBOROS_BIN=$(realpath "$OUROBOROS_BIN")
cd "$(dirname "$0")"
IMAGE=${OUROBOROS_IMAGE:-ouroboros:dev}

if [ -n "${OUROBOROS_BIN:-}" ]; then
    bin=$OUROBOROS_BIN
else
    echo "== cargo build --release"
    (cd .. && cargo build --release --quiet -p ouroboros-gateway --bin ouroboros)
    bin=../target/release/ouroboros
fi
[ -x "$bin" ] || { echo "no ouroboros binary at $bin" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/data" "$root/tmp" "$root/etc"
objcopy --strip-debug "$bin" "$root/ouroboros"
# Every library the binary loads, and the loader, at the paths it looks in.
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# Name lookups go to DNS (Docker's resolver), then files.
echo "hosts: files dns" >"$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"

echo "== docker import $IMAGE"
tar -C "$root" -c . | docker import \
    --change 'ENTRYPOINT ["/ouroboros"]' \
    --change 'CMD ["serve"]' \
    --change 'ENV OUROBOROS_DATA_DIR=/data OUROBOROS_LISTEN=0.0.0.0:9000' \
    --change 'EXPOSE 9000 7000' \
    - "$IMAGE" >/dev/null
docker image ls "$IMAGE" --format '{{.Repository}}:{{.Tag}} {{.Size}}'

if [ ! -f .env ]; then
    hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
    umask 077
    cat >.env <<ENV
OUROBOROS_CLUSTER_SECRET=$(hex 32)
OUROBOROS_DATA_KEY=$(hex 32)
OUROBOROS_ACCESS_KEY_ID=GK$(hex 12)
OUROBOROS_SECRET_ACCESS_KEY=$(hex 20)
ENV
    echo "== wrote compose/.env (the cluster secret, data key and root access key)"
fi
