#!/usr/bin/env bash
# deeplab-inspect and deeplab-convert as a user runs them: output, exit codes, messages.
# Usage: tools_test.sh BIN_DIR PYTHON SOURCE_DIR
set -euo pipefail
bin=$1 python=$2 src=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() {  # expect NEEDLE HAYSTACK
  case "$2" in *"$1"*) ;; *) fail "expected '$1' in: $2" ;; esac
}

out=$("$bin/deeplab-inspect" --arch xception65 --classes 21 --input 65x65)
expect '"parameters_total": 41258213' "$out"
expect '"parameters_trainable": 41055413' "$out"
expect '"parameters_bn_folded": 40954013' "$out"
expect '"output_stride": 16' "$out"
"$python" -c 'import json,sys; json.loads(sys.argv[1])' "$out" || fail "not JSON: $out"
out=$("$bin/deeplab-inspect" --arch xception65 --classes 19 --output-stride 8 --input 65x65)
expect '"parameters_total": 41257699' "$out"
expect '"output_stride": 8' "$out"
out=$("$bin/deeplab-inspect" --arch xception65 --classes 2 --input 65x65)
expect '"parameters_total": 41253330' "$out"
expect '"logits_layer": "custom_logits_semantic"' "$out"
out=$("$bin/deeplab-inspect" --arch mobilenetv2 --classes 21 --input 65x65)
expect '"parameters_total": 2146645' "$out"
expect '"parameters_bn_folded": 2097013' "$out"
expect '"output_stride": 8' "$out"

set +e
err=$("$bin/deeplab-inspect" --arch xception71 2>&1); rc=$?
set -e
[ $rc -eq 2 ] || fail "unknown arch: exit $rc"
expect "unknown backbone 'xception71'" "$err"
set +e
err=$("$bin/deeplab-inspect" --input 12 2>&1); rc=$?
set -e
[ $rc -eq 2 ] || fail "bad --input: exit $rc"
expect "HxW" "$err"
# Abseil's own refusals (unknown flag, malformed value) are exit 2 as well, not Abseil's 1.
for tool in deeplab-inspect deeplab-convert deeplab-train; do
  set +e
  err=$("$bin/$tool" --no-such-flag 2>&1); rc=$?
  set -e
  [ $rc -eq 2 ] || fail "$tool --no-such-flag: exit $rc"
  expect "Unknown command line flag 'no_such_flag'" "$err"
done
set +e
err=$("$bin/deeplab-convert" --classes=many 2>&1); rc=$?
set -e
[ $rc -eq 2 ] || fail "deeplab-convert --classes=many: exit $rc"
expect "Illegal value 'many'" "$err"

"$python" "$src/tests/tools/make_keras_h5.py" --arch mobilenetv2 --classes 21 --out "$tmp/voc.h5" >/dev/null
out=$("$bin/deeplab-convert" --arch mobilenetv2 --classes 21 --from "$tmp/voc.h5" --to "$tmp/voc.dlck")
expect "wrote $tmp/voc.dlck" "$out"
[ -s "$tmp/voc.dlck" ] || fail "no checkpoint written"
set +e
err=$("$bin/deeplab-convert" --arch mobilenetv2 --classes 19 --from "$tmp/voc.h5" --to "$tmp/x.dlck" 2>&1); rc=$?
set -e
[ $rc -eq 1 ] || fail "class mismatch: exit $rc"
expect "$tmp/voc.h5" "$err"
[ ! -e "$tmp/x.dlck" ] || fail "a failed conversion left a file"
"$python" "$src/tests/tools/make_keras_h5.py" --arch mobilenetv2 --classes 21 --defect misshaped --out "$tmp/bad.h5" >/dev/null
set +e
err=$("$bin/deeplab-convert" --arch mobilenetv2 --classes 21 --from "$tmp/bad.h5" --to "$tmp/y.dlck" 2>&1); rc=$?
set -e
[ $rc -eq 1 ] || fail "mis-shaped: exit $rc"
expect "mis-shaped tensor" "$err"
# A file that crashes libhdf5 itself (tests/workers/data): the reader's child process dies,
# the tool reports it and exits 1 (before the fix it died of SIGSEGV, exit 139).
set +e
err=$("$bin/deeplab-convert" --arch mobilenetv2 --classes 2 \
  --from "$src/tests/workers/data/libhdf5_crash_global_heap.h5" --to "$tmp/z.dlck" 2>&1); rc=$?
set -e
[ $rc -eq 1 ] || fail "hostile HDF5 file: exit $rc: $err"
expect "the HDF5 library crashed" "$err"
[ ! -e "$tmp/z.dlck" ] || fail "a failed conversion left a file"
# The reader process dies with the tool: killed while its reader is blocked for good (on a
# FIFO with no writer, as libhdf5 can loop forever on a damaged file), the tool leaves no
# process behind.
mkfifo "$tmp/fifo.h5"
"$bin/deeplab-convert" --arch mobilenetv2 --classes 2 --from "$tmp/fifo.h5" --to "$tmp/f.dlck" \
  >/dev/null 2>&1 &
convert=$!
children_of() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
alive() {  # a process that exists and is not a zombie
  local state
  state=$(sed 's/.*) //' /proc/"$1"/stat 2>/dev/null | cut -d' ' -f1) || true
  [ -n "$state" ] && [ "$state" != Z ]
}
reader=""
for _ in $(seq 300); do
  reader=$(children_of $convert | awk '{print $1}')
  [ -n "$reader" ] && break
  sleep 0.1
done
[ -n "$reader" ] || { kill -KILL $convert; fail "deeplab-convert started no reader process"; }
kill -KILL $convert
wait $convert 2>/dev/null || true
for _ in $(seq 50); do alive "$reader" || break; sleep 0.1; done
if alive "$reader"; then
  kill -KILL "$reader"
  fail "the reader process $reader outlived deeplab-convert"
fi
set +e
err=$("$bin/deeplab-convert" --arch mobilenetv2 --classes 21 2>&1); rc=$?
set -e
[ $rc -eq 2 ] || fail "missing flags: exit $rc"
echo "tools_test: all checks passed"
