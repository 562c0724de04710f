#!/usr/bin/env bash
# scripts/gpu_check.sh in its CPU mode: the run a GPU machine makes, on this machine's CPU at
# 128x128. Downloads the .debs as `prepare` does for a GPU machine (falling back to the
# system's packages when apt cannot download them here), and needs every stage and the table
# to succeed: the
# device label restore identical to the CPU's, the demo weights' labels within 1% in every
# precision, speeds of the network, the batch path and eager PyTorch. Also: bad arguments
# exit 2 before anything runs.
# With PREBUILT (CMake's deeplab-gpu-check, built from the same sources) the script's own
# compile is skipped, which saves CI about 3 minutes on 2 cores; the script's source list
# is then checked against CMake's instead, so that it still links on a GPU machine. Without
# PREBUILT the script compiles as it does there.
#   gpu_check_script_test.sh SOURCE_DIR [PREBUILT]
set -euo pipefail
src=$1
prebuilt=${2:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$src"

for bad in "" "bogus" "run --device tpu" "run --out" "run --quick --fast"; do
  # shellcheck disable=SC2086
  if bash scripts/gpu_check.sh $bad >"$tmp/bad.log" 2>&1; then
    echo "FAIL: gpu_check.sh '$bad' succeeded"; exit 1
  fi
  code=0; bash scripts/gpu_check.sh $bad >/dev/null 2>&1 || code=$?
  [ "$code" = 2 ] || { echo "FAIL: gpu_check.sh '$bad' exited $code, not 2"; cat "$tmp/bad.log"; exit 1; }
  grep -q "^usage: scripts/gpu_check.sh" "$tmp/bad.log" || { echo "FAIL: no usage for '$bad'"; exit 1; }
done

if [ -n "$prebuilt" ]; then
  # What the script compiles (its SRCS, under workers/) must be what CMake links into
  # deeplab-gpu-check: the model, weights and batch path libraries and tools/gpu_check.cc,
  # with weights/keras_h5.cc replaced by scripts/gpu/keras_h5_stub.cc (no HDF5 there).
  cmake_srcs=$(awk '/^add_library\((deeplab_model|deeplab_weights|deeplab_batch_path) /{f=1}
                    f{print} f && /\)/{f=0}' workers/CMakeLists.txt |
               grep -o '[a-z_0-9/]*\.cc' | grep -v '^weights/keras_h5\.cc$' | sort)
  cmake_srcs=$(printf '%s\ntools/gpu_check.cc\n' "$cmake_srcs" | sort)
  script_srcs=$(B=/nonexistent; eval "$(sed -n '/^SRCS=(/,/)$/p' scripts/gpu_check.sh)"
                printf '%s\n' "${SRCS[@]}" | sed -n 's|^workers/||p' | sort)
  [ -n "$cmake_srcs" ] || { echo "FAIL: no sources found in workers/CMakeLists.txt"; exit 1; }
  if [ "$cmake_srcs" != "$script_srcs" ]; then
    echo "FAIL: scripts/gpu_check.sh's SRCS and CMake's deeplab-gpu-check sources differ:"
    diff <(echo "$cmake_srcs") <(echo "$script_srcs") || true
    exit 1
  fi
  export GPU_CHECK_PREBUILT=$prebuilt
fi
export GPU_CHECK_DIR=$tmp/check
if ! bash scripts/gpu_check.sh prepare >"$tmp/prepare.log" 2>&1; then
  echo "note: apt-get download failed here; building against the system's packages"
  cat "$tmp/prepare.log"
fi
status=0
DEEPLAB_PYTHON=${DEEPLAB_PYTHON:-/usr/bin/python3} \
  bash scripts/gpu_check.sh run --device cpu --quick --out "$tmp/out" >"$tmp/run.log" 2>&1 || status=$?
if [ $status != 0 ]; then
  echo "FAIL: gpu_check.sh run exited $status"; tail -60 "$tmp/run.log"; exit 1
fi
cat "$tmp/out/table.md"
if [ -e "$GPU_CHECK_DIR/debs/libprotobuf-dev.deb" ] || compgen -G "$GPU_CHECK_DIR/debs/*.deb" >/dev/null; then
  grep -q "dependencies: the .debs in" "$tmp/out/log.txt" || { echo "FAIL: the .debs were not used"; exit 1; }
fi
for want in "restore photo 427x640 | 0 of" "restore tiles" "precision auto (demo)" \
            "| net (nchw) |" "| net (channels_last) |" "| path, 2 in flight" \
            "| pytorch 1.13" "| batch path (2 in flight) / network |" "| network / PyTorch's best |"; do
  grep -qF "$want" "$tmp/out/table.md" || { echo "FAIL: the table lacks '$want'"; exit 1; }
done
grep -q "FAILED" "$tmp/out/table.md" && { echo "FAIL: a check failed"; exit 1; }
grep -c "^RESULT" "$tmp/out/log.txt"
echo "gpu_check_script_test: ok"
