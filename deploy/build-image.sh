#!/usr/bin/env bash
# Builds keygate's container image with podman on a machine that reaches no container
# registry, and runs it the way Kubernetes would:
#   1. a Debian bookworm minbase root filesystem (debootstrap, from the apt mirror
#      this machine is configured with), imported as the local base image;
#   2. the release binary, built on the host;
#   3. the Dockerfile's runtime stage around that binary
#      (BIN_STAGE=prebuilt, RUNTIME_IMAGE=the local base);
#   4. a container as user 65532 with a read-only root filesystem; GET /healthz on
#      the metrics port must answer 200.
# Needs root (debootstrap, podman). Takes a few minutes the first time (debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=localhost/keygate-base:bookworm
IMAGE=localhost/keygate:dev
PORT=${PORT:-18490}
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

missing=()
for tool in podman debootstrap runc curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! "${PODMAN[@]}" image exists "$BASE"; then
  mirror=${DEBIAN_MIRROR:-$(grep -h -m1 -oP '^URIs:\s*\K\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)}
  [[ -n $mirror ]] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
  rootfs=$(mktemp -d)
  echo "== debootstrap --variant=minbase bookworm ($mirror)"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/tmp/keygate-debootstrap.log
  tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$BASE" >/dev/null
  rm -rf "$rootfs"
fi

echo "== cargo build --release"
cargo build --release --locked

echo "== podman build (runtime stage around the host-built binary)"
"${PODMAN[@]}" build "${LIMITS[@]}" \
  --build-arg BIN_STAGE=prebuilt --build-arg RUNTIME_IMAGE="$BASE" \
  --build-arg VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)" \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --target runtime -t "$IMAGE" .

echo "== podman run: non-root, read-only root filesystem"
conf=$(mktemp -d)
cat >"$conf/config.yaml" <<YAML
listen: "127.0.0.1:$PORT"
upstream: "http://127.0.0.1:3000"
metrics:
  listen: "127.0.0.1:$((PORT + 1))"
admin:
  listen: "127.0.0.1:$((PORT + 2))"
keys_file: /etc/keygate/keys.yaml
state_dir: /var/lib/keygate
access_log:
  path: /var/log/keygate/access.log
YAML
printf 'keys: []\n' >"$conf/keys.yaml"
chmod 0755 "$conf"; chmod 0644 "$conf"/*.yaml
cid=$("${PODMAN[@]}" run -d --rm "${LIMITS[@]}" --network host --read-only --user 65532:65532 \
  -v "$conf:/etc/keygate:ro" --tmpfs /var/lib/keygate:rw,mode=1777 --tmpfs /var/log/keygate:rw,mode=1777 \
  "$IMAGE")
trap '"${PODMAN[@]}" stop -t 2 "$cid" >/dev/null 2>&1 || true; rm -rf "$conf"' EXIT
code=000
for _ in $(seq 50); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((PORT + 1))/healthz" || true)
  [[ $code == 200 ]] && break
  sleep 0.2
done
echo "user in the container: $("${PODMAN[@]}" exec "$cid" /usr/local/bin/keygate --version 2>/dev/null || true) as $("${PODMAN[@]}" inspect -f '{{.Config.User}}' "$cid")"
echo "read-only root: $("${PODMAN[@]}" inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$cid")"
echo "labels: $("${PODMAN[@]}" image inspect -f '{{index .Labels "org.opencontainers.image.version"}} {{index .Labels "org.opencontainers.image.revision"}}' "$IMAGE")"
if [[ $code != 200 ]]; then
  "${PODMAN[@]}" logs "$cid" || true
  echo "healthz answered $code" >&2
  exit 1
fi
echo "GET /healthz -> 200"
