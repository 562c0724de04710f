#!/usr/bin/env bash
# Offline checks of the deployment files, no cluster needed:
#   1. deploy/k8s/base/model-configs is in step with models/*/config.pbtxt;
#   2. every overlay builds with `kubectl kustomize`, with the components it lists itself
#      and with every combination of the other components in deploy/k8s/components
#      (added to the overlay's `components:`, as a user would);
#   3. every object of every build is valid against its API schema (unknown fields
#      refused), and the builds hang together (deploy/validate/validate.mjs says what is
#      checked), using the npm packages pinned in deploy/validate/package-lock.json;
#   4. deploy/prometheus/check.sh, when there is one.
#
# Usage: deploy/validate.sh [--gateway BINARY] [--worker BINARY] [--keep DIR] [--only LIST]
#   --gateway, --worker  also check that every flag the manifests give the containers is
#                        one these binaries know (from their --helpfull)
#   --keep DIR           also write the builds into DIR
#   --only LIST          only these builds, comma-separated names as printed (cpu,
#                        gpu+keda, ...): quicker, for tests that break one thing at a time
# Exit status: 0 valid, 1 something is wrong, 2 usage error, 77 skipped (no kubectl,
# or no node/npm for step 3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
keep=""
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --keep|--gateway|--worker|--only)
      [ $# -ge 2 ] && [ -n "$2" ] || { echo "validate.sh: $1 needs a value" >&2; exit 2; }
      case "$1" in
        --keep) keep=$2 ;;
        --only) only=$2 ;;
        --gateway) export DEEPLAB_GATEWAY_BINARY=$2 ;;
        --worker) export DEEPLAB_WORKER_BINARY=$2 ;;
      esac
      shift 2 ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "validate.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for binary in "${DEEPLAB_GATEWAY_BINARY:-}" "${DEEPLAB_WORKER_BINARY:-}"; do
  [ -z "$binary" ] || [ -x "$binary" ] || { echo "validate.sh: $binary is not an executable" >&2; exit 2; }
done

bash "$here/k8s/sync-model-configs.sh" --check

if ! command -v kubectl >/dev/null 2>&1; then
  echo "SKIPPED: kubectl not found (it builds the kustomizations; kubectl 1.27+ has kustomize v5)"
  exit 77
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A copy, so that the overlay variants sit beside the originals and their relative paths
# (../../base, ../../components/...) mean the same.
cp -r "$here/k8s" "$tmp/k8s"
mkdir -p "$tmp/builds"

components=()
for dir in "$here"/k8s/components/*/; do
  components+=("$(basename "$dir")")
done

failed=0
names=()
# build NAME DIR: renders DIR into builds/NAME.yaml in the background (each kubectl start
# costs about half a second, mostly waiting); `finish` collects the results.
build() {
  names+=("$1")
  { if kubectl kustomize "$2" > "$tmp/builds/$1.yaml" 2> "$tmp/builds/$1.err"
    then echo 0; else echo 1; fi > "$tmp/builds/$1.rc"; } &
}
finish() {
  wait
  local name
  for name in "${names[@]}"; do
    if [ "$(cat "$tmp/builds/$name.rc")" != 0 ]; then
      echo "FAIL $name: kubectl kustomize: $(cat "$tmp/builds/$name.err")"
      rm -f "$tmp/builds/$name.yaml"
      failed=1
    elif [ -s "$tmp/builds/$name.err" ]; then
      echo "note: $name: $(cat "$tmp/builds/$name.err")"
    fi
    rm -f "$tmp/builds/$name.err" "$tmp/builds/$name.rc"
  done
}

for overlay_dir in "$here"/k8s/overlays/*/; do
  overlay=$(basename "$overlay_dir")
  kustomization="$overlay_dir/kustomization.yaml"
  # What the overlay lists itself (uncommented entries) is in each of its builds; the
  # other components are added in every combination, at the same indentation.
  listed=" $(sed -nE 's#^[[:space:]]*-[[:space:]]+\.\./\.\./components/([^/[:space:]]+)/?([[:space:]].*)?$#\1#p' "$kustomization" | tr '\n' ' ')"
  indent=$(sed -nE 's#^([[:space:]]*)-[[:space:]]+\.\./\.\./components/.*#\1#p' "$kustomization" | head -n1)
  others=()
  for component in "${components[@]}"; do
    [[ "$listed" == *" $component "* ]] || others+=("$component")
  done
  for ((mask = 0; mask < (1 << ${#others[@]}); mask++)); do
    name=$overlay chosen=()
    for i in "${!others[@]}"; do
      if (( mask & (1 << i) )); then chosen+=("${others[$i]}"); name+="+${others[$i]}"; fi
    done
    [ -z "$only" ] || [[ ",$only," == *",$name,"* ]] || continue
    variant="$tmp/k8s/overlays/$overlay.variant$mask"
    cp -r "$tmp/k8s/overlays/$overlay" "$variant"
    if [ ${#chosen[@]} -gt 0 ]; then
      extra=""
      for component in "${chosen[@]}"; do extra+="${indent:-  }- ../../components/$component"$'\n'; done
      if grep -q '^components:' "$variant/kustomization.yaml"; then
        EXTRA=$extra perl -0pi -e 's/^components:\n/components:\n$ENV{EXTRA}/m' "$variant/kustomization.yaml"
      else
        printf '\ncomponents:\n%s' "$extra" >> "$variant/kustomization.yaml"
      fi
    fi
    build "$name" "$variant"
  done
done
if [ -n "$only" ] && [ ${#names[@]} -eq 0 ]; then
  echo "validate.sh: --only $only names no build" >&2; exit 2
fi
finish
echo "kubectl kustomize: ${#names[@]} builds$([ $failed -eq 0 ] || echo ', some failed')"
built=()
for file in "$tmp"/builds/*.yaml; do [ -e "$file" ] && built+=("$file"); done
if [ -n "$keep" ] && [ ${#built[@]} -gt 0 ]; then mkdir -p "$keep" && cp "${built[@]}" "$keep"/; fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "SKIPPED: node or npm not found: the builds were not checked against the API schemas"
  exit 77
fi
validate_dir="$here/validate"
# npm ci when node_modules is missing or older than the lock file; under a lock, since two
# build trees' ctest runs may start this script side by side.
install_packages() {
  if [ ! -f "$validate_dir/node_modules/.package-lock.json" ] ||
     [ "$validate_dir/package-lock.json" -nt "$validate_dir/node_modules/.package-lock.json" ]; then
    echo "npm ci in $validate_dir"
    (cd "$validate_dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
lock="${TMPDIR:-/tmp}/deeplab-deploy-validate-npm.lock"
if command -v flock >/dev/null 2>&1; then
  installed=$( { flock 9; install_packages; } 9>> "$lock" 2>&1 ) || {
    echo "$installed"; echo "FAIL: npm ci in $validate_dir (it needs the npm registry once)"; exit 1; }
else
  installed=$(install_packages 2>&1) || {
    echo "$installed"; echo "FAIL: npm ci in $validate_dir (it needs the npm registry once)"; exit 1; }
fi
[ -z "$installed" ] || echo "$installed"

# deploy/prometheus's objects (PodMonitor, PrometheusRule) are applied on their own: only
# their schemas are checked here; check.sh below does the rest.
alone=()
for file in "$here"/prometheus/*.yaml; do [ -e "$file" ] && alone+=("$file"); done
if [ $((${#built[@]} + ${#alone[@]})) -gt 0 ] &&
   ! node "$validate_dir/validate.mjs" "${built[@]}" --schema-only "${alone[@]}"; then
  failed=1
fi

if [ -f "$here/prometheus/check.sh" ]; then
  set +e
  bash "$here/prometheus/check.sh"
  rc=$?
  set -e
  case $rc in
    0) ;;
    77) echo "note: deploy/prometheus/check.sh skipped" ;;
    *) echo "FAIL: deploy/prometheus/check.sh exited $rc"; failed=1 ;;
  esac
fi

if [ $failed -ne 0 ]; then echo "deploy/validate.sh: FAILED"; exit 1; fi
echo "deploy/validate.sh: OK"
