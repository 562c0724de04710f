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
  "--batch-sizes 1,,2" "--no-such-flag"; do
  # shellcheck disable=SC2086  # split on purpose: each case is a flag and its value
  if bash "$script" $bad --out "$out/bad" >"$out/bad.log" 2>&1; then
    fail "benchmark_eager.sh $bad succeeded"
  else
    rc=$?
    [ $rc -eq 2 ] || { cat "$out/bad.log"; fail "benchmark_eager.sh $bad exited $rc, not 2"; }
  fi
  grep -q "benchmark_eager: " "$out/bad.log" || { cat "$out/bad.log"; fail "$bad: no reason given"; }
  [ ! -e "$out/bad" ] || fail "$bad: wrote output before refusing"
done

bash "$script" --quick --size 96x96 --batch-sizes 1,2 --precisions fp32 --out "$out/b" \
  >"$out/log" 2>&1 || { cat "$out/log"; fail "benchmark_eager.sh exited $?"; }
report="$out/b/results.md"
[ -s "$report" ] || { cat "$out/log"; fail "no results.md"; }
for arch in xception65 mobilenetv2; do
  for batch in 1 2; do
    grep -qE "^\| $arch \| fp32 \| $batch \| cpu fp32[^|]* \|( [0-9.]+ \|){3} \*\*[0-9.]+\*\* \|( [0-9.]+ \|){2}$" \
      "$report" || { cat "$report"; fail "no row for $arch batch $batch"; }
  done
done
echo "PASS: benchmark_eager.sh --quick wrote every row"
