#!/usr/bin/env bash
# Builds and tests the CPU container images (deploy/docker/Dockerfile) with podman, as root,
# on a Debian 12 machine that has no Docker engine and reaches no container registry.
#
# Usage: scripts/containers.sh build     make the base image if missing, then the images
#        scripts/containers.sh test      run a worker and a gateway, segment the demo samples
#        scripts/containers.sh clean     remove the images this script made (base included)
#        scripts/containers.sh --help
#
# build: apt-installs debootstrap, podman and runc when missing. Without a registry there is
#   no debian:bookworm-slim to start FROM, so the base image localhost/deeplab-debian:bookworm
#   is made with `debootstrap --variant=minbase` from the machine's own Debian mirror and
#   `podman import`ed (skipped when it exists). Then the Dockerfile's build stage and the
#   gateway and worker images: localhost/deeplab-{gateway,worker}:$DEEPLAB_IMAGE_TAG.
# test: starts the worker and the gateway containers with their default arguments on a
#   podman network of their own (DEEPLAB_TEST_NETWORK=host: on the host's loopback instead;
#   either way the host side uses free ports from 18000), waits until demo is ready, segments
#   models/demo/samples/images with the deeplab client of the gateway image, checks every
#   label map (size, and agreement with models/demo/samples/labels when Debian's python3 has
#   numpy and PIL), checks both /metrics endpoints and that both servers exit 0 on SIGTERM.
#   Results: deeplab-out/containers/. Containers are removed however the test ends.
#
# Environment: DEEPLAB_IMAGE_TAG (latest), DEEPLAB_BASE_IMAGE (localhost/deeplab-debian:bookworm;
#   any Debian 12 image, e.g. docker.io/library/debian:bookworm-slim where a registry is
#   reachable), DEEPLAB_DEBIAN_MIRROR / DEEPLAB_DEBIAN_SECURITY_MIRROR (default: the ones in
#   this machine's apt sources), JOBS (compile jobs, 2), DEEPLAB_OCI_RUNTIME (runc),
#   DEEPLAB_TEST_NETWORK (bridge or host), DEEPLAB_TEST_PORT (first host port tried, 18000).
# Exit status: 0 on success, 1 on a failure (with the reason), 2 on a usage error.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tag=${DEEPLAB_IMAGE_TAG:-latest}
base_image=${DEEPLAB_BASE_IMAGE:-localhost/deeplab-debian:bookworm}
build_image=localhost/deeplab-build:$tag
gateway_image=localhost/deeplab-gateway:$tag
worker_image=localhost/deeplab-worker:$tag
jobs=${JOBS:-2}
oci_runtime=${DEEPLAB_OCI_RUNTIME:-runc}
dockerfile=$root/deploy/docker/Dockerfile

log() { printf '[containers] %s\n' "$*"; }
die() { printf '[containers] FAILED: %s\n' "$*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

# crun, podman's preferred runtime, is not in this machine's install; runc is. Every podman
# call, builds included (their RUN steps), goes through this.
pm() { podman --runtime "$oci_runtime" "$@"; }

# Phase timings, printed at the end of each command.
timings=()
phase_start=0
start_phase() { phase_start=$(date +%s.%N); log "== $1"; }
end_phase() {
  local seconds
  seconds=$(awk -v a="$phase_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  timings+=("$(printf '%-28s %8s s' "$1" "$seconds")")
  log "== $1: ${seconds} s"
}
print_timings() {
  [ ${#timings[@]} -gt 0 ] || return 0
  log "timings:"
  printf '  %s\n' "${timings[@]}"
}

image_size() { pm image inspect --format '{{.Size}}' "$1" 2>/dev/null || echo 0; }
print_sizes() {
  local image size
  log "image sizes:"
  for image in "$base_image" "$build_image" "$gateway_image" "$worker_image"; do
    if pm image exists "$image"; then
      size=$(image_size "$image")
      printf '  %-44s %8s MB  (%s bytes)\n' "$image" "$((size / 1000000))" "$size"
    fi
  done
}

need_root() {
  [ "$(id -u)" -eq 0 ] || die "run as root: rootful podman and debootstrap (try sudo)"
}

ensure_tools() {
  local missing=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The first URI of this machine's apt sources whose path ends in $1 ("debian" or
# "debian-security"), so that debootstrap uses the mirror (or proxy) the machine can reach.
machine_mirror() {
  local want=$1 uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' |
        grep -E "/$want/?\$" | head -n1 || true)
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '/^deb / { print $2 }' /etc/apt/sources.list | grep -E "/$want/?\$" | head -n1 || true)
  fi
  printf '%s\n' "${uri:-http://deb.debian.org/$want}"
}

# Mounts debootstrap may leave behind after a failure; removing the tree through them would
# reach into the host's /proc or /dev.
remove_rootfs() {
  local dir=$1
  [ -d "$dir" ] || return 0
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
    while IFS= read -r mount; do umount -l "$mount" 2>/dev/null || true; done
  rm -rf --one-file-system "$dir"
}

make_base_image() {
  if pm image exists "$base_image"; then
    log "base image $base_image exists: kept (clean removes it)"
    return 0
  fi
  case "$base_image" in
    localhost/*) ;;
    *) log "base image $base_image is not local: the build pulls it"; return 0 ;;
  esac
  local mirror security rootfs
  mirror=${DEEPLAB_DEBIAN_MIRROR:-$(machine_mirror debian)}
  security=${DEEPLAB_DEBIAN_SECURITY_MIRROR:-$(machine_mirror debian-security)}
  rootfs=$(mktemp -d /var/tmp/deeplab-rootfs.XXXXXX)
  cleanup_dirs+=("$rootfs")

  start_phase "debootstrap"
  log "debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 ||
    { tail -n 30 "$rootfs.log" >&2; die "debootstrap failed (log above, full log $rootfs.log)"; }
  rm -f "$rootfs.log"

  # What debian:bookworm-slim has and debootstrap does not: the updates and security
  # suites, and dpkg leaving out documentation and translations (images never show them;
  # copyright files stay).
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/deeplab-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/deeplab-slim" <<'EOF'
Acquire::Languages "none";
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  rm -rf "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
  # podman supplies these per container.
  rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
  : >"$rootfs/etc/machine-id"
  end_phase "debootstrap"

  start_phase "base image import"
  tar --numeric-owner --xattrs -C "$rootfs" -c . |
    pm import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' \
      --change "LABEL org.opencontainers.image.description=\"Debian 12 minbase by debootstrap from $mirror\"" \
      - "$base_image" >/dev/null
  remove_rootfs "$rootfs"
  end_phase "base image import"
}

build_target() {
  local target=$1 image=$2 revision
  revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git -C "$root" status --porcelain 2>/dev/null)" ]; then revision+="-dirty"; fi
  # --network host: the RUN steps' apt-get reaches the mirror without a bridge network.
  # --pull=missing: a local base image is used as it is; no registry is asked about it.
  pm build --network host --pull=missing --layers \
    -f "$dockerfile" --target "$target" -t "$image" \
    --build-arg BASE_IMAGE="$base_image" --build-arg JOBS="$jobs" \
    --build-arg REVISION="$revision" \
    "$root"
}

cmd_build() {
  need_root
  ensure_tools debootstrap podman runc
  make_base_image
  start_phase "build stage (compile)"
  build_target build "$build_image"
  end_phase "build stage (compile)"
  start_phase "gateway image"
  build_target gateway "$gateway_image"
  end_phase "gateway image"
  start_phase "worker image"
  build_target worker "$worker_image"
  end_phase "worker image"
  print_timings
  print_sizes
}

# --- test ------------------------------------------------------------------------------

port_free() { [ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }
# Four consecutive free ports from $1 (gateway, worker, gateway metrics, worker metrics).
free_ports() {
  local p=$1
  while [ "$p" -lt 60000 ]; do
    if port_free "$p" && port_free $((p + 1)) && port_free $((p + 2)) && port_free $((p + 3)); then
      echo "$p"; return 0
    fi
    p=$((p + 10))
  done
  return 1
}

containers=()
cleanup_dirs=()
limits=()
network=
network_mode=${DEEPLAB_TEST_NETWORK:-bridge}
cleanup() {
  local name dir
  for name in "${containers[@]+"${containers[@]}"}"; do
    pm rm -f -t 0 "$name" >/dev/null 2>&1 || true
  done
  if [ -n "$network" ]; then pm network rm -f "$network" >/dev/null 2>&1 || true; fi
  for dir in "${cleanup_dirs[@]+"${cleanup_dirs[@]}"}"; do remove_rootfs "$dir"; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_logs() {
  local name
  for name in "${containers[@]+"${containers[@]}"}"; do
    printf '\n----- last lines of %s -----\n' "$name" >&2
    pm logs --tail 30 "$name" >&2 2>&1 || true
  done
}
fail() { show_logs; die "$*"; }

# Pixel agreement of each label map with the true labels (the demo scores mIoU 0.93, so a
# working stack agrees on well over 80% of the pixels; a broken one, e.g. a wrong channel
# order, does not).
check_agreement() {
  local out=$1 truth=$2
  /usr/bin/python3 - "$out" "$truth" <<'EOF'
import pathlib, sys
import numpy as np
from PIL import Image
out, truth = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
worst = 1.0
for t in sorted(truth.glob("*.png")):
    p = np.array(Image.open(out / f"{t.stem}_label.png"))
    g = np.array(Image.open(t))
    agree = float((p == g).mean())
    worst = min(worst, agree)
    print(f"  {t.stem}: {agree:.3f} of the pixels agree with the true labels")
sys.exit(0 if worst >= 0.80 else 1)
EOF
}

cmd_test() {
  need_root
  local image
  for image in "$gateway_image" "$worker_image"; do
    pm image exists "$image" || die "no image $image: run scripts/containers.sh build first"
  done
  local samples=$root/models/demo/samples
  [ -d "$samples/images" ] || die "no samples in $samples/images"

  start_phase "test"
  local first gp wp gmp wmp
  first=$(free_ports "${DEEPLAB_TEST_PORT:-18000}") || die "no four free ports from 18000"
  gp=$first wp=$((first + 1)) gmp=$((first + 2)) wmp=$((first + 3))
  # podman asks runc for 1048576 open files and processes per container, which needs
  # CAP_SYS_RESOURCE when the host's limits are lower; a sandboxed root (this machine's) may
  # lack that capability, and the container then fails to start with "error setting
  # rlimit". The servers need far less: stay within what the host grants.
  local nofile
  nofile=$(ulimit -Hn)
  case "$nofile" in unlimited|'') nofile=65536 ;; esac
  [ "$nofile" -le 65536 ] || nofile=65536
  limits=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=8192:8192)

  local worker=deeplab-test-worker-$$ gateway=deeplab-test-gateway-$$ client=deeplab-test-client-$$
  local out=$root/deeplab-out/containers
  rm -rf "$out" && mkdir -p "$out"
  # The client runs as uid 10001, like the servers.
  chown 10001:10001 "$out"

  # bridge: the images run as in a cluster, with their default ports and arguments, on a
  # network of their own; the host reaches the metrics through published loopback ports.
  # host: everything on the host's loopback, for machines where podman networks do not work.
  local gateway_addr worker_ip
  local -a net_worker net_gateway net_client worker_args gateway_args
  case "$network_mode" in
    bridge)
      network=deeplab-test-$$
      pm network create "$network" >/dev/null || die "podman network create failed (try DEEPLAB_TEST_NETWORK=host)"
      net_worker=(--network "$network" -p "127.0.0.1:$wmp:9101")
      net_gateway=(--network "$network" -p "127.0.0.1:$gp:8000" -p "127.0.0.1:$gmp:9100")
      net_client=(--network "$network")
      worker_args=()
      ;;
    host)
      net_worker=(--network host) net_gateway=(--network host) net_client=(--network host)
      worker_args=(--host=127.0.0.1 --port="$wp" --metrics-port="$wmp")
      ;;
    *) die "DEEPLAB_TEST_NETWORK must be bridge or host, not $network_mode" ;;
  esac

  log "worker  $worker_image (network $network_mode; metrics on 127.0.0.1:$wmp)"
  containers+=("$worker")
  pm run -d --name "$worker" "${net_worker[@]}" "${limits[@]}" "$worker_image" \
    "${worker_args[@]+"${worker_args[@]}"}" >/dev/null ||
    fail "the worker container did not start"
  if [ "$network_mode" = bridge ]; then
    worker_ip=$(pm inspect --format "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$worker")
    [ -n "$worker_ip" ] || fail "the worker container has no address on $network"
    gateway_args=(--workers="$worker_ip:8001")
  else
    gateway_args=(--host=127.0.0.1 --port="$gp" --metrics-port="$gmp" --workers="127.0.0.1:$wp")
  fi
  log "gateway $gateway_image (${gateway_args[*]}; gRPC on 127.0.0.1:$gp, metrics :$gmp)"
  containers+=("$gateway")
  pm run -d --name "$gateway" "${net_gateway[@]}" "${limits[@]}" "$gateway_image" \
    "${gateway_args[@]}" >/dev/null ||
    fail "the gateway container did not start"
  if [ "$network_mode" = bridge ]; then
    gateway_addr=$(pm inspect --format "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$gateway"):8000
  else
    gateway_addr=127.0.0.1:$gp
  fi

  # In short rounds, so that a server that exits is reported at once, not after the timeout.
  log "waiting for the demo weight set (deeplab wait inside the gateway container)"
  local deadline=$((SECONDS + 120)) name
  until pm exec "$gateway" deeplab wait --server "$gateway_addr" --model demo --timeout 5s >/dev/null 2>&1; do
    for name in "$worker" "$gateway"; do
      [ "$(pm inspect --format '{{.State.Running}}' "$name")" = true ] ||
        fail "$name exited with status $(pm inspect --format '{{.State.ExitCode}}' "$name")"
    done
    [ $SECONDS -lt $deadline ] || fail "the gateway did not report demo ready within 120 s"
  done
  log "demo is ready"

  local count
  count=$(find "$samples/images" -maxdepth 1 -name '*.png' | wc -l)
  log "segmenting $count samples with the gateway image's deeplab client, via $gateway_addr"
  containers+=("$client")
  pm run --rm --name "$client" "${net_client[@]}" "${limits[@]}" --entrypoint deeplab \
    -v "$samples/images:/samples:ro" -v "$out:/out" "$gateway_image" \
    segment --server "$gateway_addr" --model demo --out /out --quiet /samples ||
    fail "deeplab segment failed"

  local img name want got checked=0
  for img in "$samples"/images/*.png; do
    name=$(basename "$img" .png)
    [ -s "$out/${name}_label.png" ] || fail "no label map $out/${name}_label.png"
    [ -s "$out/$name.json" ] || fail "no report $out/$name.json"
    [ -s "$out/${name}_overlay.png" ] || fail "no overlay $out/${name}_overlay.png"
    want=$(file -b "$img" | grep -oE '[0-9]+ x [0-9]+')
    got=$(file -b "$out/${name}_label.png")
    case "$got" in
      "PNG image data, $want, 8-bit grayscale"*) ;;
      *) fail "$name: label map is '$got', expected an 8-bit grey PNG of $want" ;;
    esac
    grep -q '"class_areas": \[' "$out/$name.json" || fail "$name.json has no class_areas"
    checked=$((checked + 1))
  done
  log "$checked label maps came back, each the size of its image"
  if /usr/bin/python3 -c 'import numpy, PIL' 2>/dev/null; then
    check_agreement "$out" "$samples/labels" || fail "label maps disagree with the true labels"
  else
    log "(Debian's python3 lacks numpy or PIL: label agreement not checked)"
  fi

  # Read whole before grep: `curl | grep -q` under pipefail fails when grep stops early.
  local port metrics
  for port in "$gmp" "$wmp"; do
    metrics=$(curl -fsS "http://127.0.0.1:$port/metrics") ||
      fail "http://127.0.0.1:$port/metrics did not answer"
    grep -q '^deeplab_' <<<"$metrics" || fail "no deeplab_ metrics on http://127.0.0.1:$port/metrics"
  done
  log "both /metrics endpoints answer"

  # The servers run as PID 1 in their containers: SIGTERM must still drain and end them.
  local name code
  for name in "$gateway" "$worker"; do
    pm stop -t 30 "$name" >/dev/null
    code=$(pm inspect --format '{{.State.ExitCode}}' "$name")
    [ "$code" = 0 ] || fail "$name exited with status $code on SIGTERM"
  done
  log "both servers exited 0 on SIGTERM"
  end_phase "test"
  print_timings
  print_sizes
  log "PASSED: results in ${out#"$root"/}/"
}

cmd_clean() {
  need_root
  local image
  for image in "$worker_image" "$gateway_image" "$build_image" "$base_image"; do
    if pm image exists "$image"; then pm rmi "$image" >/dev/null && log "removed $image"; fi
  done
  pm image prune -f >/dev/null
}

case "${1:-}" in
  build) shift; [ $# -eq 0 ] || { usage >&2; exit 2; }; cmd_build ;;
  test) shift; [ $# -eq 0 ] || { usage >&2; exit 2; }; cmd_test ;;
  clean) shift; [ $# -eq 0 ] || { usage >&2; exit 2; }; cmd_clean ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
