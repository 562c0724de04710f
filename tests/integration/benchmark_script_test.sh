#!/usr/bin/env bash
# Runs scripts/benchmark.sh --quick against the programs of this build and checks that it
# wrote every table of docs/BENCHMARKS.md with numbers in it, and stopped its clusters.
# Usage: benchmark_script_test.sh SOURCE_DIR BIN_DIR
set -euo pipefail
source_dir="$1"
export DEEPLAB_BIN="$2"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

bash "$source_dir/scripts/benchmark.sh" --quick --out "$out/b" >"$out/log" 2>&1 ||
  { cat "$out/log"; fail "benchmark.sh exited $?"; }
report="$out/b/results.md"
[ -s "$report" ] || fail "no results.md"
for heading in "Serving efficiency" "In-process, by batch size" "Dynamic batching on" \
  "The gateway's own cost" "Request rate ceiling" "One worker and two" \
  "Where the time goes inside the worker" "Beside a naive Python server"; do
  grep -q "### $heading" "$report" || { cat "$report"; fail "no table '$heading'"; }
done
# Every table has at least one data row with a number in it.
rows=$(grep -cE '^\| [^-].*[0-9]' "$report")
[ "$rows" -ge 20 ] || { cat "$report"; fail "only $rows table rows with numbers"; }
grep -q "gateway's overhead" "$report" || fail "no overhead row"
# Every request of every step succeeded except where the client itself overloads a worker
# on purpose (straight to the worker at concurrency 64: RESOURCE_EXHAUSTED is its answer).
for f in "$out"/b/json/*.json; do
  case "$(basename "$f")" in tiny_ceiling_direct.json) continue ;; esac
  "${DEEPLAB_PYTHON:-/usr/bin/python3}" - "$f" <<'PY' || fail "errors in $(basename "$f")"
import json, sys
doc = json.load(open(sys.argv[1]))
bad = [s for s in doc["steps"] if s.get("error_count", 0) or s.get("errors", "-") not in ("-", "", {})]
sys.exit(1 if bad else 0)
PY
done
# The clusters are down: nothing recorded as running.
[ ! -s "$out/b/cluster/pids" ] || fail "a cluster was left running"
echo "PASS: benchmark.sh --quick wrote $rows table rows"
