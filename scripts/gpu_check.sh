#!/usr/bin/env bash
# The GPU check: the worker's device code (model, weights, batch path) built against the
# LibTorch of a machine that has only a pip PyTorch, checked against the CPU and timed beside
# PyTorch eager and torch.compile on the same network, in one run. Prints one table.
#
#   bash scripts/gpu_check.sh prepare
#       On a Debian machine with apt (this project's CPU machine): downloads the Debian
#       packages the build needs (Abseil, Protobuf, zlib) into .gpu-check/debs (ignored by
#       git: name it in the device tool's `carry`), about 10 MB.
#   bash scripts/gpu_check.sh run [--device cuda|cpu] [--quick] [--out DIR]
#       Builds in /tmp/deeplab-gpu-check, then runs the stages below, each with its own time
#       limit, appending RESULT lines to DIR/log.txt as it goes (DIR: $OUT, else
#       /tmp/deeplab-gpu-check/out), so a stage that overruns keeps what finished. Uses the
#       .debs when .gpu-check/debs has them, else the system's headers and libraries.
#       --quick: small inputs and short timings (CI runs `run --device cpu --quick`).
#       GPU_CHECK_PREBUILT=FILE: skip the compile and run FILE, a deeplab-gpu-check built
#       from the same sources by CMake (CI does: the CMake build already compiled them, and
#       its test checks that this script's source list matches CMake's).
#
# On a GPU machine (about 8 minutes at full size): `bash scripts/gpu_check.sh run`.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CHECK_DIR=${GPU_CHECK_DIR:-$ROOT/.gpu-check}
DEBS=(libabsl-dev libabsl20220623 libprotobuf-dev libprotobuf32 protobuf-compiler libprotoc32
      zlib1g-dev)

usage() {
  echo "usage: scripts/gpu_check.sh prepare | run [--device cuda|cpu] [--quick] [--out DIR]" >&2
  exit 2
}

prepare() {
  mkdir -p "$CHECK_DIR/debs"
  (cd "$CHECK_DIR/debs" && apt-get download "${DEBS[@]}") || {
    echo "gpu_check: apt-get download failed (run 'apt-get update' first?)" >&2
    exit 1
  }
  echo "gpu_check: $(ls "$CHECK_DIR"/debs | wc -l) packages in $CHECK_DIR/debs"
}

[ $# -ge 1 ] || usage
command=$1
shift
case "$command" in
  prepare) prepare; exit 0 ;;
  run) ;;
  *) usage ;;
esac

DEVICE=cuda
QUICK=0
OUT_DIR=${OUT:-/tmp/deeplab-gpu-check/out}
while [ $# -gt 0 ]; do
  case "$1" in
    --device) [ $# -ge 2 ] || usage; DEVICE=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --out) [ $# -ge 2 ] || usage; OUT_DIR=$2; shift 2 ;;
    *) usage ;;
  esac
done
case "$DEVICE" in cpu|cuda|cuda:[0-9]*) ;; *) usage ;; esac

PY=${DEEPLAB_PYTHON:-python3}
command -v "$PY" >/dev/null || PY=/usr/bin/python3
B=/tmp/deeplab-gpu-check
mkdir -p "$OUT_DIR" "$B/gen" "$B/obj"
LOG=$OUT_DIR/log.txt
: >"$LOG"
export PYTHONUNBUFFERED=1
stage() { echo "=== $(date +%T) $*" | tee -a "$LOG"; }
run_logged() { "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }

if [ "$QUICK" = 1 ]; then
  SIZE=128; BATCHES=1,2; MIN_SECONDS=0.2; EAGER_ITERS=2; ARCHS=(mobilenetv2)
else
  SIZE=512; BATCHES=1,8,32; MIN_SECONDS=1.0; EAGER_ITERS=10; ARCHS=(xception65 mobilenetv2)
fi
THREADS=$(nproc)
if [ "$DEVICE" = cpu ]; then PRECISION=fp32; DTYPE=fp32; else PRECISION=fp16; DTYPE=fp16; fi

stage info
if command -v nvidia-smi >/dev/null; then
  run_logged nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
fi
run_logged "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cxx11abi", torch._C._GLIBCXX_USE_CXX11_ABI)' || {
  echo "gpu_check: $PY has no torch" | tee -a "$LOG"; exit 1; }
CXX=${CXX:-$(command -v g++ || command -v c++ || command -v clang++)}
echo "compiler: $CXX ($($CXX --version | head -1)); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" | tee -a "$LOG"

stage build
T=$("$PY" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
ABI=$("$PY" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
if compgen -G "$CHECK_DIR/debs/*.deb" >/dev/null; then
  S=$B/sys
  rm -rf "$S"
  mkdir -p "$S"
  for d in "$CHECK_DIR"/debs/*.deb; do dpkg -x "$d" "$S"; done
  SYSINC=$S/usr/include
  SYSLIB=$S/usr/lib/x86_64-linux-gnu
  PROTOC=$S/usr/bin/protoc
  export LD_LIBRARY_PATH=$SYSLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  echo "dependencies: the .debs in $CHECK_DIR/debs" | tee -a "$LOG"
else
  SYSINC=/usr/include
  SYSLIB=/usr/lib/x86_64-linux-gnu
  PROTOC=$(command -v protoc)
  echo "dependencies: the system's (no .debs in $CHECK_DIR/debs)" | tee -a "$LOG"
fi
# LibTorch's libraries: beside the Python package (pip), or the system's (Debian).
TLIB=$T/lib
[ -e "$TLIB/libtorch_cpu.so" ] || TLIB=$SYSLIB
"$PROTOC" -Iprotos --cpp_out="$B/gen" deeplab/v1/model_config.proto deeplab/v1/checkpoint.proto ||
  { echo "BUILD FAILED: protoc" | tee -a "$LOG"; exit 1; }
FLAGS=(-std=c++17 "-O$([ "$QUICK" = 1 ] && echo 1 || echo 2)" -DNDEBUG "-D_GLIBCXX_USE_CXX11_ABI=$ABI" -I"$ROOT" -I"$B/gen"
       -isystem "$SYSINC" -isystem "$T/include" -isystem "$T/include/torch/csrc/api/include" -w)
SRCS=(workers/model/{backbone,deeplab,layers,mobilenetv2,model_spec,onednn_cache,resnet,xception}.cc
      workers/weights/{segmentation_model,native_checkpoint}.cc workers/batch/batch_path.cc
      workers/tools/gpu_check.cc scripts/gpu/keras_h5_stub.cc
      "$B/gen/deeplab/v1/model_config.pb.cc" "$B/gen/deeplab/v1/checkpoint.pb.cc")
if [ -n "${GPU_CHECK_PREBUILT:-}" ]; then
  rm -f "$B/deeplab-gpu-check"
  cp "$GPU_CHECK_PREBUILT" "$B/deeplab-gpu-check" ||
    { echo "BUILD FAILED: cannot copy $GPU_CHECK_PREBUILT" | tee -a "$LOG"; exit 1; }
  echo "build: prebuilt $GPU_CHECK_PREBUILT (GPU_CHECK_PREBUILT), nothing compiled" | tee -a "$LOG"
else
  # torch/torch.h takes ~15 s to parse: once, as a precompiled header (skipped if it fails).
  mkdir -p "$B/pch"
  echo '#include <torch/torch.h>' >"$B/pch/torch_pch.h"
  PCH=()
  if "$CXX" "${FLAGS[@]}" -x c++-header "$B/pch/torch_pch.h" -o "$B/pch/torch_pch.h.gch" 2>"$B/pch/err"; then
    PCH=(-include "$B/pch/torch_pch.h")
  fi
  # A LibTorch translation unit takes about 1.5 GiB to compile.
  JOBS=$(( $(nproc) < 16 ? $(nproc) : 16 ))
  compile_all() {
    local failed=0 running=0 s
    for s in "${SRCS[@]}"; do
      "$CXX" "${FLAGS[@]}" "${PCH[@]}" -c "$s" -o "$B/obj/$(basename "$s").o" 2>"$B/obj/$(basename "$s").err" &
      running=$((running + 1))
      if [ $running -ge "$JOBS" ]; then wait -n || failed=1; running=$((running - 1)); fi
    done
    while [ $running -gt 0 ]; do wait -n || failed=1; running=$((running - 1)); done
    return $failed
  }
  rm -f "$B"/obj/*.o
  if ! compile_all; then
    # LibTorch 2.12 and later need C++20.
    echo "c++17 failed; retrying with c++20" | tee -a "$LOG"
    grep -h -m3 error "$B"/obj/*.err | head -5 | tee -a "$LOG"
    FLAGS[0]=-std=c++20
    PCH=()  # built for C++17
    rm -f "$B"/obj/*.o
    compile_all || { grep -h -B2 -A6 -m3 error "$B"/obj/*.err | head -40 | tee -a "$LOG";
                     echo "BUILD FAILED" | tee -a "$LOG"; exit 1; }
  fi
  TORCH_LIBS=(-ltorch -ltorch_cpu -lc10)
  [ -e "$TLIB/libtorch_cuda.so" ] && TORCH_LIBS+=(-ltorch_cuda -lc10_cuda)
  "$CXX" -o "$B/deeplab-gpu-check" "$B"/obj/*.o -L"$TLIB" -Wl,--no-as-needed "${TORCH_LIBS[@]}" \
    -Wl,--as-needed -Wl,--allow-shlib-undefined "$SYSLIB"/libabsl_*.so "$SYSLIB/libprotobuf.so" \
    "$SYSLIB/libz.so" -pthread -ldl -Wl,-rpath,"$TLIB" -Wl,-rpath,"$SYSLIB" 2>&1 | tee -a "$LOG"
  [ -x "$B/deeplab-gpu-check" ] || { echo "BUILD FAILED: link" | tee -a "$LOG"; exit 1; }
fi
echo "build ok" | tee -a "$LOG"

failed=0
stage "correct ($DEVICE against cpu)"
run_logged "$PY" scripts/bench/png_to_raw.py "$B/demo_samples.u8" models/demo/samples/images/*.png
run_logged timeout 300 "$B/deeplab-gpu-check" correct "$DEVICE" models/demo/demo.dlck "$SIZE" \
  "$B/demo_samples.u8" || failed=1
for arch in "${ARCHS[@]}"; do
  stage "speed $arch (our C++: network, batch path)"
  run_logged timeout 150 "$B/deeplab-gpu-check" speed "$DEVICE" "$arch" 21 "$SIZE" "$BATCHES" \
    "$PRECISION" "$MIN_SECONDS" || failed=1
  for layout in "" --channels-last; do
    stage "eager $arch $layout"
    # The JSON document (stdout) becomes a RESULT_EAGER line; progress (stderr) goes to the log.
    timeout 120 "$PY" scripts/bench/eager_deeplab.py bench --arch "$arch" --classes 21 \
      --size "${SIZE}x$SIZE" --device "$DEVICE" --dtype "$DTYPE" --batch-sizes "$BATCHES" \
      --iterations "$EAGER_ITERS" --min-seconds "$MIN_SECONDS" --threads "$THREADS" $layout 2>>"$LOG" |
      sed 's/^{/RESULT_EAGER {/' | tee -a "$LOG" || failed=1
  done
done
if [ "$DEVICE" != cpu ] && "$PY" -c 'import torch, sys; sys.exit(0 if hasattr(torch, "compile") else 1)'; then
  for arch in "${ARCHS[@]}"; do
    stage "torch.compile $arch"
    timeout 200 "$PY" scripts/bench/eager_deeplab.py bench --arch "$arch" --classes 21 \
      --size "${SIZE}x$SIZE" --device "$DEVICE" --dtype "$DTYPE" --batch-sizes "${BATCHES#1,}" \
      --iterations "$EAGER_ITERS" --min-seconds "$MIN_SECONDS" --compile default 2>>"$LOG" |
      sed 's/^{/RESULT_EAGER {/' | tee -a "$LOG" || echo "(torch.compile stage failed)" | tee -a "$LOG"
  done
fi
stage report
"$PY" scripts/bench/gpu_check_report.py "$LOG" | tee "$OUT_DIR/table.md"
[ "${PIPESTATUS[0]}" = 0 ] || failed=1
[ $failed = 0 ] && echo "gpu_check: ok" || echo "gpu_check: a stage failed (see $LOG)"
exit $failed
