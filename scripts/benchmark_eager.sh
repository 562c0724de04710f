#!/usr/bin/env bash
# The worker's engine beside PyTorch eager, on one device, in one run: DeepLabv3+ Xception-65
# and MobileNetV2 at 512x512, each precision, each batch size.
#
#   bash scripts/benchmark_eager.sh [--device cpu|cuda[:K]] [--batch-sizes 1,2,4,...]
#        [--precisions fp32,fp16] [--archs xception65,mobilenetv2] [--size 512x512]
#        [--out DIR] [--quick]
#
# For each network, precision and batch size it runs
#   - deeplab-bench --in-process: the worker's own engine (same loading, BatchNorm folding,
#     layout and precision as deeplab-worker) from encoded image to label map, one forward
#     pass at a time (--instances 1), twice: with one batch in flight, for the forward time
#     alone (timed around the model call, including the copy of the input to the device and
#     of the logits back), and with the default batch slots, for images/s end to end;
#   - scripts/bench/eager_deeplab.py: the same network (a test checks it computes the same
#     logits) as a Python user would run it: eval(), inference_mode, .to(dtype), in NCHW and
#     in channels_last, timed on a tensor already on the device (on the CPU with as many
#     intra-op threads as the worker's engine, and with its allocator, tcmalloc, preloaded).
# Random weights (speed only). Defaults: on cuda, fp32 and fp16 at batch 1 to 32; on the CPU,
# fp32 (and bf16 where the CPU has native bf16) at batch 1, 2 and 4. A precision the worker
# cannot run falls back to fp32 there, and the "runtime" column says so.
#
# Needs deeplab-bench and deeplab-train built against the LibTorch to measure (build/bin, or
# DEEPLAB_BIN) and a python3 whose torch can use the device (DEEPLAB_PYTHON; default
# /usr/bin/python3, Debian's, with python3-torch). On a GPU, build against that machine's
# CUDA LibTorch first (docs/gpu.md, "On a GPU machine"). Writes json/, results.md and the log
# under --out (default bench-eager-out/). --quick: tiny steps, a smoke test of the script.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DEEPLAB_BIN:-$root/${BUILD_DIR:-build}/bin}"
python="${DEEPLAB_PYTHON:-/usr/bin/python3}"
out="$root/bench-eager-out"
device=cpu
batch_sizes=""
precisions=""
archs="xception65,mobilenetv2"
size=512x512
quick=0
die() { echo "benchmark_eager: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --device|--batch-sizes|--precisions|--archs|--size|--out)
      [ $# -ge 2 ] || die "$1 needs a value" ;;&
    --device) device="$2"; shift 2 ;;
    --batch-sizes) batch_sizes="$2"; shift 2 ;;
    --precisions) precisions="$2"; shift 2 ;;
    --archs) archs="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
case "$device" in cpu) ;; cuda|cuda:[0-9]*) ;; *) die "--device must be cpu, cuda or cuda:K, got $device" ;; esac
[[ "$size" =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || die "--size must be HxW, got $size"
if [ -z "$precisions" ]; then
  if [ "$device" != cpu ]; then
    precisions=fp32,fp16
  elif grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
    precisions=fp32,bf16
  else
    precisions=fp32  # emulated bf16 is 15 to 70 times slower than fp32 (docs/performance.md)
  fi
fi
if [ -z "$batch_sizes" ]; then
  if [ "$device" = cpu ]; then batch_sizes=1,2,4; else batch_sizes=1,2,4,8,16,32; fi
fi
[[ "$batch_sizes" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--batch-sizes must be like 1,2,4, got $batch_sizes"
IFS=, read -r -a arch_list <<<"$archs"
IFS=, read -r -a precision_list <<<"$precisions"
for a in "${arch_list[@]}"; do
  case "$a" in xception65|mobilenetv2) ;; *) die "--archs: $a is not xception65 or mobilenetv2" ;; esac
done
for p in "${precision_list[@]}"; do
  case "$p" in fp32|fp16|bf16) ;; *) die "--precisions: $p is not fp32, fp16 or bf16" ;; esac
done
for program in deeplab-bench deeplab-train; do
  [ -x "$bin/$program" ] || die "$bin/$program is missing: run bash scripts/setup.sh first"
done
"$python" -c 'import torch' 2>/dev/null || die "$python has no torch (DEEPLAB_PYTHON)"
if [ "$device" != cpu ]; then
  "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' ||
    die "$python's torch sees no CUDA device"
fi
max_batch=$(tr , '\n' <<<"$batch_sizes" | sort -n | tail -1)
# Eager gets the worker's allocator: on a CPU it makes up to 3.8 times the difference at
# batch 4 (docs/configuration.md, "Runtime"), and the comparison is meant to be between runtimes.
# (awk reads all of ldd's output: exiting early would SIGPIPE ldd, and pipefail would fail.)
allocator=$(ldd "$bin/deeplab-bench" | awk '/libtcmalloc/ && !found {print $3; found = 1}')
height=${size%x*}
width=${size#*x}

if [ $quick -eq 1 ]; then
  ours_steps=(--requests "$max_batch" --warmup 0s); eager_steps=(--iterations 2 --min-seconds 0)
else
  ours_steps=(--duration 10s --warmup 3s); eager_steps=(--iterations 10 --min-seconds 5)
fi

rm -rf "$out"
mkdir -p "$out/json" "$out/models"
exec > >(tee "$out/benchmark.log") 2>&1

echo "== machine"
{
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "cores: $(nproc)"
  if [ "$device" != cpu ] && command -v nvidia-smi >/dev/null; then
    echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed -n 1p)"
  fi
  echo "pytorch: $("$python" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
  libraries=$(ldd "$bin/deeplab-bench")
  echo "deeplab-bench: $bin/deeplab-bench, $(grep -q 'libtorch_cuda' <<<"$libraries" && echo "CUDA LibTorch" || echo "CPU LibTorch")"
  echo "allocator (worker and eager): ${allocator:-glibc malloc}"
  echo "device: $device"
  echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
} | tee "$out/machine.txt"

# A photo-sized scene (made here, so nothing is fetched): the worker letterboxes it to the
# network's input like any image; eager is timed on a tensor of the input size.
"$bin/deeplab-train" generate --count 1 --seed 90210 --size 427x640 --out "$out/scenes" >/dev/null
image="$out/scenes/images/000000.png"

for arch in "${arch_list[@]}"; do
  for precision in "${precision_list[@]}"; do
    name="${arch}_${precision}"
    mkdir -p "$out/models/$name"
    {
      echo "name: \"$name\""
      echo "description: \"DeepLabv3+ $arch, 21 classes, ${size}, random weights (speed only)\""
      echo "architecture { backbone: \"$arch\" num_classes: 21 }"
      echo "input { height: $height width: $width resize: RESIZE_MODE_LETTERBOX normalization: NORMALIZATION_MINUS_ONE_TO_ONE }"
      for k in $(seq 0 20); do echo "class_names: \"class$k\""; done
      echo 'weights { format: WEIGHTS_FORMAT_RANDOM }'
      echo "batching { max_batch_size: $max_batch max_queue_delay_micros: 5000 max_queue_size: 256 default_timeout_micros: 600000000 }"
      echo "precision: PRECISION_${precision^^}"
    } >"$out/models/$name/config.pbtxt"

    # Twice: with one batch in flight, so that the forward pass has the machine to itself
    # (as eager does), and as a worker runs, decoding and encoding other batches meanwhile.
    for slots in 1 0; do
      echo "== $name: deeplab-bench --in-process --batch-slots $slots"
      suffix=$([ "$slots" = 1 ] && echo ours_forward || echo ours)
      "$bin/deeplab-bench" --in-process --models "$out/models" --model "$name" --device "$device" \
        --image "$image" --batch-sizes "$batch_sizes" --instances 1 --batch-slots "$slots" \
        --outputs label_png "${ours_steps[@]}" --json >"$out/json/${name}_${suffix}.json"
    done
    for layout in nchw channels_last; do
      echo "== $name: PyTorch eager, $layout"
      # On the CPU, as many intra-op threads as deeplab-bench uses (one per core; PyTorch's
      # own default can be fewer, e.g. 1 on a 2-vCPU VM).
      flags=()
      [ "$device" = cpu ] && flags+=(--threads "$(nproc)")
      [ "$layout" = channels_last ] && flags+=(--channels-last)
      LD_PRELOAD="$allocator${LD_PRELOAD:+:$LD_PRELOAD}" \
        "$python" "$root/scripts/bench/eager_deeplab.py" bench --arch "$arch" --classes 21 \
        --size "$size" --device "$device" --dtype "$precision" --batch-sizes "$batch_sizes" \
        "${eager_steps[@]}" "${flags[@]}" >"$out/json/${name}_eager_${layout}.json"
    done
  done
done

echo "== results"
"$python" "$root/scripts/bench/eager_report.py" "$out" | tee "$out/results.md"
