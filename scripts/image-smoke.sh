#!/usr/bin/env bash
# Builds the container image from the Dockerfile and drives it over HTTP: waits for /readyz, posts one real
# photo to /api/v1/analyses, fetches one layer atlas and checks it is a PNG. Prints build time and image size.
#
# With a working Docker engine (`docker info` succeeds) it uses docker. Otherwise it uses podman (vfs storage,
# chroot isolation; needs root): the base image is a Debian bookworm made with debootstrap (cached), torch comes
# from PyPI, and the image is run through `podman image mount` + chroot as the image's non-root user.
#
# Environment:
#   CORTEXLENS_IMAGE        tag to build (default localhost/cortexlens:smoke)
#   TORCH_INDEX_URL         torch index build argument (docker: the Dockerfile's default; podman: pip's own index)
#   CORTEXLENS_SMOKE_CACHE  where the podman path keeps the base rootfs and its image store
#                           (default ${XDG_CACHE_HOME:-$HOME/.cache}/cortexlens)
#   DEBIAN_MIRROR           mirror for debootstrap (default: the one apt uses here)
#   SMOKE_WORKERS           uvicorn workers to run the image with (CORTEXLENS_WORKERS; default 1)
#   READY_TIMEOUT           seconds to wait for /readyz (default 600)
#   SMOKE_ARTIFACTS         a folder to keep the photo, the analysis JSON and the atlas PNG in (default: none)
#   SKIP_BUILD=1            run the image already built under CORTEXLENS_IMAGE instead of building it again
#   KEEP_IMAGE              1 keeps the image afterwards, 0 removes it (default: docker 1, for its layer cache;
#                           podman 0, as vfs storage holds a full copy of the image per layer)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
IMAGE="${CORTEXLENS_IMAGE:-localhost/cortexlens:smoke}"
READY_TIMEOUT="${READY_TIMEOUT:-600}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cortexlens-smoke.XXXXXX")"
ENGINE=""
SERVER_PID=""
RUN_USER=""
RUN_ENV=()
CONTAINER=""
MNT=""
MOUNTED=()
PODMAN=()

log() { printf '\n== %s\n' "$*"; }
die() { printf 'image-smoke: FAIL: %s\n' "$*" >&2; exit 1; }

cleanup() {
  local rc=$?
  set +e
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  if [ -n "$CONTAINER" ]; then
    [ "$rc" -eq 0 ] || docker logs --tail 50 "$CONTAINER" >&2
    docker rm -f "$CONTAINER" >/dev/null 2>&1
  fi
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    umount -R "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" 2>/dev/null
  done
  if [ -n "$MNT" ]; then
    "${PODMAN[@]}" image unmount "$IMAGE" >/dev/null 2>&1
  fi
  if [ "$rc" -ne 0 ] && [ -s "$WORK/server.log" ]; then
    echo "--- last lines of the server's log:" >&2
    tail -n 40 "$WORK/server.log" >&2
  fi
  if [ "${KEEP_IMAGE:-1}" = "0" ]; then
    if [ "$ENGINE" = docker ]; then docker rmi "$IMAGE" >/dev/null 2>&1; fi
    if [ "$ENGINE" = podman ]; then "${PODMAN[@]}" rmi "$IMAGE" >/dev/null 2>&1; fi
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

human_bytes() {
  "$PY" -c 'import sys; n = float(sys.argv[1]); u = "B"
for u in ("B", "kB", "MB", "GB", "TB"):
    if n < 1000 or u == "TB": break
    n /= 1000
print(f"{n:.2f} {u}")' "$1"
}

# ---------------------------------------------------------------------------------------------------------------
# podman path: a debootstrap base, kept in the cache and imported once into a private vfs store
# ---------------------------------------------------------------------------------------------------------------
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local url
  url="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v -- '-security' | head -n1 | tr -d ' ' || true)"
  [ -n "$url" ] || { echo "no Debian mirror in apt's sources; set DEBIAN_MIRROR" >&2; return 1; }
  echo "$url"
}

podman_base() {
  local cache="$1" base="localhost/cortexlens-base:bookworm"
  if "${PODMAN[@]}" image exists "$base"; then echo "$base"; return; fi
  local tarball="$cache/bookworm-python3.tar"
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install -y debootstrap)"
    local mirror rootfs="$cache/rootfs.partial"
    mirror="$(debian_mirror)"
    echo "debootstrap bookworm from $mirror" >&2
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
      || { tail -n 20 "$cache/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
  fi
  "${PODMAN[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    "$tarball" "$base" >/dev/null
  echo "$base"
}

# Runs the image's CMD in a chroot of the mounted image, as the image's USER, with the image's ENV and WORKDIR.
podman_serve() {
  local port="$1"
  MNT="$("${PODMAN[@]}" image mount "$IMAGE")"
  [ -d "$MNT" ] || die "podman image mount gave no folder"

  # The image's rootfs must stay untouched: /tmp and the user's home get tmpfs, /proc and /dev come from the host.
  local user home workdir
  user="$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "$IMAGE")"
  workdir="$("${PODMAN[@]}" image inspect --format '{{.Config.WorkingDir}}' "$IMAGE")"
  case "${user%%:*}" in "" | 0 | root) die "the image runs as root ('$user')" ;; esac
  home="$(awk -F: -v u="${user%%:*}" '$1 == u || $3 == u { print $6; exit }' "$MNT/etc/passwd")"
  mount -t proc proc "$MNT/proc" && MOUNTED+=("$MNT/proc")
  mount --rbind /dev "$MNT/dev" && mount --make-rslave "$MNT/dev" && MOUNTED+=("$MNT/dev")
  mount -t tmpfs -o mode=1777 tmpfs "$MNT/tmp" && MOUNTED+=("$MNT/tmp")
  if [ -n "$home" ] && [ -d "$MNT$home" ]; then
    local uid_gid
    uid_gid="$(stat -c %u:%g "$MNT$home")"
    mount -t tmpfs -o "mode=0750,uid=${uid_gid%%:*},gid=${uid_gid##*:}" tmpfs "$MNT$home" && MOUNTED+=("$MNT$home")
  fi

  local -a env_args=()
  while IFS= read -r line; do [ -n "$line" ] && env_args+=("$line"); done \
    < <("${PODMAN[@]}" image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE")
  [ -n "$home" ] && env_args+=("HOME=$home")
  env_args+=("CORTEXLENS_WORKERS=${SMOKE_WORKERS:-1}")

  # The image's own command, moved to a free loopback port.
  local cmd
  cmd="$("${PODMAN[@]}" image inspect --format '{{json .Config.Cmd}}' "$IMAGE" \
    | "$PY" -c 'import json, sys; print(json.load(sys.stdin)[-1])')"
  case "$cmd" in
    *"--host 0.0.0.0 --port 8000"*) ;;
    *) die "unexpected CMD in the image: $cmd" ;;
  esac
  cmd="${cmd/--host 0.0.0.0 --port 8000/--host 127.0.0.1 --port $port}"
  echo "as user $user in ${workdir:-/}: $cmd"

  chroot --userspec="$user" "$MNT" /usr/bin/env -i "${env_args[@]}" \
    /bin/sh -c "cd '${workdir:-/}' && $cmd" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  RUN_USER="$user"
  RUN_ENV=("${env_args[@]}")
}

# The image's HEALTHCHECK command, run in the chroot like the server, against the server's port.
podman_healthcheck() {
  local port="$1"
  local -a test=()
  while IFS= read -r -d '' arg; do test+=("$arg"); done < <(
    "${PODMAN[@]}" image inspect --format '{{json .HealthCheck}}' "$IMAGE" | "$PY" -c 'import json, sys
check = json.load(sys.stdin) or {}
test = check.get("Test") or []
if test[:1] == ["CMD-SHELL"]:
    test = ["/bin/sh", "-c"] + test[1:]
elif test[:1] == ["CMD"]:
    test = test[1:]
else:
    sys.exit("the image has no HEALTHCHECK")
sys.stdout.write("".join(a.replace(":8000/", ":" + sys.argv[1] + "/") + "\0" for a in test))' "$port")
  [ "${#test[@]}" -gt 0 ] || die "the image has no HEALTHCHECK"
  chroot --userspec="$RUN_USER" "$MNT" /usr/bin/env -i "${RUN_ENV[@]}" "${test[@]}"
}

# ---------------------------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------------------------
cd "$ROOT"
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ENGINE=docker
  KEEP_IMAGE="${KEEP_IMAGE:-1}"
  build=(docker build -t "$IMAGE")
  [ -n "${TORCH_INDEX_URL:-}" ] && build+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
else
  ENGINE=podman
  KEEP_IMAGE="${KEEP_IMAGE:-0}"
  command -v podman >/dev/null || die "neither a Docker engine nor podman (apt-get install -y podman buildah debootstrap)"
  [ "$(id -u)" -eq 0 ] || die "the podman path runs the image with mount and chroot: run it as root"
  CACHE="${CORTEXLENS_SMOKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cortexlens}"
  mkdir -p "$CACHE"
  # A private store, so this never meets a differently configured default store.
  PODMAN=(podman --storage-driver vfs --root "$CACHE/containers/storage" --runroot "${TMPDIR:-/tmp}/cortexlens-podman-run")
  log "base image"
  BASE_IMAGE="$(podman_base "$CACHE")"
  echo "$BASE_IMAGE"
  # vfs keeps a full copy of the root filesystem per layer (~7 GB each with PyPI's CUDA torch): drop the previous
  # image first and build without intermediate layers, so one build peaks near 3 copies instead of one per step.
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    "${PODMAN[@]}" rmi --force "$IMAGE" >/dev/null 2>&1 || true
    "${PODMAN[@]}" image prune --force >/dev/null 2>&1 || true
    free_gb=$(($(df -Pk "$CACHE" | awk 'NR == 2 { print $4 }') / 1024 / 1024))
    [ "$free_gb" -ge 25 ] || die "only ${free_gb} GB free under $CACHE; the vfs build needs about 25 GB"
  fi
  build=("${PODMAN[@]}" build --isolation=chroot --format docker --layers=false -t "$IMAGE"
    --build-arg "BASE=$BASE_IMAGE"
    --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL:-}")
  # The build reaches the package registries with the host's CA bundle (for TLS-inspecting proxies).
  [ -d /etc/ssl/certs ] && build+=(--volume /etc/ssl/certs:/etc/ssl/certs:ro)
fi

BUILD_SECONDS="(not built: SKIP_BUILD=1)"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "build with $ENGINE"
  start=$(date +%s)
  set +e
  "${build[@]}" "$ROOT" 2>&1 | tee "$WORK/build.log" \
    | grep --line-buffered -E '^(STEP|\[[0-9]+/[0-9]+\] STEP|#[0-9]+ \[|COMMIT|Successfully tagged|ERROR|[Ee]rror)'
  build_rc=${PIPESTATUS[0]}
  set -e
  [ "$build_rc" -eq 0 ] || { tail -n 40 "$WORK/build.log" >&2; die "the image did not build"; }
  BUILD_SECONDS="$(($(date +%s) - start))s"
fi
if [ "$ENGINE" = docker ]; then
  SIZE_BYTES="$(docker image inspect --format '{{.Size}}' "$IMAGE")"
else
  SIZE_BYTES="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")"
fi

# ---------------------------------------------------------------------------------------------------------------
# run and drive over HTTP
# ---------------------------------------------------------------------------------------------------------------
PORT="$(free_port)"
BASE_URL="http://127.0.0.1:$PORT"
log "run on $BASE_URL"
if [ "$ENGINE" = docker ]; then
  CONTAINER="$(docker run -d -p "127.0.0.1:$PORT:8000" -e "CORTEXLENS_WORKERS=${SMOKE_WORKERS:-1}" "$IMAGE")"
  docker exec "$CONTAINER" sh -c '[ "$(id -u)" != 0 ]' || die "the container runs as root"
else
  podman_serve "$PORT"
fi

status() { curl -s -o "${2:-/dev/null}" -w '%{http_code}' --max-time "${3:-10}" "$1" || true; }

deadline=$(($(date +%s) + READY_TIMEOUT))
while :; do
  code="$(status "$BASE_URL/readyz")"
  [ "$code" = 200 ] && break
  if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then die "the server exited"; fi
  if [ -n "$CONTAINER" ] && [ "$(docker inspect -f '{{.State.Running}}' "$CONTAINER")" != true ]; then
    die "the container exited"
  fi
  [ "$(date +%s)" -lt "$deadline" ] || die "/readyz not 200 after ${READY_TIMEOUT}s (last: $code)"
  sleep 2
done
READY_SECONDS=$(($(date +%s) - deadline + READY_TIMEOUT))
if [ -n "$SERVER_PID" ]; then
  run_uid="$(stat -c %u "/proc/$SERVER_PID")"
  [ "$run_uid" != 0 ] || die "the server runs as root"
  echo "server pid $SERVER_PID runs as uid $run_uid"
fi
HEALTHZ="$(status "$BASE_URL/healthz")"
[ "$HEALTHZ" = 200 ] || die "/healthz answered $HEALTHZ"
echo "GET /healthz -> $HEALTHZ; GET /readyz -> 200 after ${READY_SECONDS}s"
if [ "$ENGINE" = podman ]; then
  podman_healthcheck "$PORT" || die "the image's HEALTHCHECK command failed"
  HEALTH="healthy (the HEALTHCHECK command exited 0)"
else
  health_deadline=$(($(date +%s) + 120))
  while :; do
    HEALTH="$(docker inspect -f '{{.State.Health.Status}}' "$CONTAINER" 2>/dev/null || echo unknown)"
    [ "$HEALTH" = healthy ] && break
    if [ "$HEALTH" = unhealthy ] || [ "$(date +%s)" -ge "$health_deadline" ]; then
      die "the container's health is $HEALTH"
    fi
    sleep 3
  done
fi
echo "health check: $HEALTH"

PHOTO="$WORK/coffee.jpg"
"$PY" -c 'import sys
from PIL import Image
from skimage import data
Image.fromarray(data.coffee()).save(sys.argv[1], quality=90)' "$PHOTO"
POST="$(curl -s -o "$WORK/analysis.json" -w '%{http_code}' --max-time 300 \
  -F "file=@$PHOTO;type=image/jpeg" "$BASE_URL/api/v1/analyses" || true)"
echo "POST /api/v1/analyses (coffee.jpg, $(stat -c %s "$PHOTO") bytes) -> $POST"
[ "$POST" = 201 ] || { head -c 2000 "$WORK/analysis.json" >&2; echo >&2; die "the analysis answered $POST"; }

ATLAS_URL="$("$PY" -c 'import json, sys
from urllib.parse import urljoin
body = json.load(open(sys.argv[1]))
top = (body.get("predictions") or [{}])[0]
if "label" in top:
    model, label, probability = body.get("model"), top["label"], top.get("probability", 0)
    print(f"model {model}: top prediction {label} ({probability:.2f})", file=sys.stderr)
layers = body["layers"]
assert layers, "no layers in the analysis"
print(len(layers), urljoin(sys.argv[2] + "/", layers[len(layers) // 2]["atlas_url"]))' "$WORK/analysis.json" "$BASE_URL")"
N_LAYERS="${ATLAS_URL%% *}"
ATLAS_URL="${ATLAS_URL#* }"
ATLAS="$(status "$ATLAS_URL" "$WORK/atlas.png" 120)"
echo "GET ${ATLAS_URL#"$BASE_URL"} -> $ATLAS ($(stat -c %s "$WORK/atlas.png" 2>/dev/null || echo 0) bytes, $N_LAYERS layers)"
[ "$ATLAS" = 200 ] || die "the atlas answered $ATLAS"
[ "$(head -c 8 "$WORK/atlas.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || die "the atlas is not a PNG"

if [ -n "${SMOKE_ARTIFACTS:-}" ]; then
  mkdir -p "$SMOKE_ARTIFACTS"
  cp "$PHOTO" "$WORK/analysis.json" "$WORK/atlas.png" "$SMOKE_ARTIFACTS/"
fi

HTMX="$(status "$BASE_URL/static/vendor/htmx.min.js")"
echo "GET /static/vendor/htmx.min.js -> $HTMX"
[ "$HTMX" = 200 ] || echo "warning: htmx is not served at /static/vendor/htmx.min.js" >&2

log "image-smoke: OK"
echo "engine:     $ENGINE"
echo "image:      $IMAGE"
echo "build time: $BUILD_SECONDS"
echo "image size: $(human_bytes "$SIZE_BYTES") ($SIZE_BYTES bytes)"
echo "ready in:   ${READY_SECONDS}s"
