#!/usr/bin/env bash
# Runs scripts/bench/efficiency.py for one short round against the programs of this build
# and checks its table, its summary and its JSON: both throughputs measured, the CPU shares
# of the served step adding up to the machine's cores, the cluster stopped afterwards.
# Usage: efficiency_script_test.sh SOURCE_DIR BIN_DIR
set -euo pipefail
source_dir="$1"
bin_dir="$2"
python="${DEEPLAB_PYTHON:-/usr/bin/python3}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$python" "$source_dir/scripts/bench/efficiency.py" --bin "$bin_dir" --rounds 1 --duration 3 \
  --warmup 1 --concurrency 16 --batch-sizes 4 --json "$out/e.json" >"$out/log" 2>&1 ||
  { cat "$out/log"; fail "efficiency.py exited $?"; }
grep -qE '^\| 1 \| [0-9.]+ \(batch 4\) \| [0-9.]+ \(mean batch [0-9.]+\) \| [0-9.]+ \|' "$out/log" ||
  { cat "$out/log"; fail "no table row"; }
grep -q "^median efficiency [0-9.]* over 1 rounds (unary calls, concurrency 16, " "$out/log" ||
  { cat "$out/log"; fail "no summary"; }
"$python" - "$out/e.json" <<'PY' || { cat "$out/log"; fail "bad JSON"; }
import json, os, sys
doc = json.load(open(sys.argv[1]))
assert set(doc["pids"]) == {"worker", "gateway"}, doc["pids"]
row = doc["rounds"][0]
assert row["in_process"] > 0 and row["served"] > 0, row
assert abs(row["efficiency"] - row["served"] / row["in_process"]) < 1e-9, row
cpus = row["cpus"]
# The worker did the served work; the gateway and the load generator took some CPU too.
assert cpus["worker"] > 0.2 and cpus["gateway"] > 0 and cpus["load generator"] > 0, cpus
# worker + gateway + load generator + idle + rest is the machine (rest is what is left).
total = sum(cpus.values())
assert abs(total - os.cpu_count()) < 0.25 * os.cpu_count(), (total, cpus)
PY
# Bad arguments: exit 2 with a message.
set +e
"$python" "$source_dir/scripts/bench/efficiency.py" --bin "$bin_dir" --rounds 0 >"$out/bad" 2>&1
code=$?
set -e
[ $code -eq 2 ] || { cat "$out/bad"; fail "--rounds 0 exited $code, not 2"; }
grep -q "at least 1" "$out/bad" || { cat "$out/bad"; fail "no message for --rounds 0"; }
for bad in "--worker-cpus 0" "--worker-cpus 0 --other-cpus 0" "--worker-cpus x --other-cpus 1" \
  "--worker-cpus 0 --other-cpus 100000"; do
  set +e
  # shellcheck disable=SC2086
  "$python" "$source_dir/scripts/bench/efficiency.py" --bin "$bin_dir" $bad >"$out/bad" 2>&1
  code=$?
  set -e
  [ $code -eq 2 ] || { cat "$out/bad"; fail "$bad exited $code, not 2"; }
  grep -q "efficiency: " "$out/bad" || { cat "$out/bad"; fail "no message for $bad"; }
done
# The cluster it started is gone: its worker and gateway have exited.
for pid in $("$python" -c 'import json, sys; print(*json.load(open(sys.argv[1]))["pids"].values())' "$out/e.json"); do
  if kill -0 "$pid" 2>/dev/null; then fail "process $pid of its cluster is still running"; fi
done
echo "PASS: efficiency.py measured one round"
