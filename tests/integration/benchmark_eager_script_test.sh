#!/usr/bin/env bash
# Runs scripts/benchmark_eager.sh --quick on the CPU against the programs of this build, small
# enough to be cheap, and checks that it wrote a table row with numbers for every network and
# batch size, that the worker's engine had no errors, and that bad arguments are refused
# with exit code 2 before anything runs.
# Usage: benchmark_eager_script_test.sh SOURCE_DIR BIN_DIR
set -euo pipefail
source_dir="$1"
export DEEPLAB_BIN="$2"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
script="$source_dir/scripts/benchmark_eager.sh"

for bad in "--device tpu" "--archs resnet50" "--precisions fp8" "--size 0x64" \
  "--batch-sizes 1,,2" "--no-such-flag" "--quick --size"; do
  # shellcheck disable=SC2086  # split on purpose: each case is a flag and its value
  # --out first, so that a flag left without its value is the last argument.
  if bash "$script" --out "$out/bad" $bad >"$out/bad.log" 2>&1; then
    fail "benchmark_eager.sh $bad succeeded"
  else
    rc=$?
    [ $rc -eq 2 ] || { cat "$out/bad.log"; fail "benchmark_eager.sh $bad exited $rc, not 2"; }
  fi
  grep -q "benchmark_eager: " "$out/bad.log" || { cat "$out/bad.log"; fail "$bad: no reason given"; }
  [ ! -e "$out/bad" ] || fail "$bad: wrote output before refusing"
done

rc=0
bash "$script" --quick --size 96x96 --batch-sizes 1,2 --precisions fp32 --out "$out/b" \
  >"$out/log" 2>&1 || rc=$?
if [ $rc -ne 0 ]; then
  sleep 1  # the script's own log is written through tee, which may still be flushing
  cat "$out/log" "$out/b/benchmark.log" 2>/dev/null || true
  fail "benchmark_eager.sh exited $rc"
fi
report="$out/b/results.md"
[ -s "$report" ] || { cat "$out/log"; fail "no results.md"; }
for arch in xception65 mobilenetv2; do
  for batch in 1 2; do
    grep -qE "^\| $arch \| fp32 \| $batch \| cpu fp32[^|]* \|( [0-9.]+ \|){3} \*\*[0-9.]+\*\* \|( [0-9.]+ \|){2}$" \
      "$report" || { cat "$report"; fail "no row for $arch batch $batch"; }
  done
done
# Eager ran with the allocator the worker's programs link (tcmalloc), as docs/performance.md says.
allocator=$(ldd "$DEEPLAB_BIN/deeplab-bench" | awk '/libtcmalloc/ && !found {print $3; found = 1}')
[ -n "$allocator" ] || fail "deeplab-bench does not link tcmalloc"
grep -qF "allocator (worker and eager): $allocator" "$out/b/machine.txt" ||
  { cat "$out/b/machine.txt"; fail "eager did not get the worker's allocator"; }
echo "PASS: benchmark_eager.sh --quick wrote every row"
