#!/usr/bin/env bash
# The benchmarks of docs/BENCHMARKS.md, in one run on this machine.
#
#   bash scripts/benchmark.sh [--out DIR] [--quick] [--photo FILE] [--side-photo FILE]
#
# Needs the programs that `bash scripts/setup.sh` builds (build/bin) and python3 with torch
# (installed by scripts/install_deps.sh). Starts its own local clusters on free loopback
# ports (scripts/cluster.sh) and stops them. Writes every deeplab-bench result as JSON,
# the worker metrics it read, and results.md (the tables) under --out (default
# bench-out/). --quick shortens every step (a smoke test of the script, not numbers to
# quote). --photo adds an in-process row for one large photo (e.g. a 12-megapixel JPEG),
# where decoding and resizing the labels back to the original size weigh the most.
# --side-photo (default ../shared/data/photos/image1.jpg, a 640x427 photo, when present, else
# a generated 640x427 scene) is what the cluster and a naive Python server
# (scripts/bench/naive_server.py: grpcio thread pool, TorchScript, fp32, batch 1) are both
# sent, side by side, by the same load generator.
#
# Weight sets (written under DIR/models): demo (the shipped trained set), demo_unbatched
# (the same with max_batch_size 1), xception65_512 (Xception-65, 21 classes, 512x512,
# random weights: for speed only) and tiny (one 1x1 convolution: compute is negligible, so
# what is left is the cost of the gateway and the worker's plumbing).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DEEPLAB_BIN:-$root/${BUILD_DIR:-build}/bin}"
# Debian's python3, the one python3-torch installs into (not one earlier on PATH).
python="${DEEPLAB_PYTHON:-/usr/bin/python3}"
out="$root/bench-out"
quick=0
photo=""
side_photo=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --photo) photo="$2"; shift 2 ;;
    --side-photo) side_photo="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "benchmark: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for program in deeplab-bench deeplab-worker deeplab-gateway deeplab-train deeplab; do
  [ -x "$bin/$program" ] || { echo "benchmark: $bin/$program is missing: run bash scripts/setup.sh first" >&2; exit 2; }
done
[ -z "$photo" ] || [ -f "$photo" ] || { echo "benchmark: --photo $photo: no such file" >&2; exit 2; }
[ -z "$side_photo" ] || [ -f "$side_photo" ] ||
  { echo "benchmark: --side-photo $side_photo: no such file" >&2; exit 2; }

# Step lengths: seconds measured per step, and the warm-up before it.
if [ $quick -eq 1 ]; then dur=1s; warm=0.5s; heavy=2; else dur=8s; warm=2s; heavy=8; fi
# Xception-65's input side. --quick (a smoke test of the script, which CI runs) gives the
# weight set named xception65_512 a 256x256 input: a quarter of the work, the same steps.
if [ $quick -eq 1 ]; then xside=256; else xside=512; fi

rm -rf "$out"
mkdir -p "$out/json" "$out/models" "$out/metrics"
models="$out/models"
log="$out/benchmark.log"
exec > >(tee "$log") 2>&1

echo "== machine"
{
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "cores: $(nproc)"
  echo "memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
} | tee "$out/machine.txt"

echo "== weight sets and inputs"
mkdir -p "$models/demo" "$models/demo_unbatched" "$models/xception65_512" "$models/tiny"
# With its samples: precision auto checks the demo weights on them
# (docs/configuration.md, "Runtime").
cp -r "$root/models/demo/config.pbtxt" "$root/models/demo/demo.dlck" "$root/models/demo/samples" "$models/demo/"
sed -e 's/^name: "demo"/name: "demo_unbatched"/' -e 's/max_batch_size: [0-9]*/max_batch_size: 1/' \
  "$root/models/demo/config.pbtxt" >"$models/demo_unbatched/config.pbtxt"
cp -r "$root/models/demo/demo.dlck" "$root/models/demo/samples" "$models/demo_unbatched/"
{
  echo 'name: "xception65_512"'
  echo "description: \"Xception-65 DeepLabv3+, 21 classes, ${xside}x$xside, random weights (speed only)\""
  echo 'architecture { backbone: "xception65" num_classes: 21 output_stride: 16 }'
  echo "input { height: $xside width: $xside resize: RESIZE_MODE_LETTERBOX normalization: NORMALIZATION_MINUS_ONE_TO_ONE }"
  for k in $(seq 0 20); do echo "class_names: \"class$k\""; done
  echo 'weights { format: WEIGHTS_FORMAT_RANDOM }'
  echo 'batching { max_batch_size: 4 max_queue_delay_micros: 5000 max_queue_size: 256 default_timeout_micros: 120000000 }'
} >"$models/xception65_512/config.pbtxt"
"$python" "$root/scripts/bench/make_tiny_model.py" --out "$models/tiny/tiny.pt"
{
  echo 'name: "tiny"'
  echo 'description: "one 1x1 convolution: the cost of serving without the cost of a model"'
  echo 'architecture { num_classes: 2 }'
  echo 'input { height: 64 width: 64 resize: RESIZE_MODE_STRETCH normalization: NORMALIZATION_MINUS_ONE_TO_ONE }'
  echo 'class_names: "a" class_names: "b"'
  echo 'weights { format: WEIGHTS_FORMAT_TORCHSCRIPT file: "tiny.pt" }'
  echo 'batching { max_batch_size: 32 max_queue_delay_micros: 500 max_queue_size: 4096 default_timeout_micros: 10000000 }'
} >"$models/tiny/config.pbtxt"
# The same network with no queue delay: what the gateway adds apart from the batching wait
# it is configured to make.
mkdir -p "$models/tiny_nodelay"
cp "$models/tiny/tiny.pt" "$models/tiny_nodelay/"
sed -e 's/^name: "tiny"/name: "tiny_nodelay"/' -e 's/max_queue_delay_micros: [0-9]*/max_queue_delay_micros: 0/' \
  "$models/tiny/config.pbtxt" >"$models/tiny_nodelay/config.pbtxt"
demo_images="$root/models/demo/samples/images"
# Photo-sized scenes (640x427) for the 512x512 network: made here, so nothing is fetched.
"$bin/deeplab-train" generate --count 4 --seed 90210 --size 427x640 --out "$out/scenes" >/dev/null
scenes="$out/scenes/images"
small="$demo_images/000000.png"
if [ -z "$side_photo" ]; then
  side_photo="$root/../shared/data/photos/image1.jpg"
  [ -f "$side_photo" ] || side_photo="$(ls "$scenes"/* | head -n1)"
fi

# Machine-wide CPU time (all cores) from /proc/stat: busy and total jiffies.
cpu_sample() { awk '/^cpu / {print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }

# bench NAME ARGS...: runs deeplab-bench --json, keeps the JSON and the machine's CPU use.
bench() {
  local name="$1"; shift
  local before after
  before=$(cpu_sample)
  "$bin/deeplab-bench" "$@" --json >"$out/json/$name.json"
  after=$(cpu_sample)
  echo "$before $after" | awk '{printf "%.3f\n", ($3 - $1) / ($4 - $2)}' >"$out/json/$name.cpu"
  echo "  $name: done (machine CPU busy $(awk '{printf "%.0f%%", $1 * 100}' "$out/json/$name.cpu"))"
}

# An HTTP GET of /metrics with bash alone (no curl on a fresh machine).
scrape() {
  local port="$1" file="$2"
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  cat <&3 >"$file"
  exec 3<&-
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A base port with base..base+3 free for gRPC and base+1000.. for metrics (base+2000: REST).
pick_ports() {
  local base k busy
  for _ in $(seq 1 50); do
    base=$((20000 + RANDOM % 20000))
    busy=0
    for k in 0 1 2 3; do
      if port_in_use $((base + k)) || port_in_use $((base + 1000 + k)) ||
        port_in_use $((base + 2000 + k)); then busy=1; fi
    done
    [ $busy -eq 0 ] && { echo "$base"; return; }
  done
  echo "benchmark: found no free ports" >&2
  exit 1
}

export DEEPLAB_CLUSTER_DIR="$out/cluster"
cluster_up() {
  local workers="$1"
  port=$(pick_ports)
  metrics=$((port + 1000))
  bash "$root/scripts/cluster.sh" up --workers "$workers" --port "$port" --metrics-port "$metrics" \
    --http-port $((port + 2000)) --models "$models" --wait-for demo,demo_unbatched,xception65_512,tiny,tiny_nodelay --detach >/dev/null
  gateway="127.0.0.1:$port"
  echo "  cluster: gateway $gateway, $workers worker(s) on ports $((port + 1))..$((port + workers))"
}
cluster_down() { bash "$root/scripts/cluster.sh" down >/dev/null || true; }
trap cluster_down EXIT

echo "== 1. in-process ceilings (no gRPC)"
bench inproc_demo --in-process --models "$models" --model demo --images "$demo_images" \
  --batch-sizes 1,4,16,32 --duration "$dur"
bench inproc_xception --in-process --models "$models" --model xception65_512 --images "$scenes" \
  --batch-sizes 1,2,4 --requests "$heavy"
if [ -n "$photo" ]; then
  bench inproc_photo --in-process --models "$models" --model xception65_512 --image "$photo" \
    --batch-sizes 1 --requests $((heavy / 2))
fi

echo "== 2. served through the gateway, one worker"
cluster_up 1
worker_metrics=$((metrics + 1))
bench served_demo --server "$gateway" --model demo --images "$demo_images" --concurrency 32,64 \
  --duration "$dur" --warmup "$warm"
# The cluster's half of section 6 (beside a naive Python server), on this same cluster.
if [ $quick -eq 1 ]; then side_levels=4; else side_levels=4,16,64; fi
echo "  side-by-side photo: $side_photo" | tee "$out/side_photo.txt"
bench side_cluster --server "$gateway" --model demo --image "$side_photo" \
  --concurrency "$side_levels" --duration "$dur" --warmup "$warm"
scrape "$worker_metrics" "$out/metrics/before_xception.txt"
bench served_xception --server "$gateway" --model xception65_512 --images "$scenes" \
  --concurrency 8 --requests "$heavy" --warmup 0s --timeout 600s
scrape "$worker_metrics" "$out/metrics/after_xception.txt"

echo "== 3. dynamic batching on and off"
scrape "$worker_metrics" "$out/metrics/before_batching.txt"
bench batching_on --server "$gateway" --model demo --images "$demo_images" --concurrency 1,4,16 \
  --duration "$dur" --warmup "$warm"
scrape "$worker_metrics" "$out/metrics/after_batching.txt"
bench batching_off --server "$gateway" --model demo_unbatched --images "$demo_images" \
  --concurrency 1,4,16 --duration "$dur" --warmup "$warm"

echo "== 4. the gateway's own cost (tiny weight set)"
bench tiny_direct --target worker --server "127.0.0.1:$((port + 1))" --model tiny --image "$small" \
  --concurrency 1 --duration "$dur" --warmup "$warm"
bench tiny_gateway --server "$gateway" --model tiny --image "$small" --concurrency 1 \
  --duration "$dur" --warmup "$warm"
bench tiny_gateway_nodelay --server "$gateway" --model tiny_nodelay --image "$small" \
  --concurrency 1 --duration "$dur" --warmup "$warm"
bench tiny_ceiling_direct --target worker --server "127.0.0.1:$((port + 1))" --model tiny \
  --image "$small" --concurrency 64 --duration "$dur" --warmup "$warm"
bench tiny_ceiling --server "$gateway" --model tiny --image "$small" --concurrency 16,64,256 \
  --duration "$dur" --warmup "$warm"
cluster_down

echo "== 5. two workers behind one gateway"
cluster_up 2
bench two_workers_demo --server "$gateway" --model demo --images "$demo_images" \
  --concurrency 32,64 --duration "$dur" --warmup "$warm"
cluster_down

echo "== 6. beside a naive Python server, the same photo and load generator (cluster: in 2.)"
"$python" "$root/scripts/bench/naive_server.py" --weights "$root/models/demo/demo.dlck" \
  --name demo --size 128x128 --port 0 >"$out/naive_server.log" 2>&1 &
naive_pid=$!
for _ in $(seq 600); do
  grep -q "naive-server: ready" "$out/naive_server.log" && break
  kill -0 $naive_pid 2>/dev/null || { cat "$out/naive_server.log"; echo "benchmark: the naive server exited" >&2; exit 1; }
  sleep 0.1
done
naive="$(awk '/naive-server: grpc/ {print $3}' "$out/naive_server.log")"
bench side_naive --server "$naive" --model demo --image "$side_photo" \
  --concurrency "$side_levels" --duration "$dur" --warmup "$warm"
kill $naive_pid; wait $naive_pid 2>/dev/null || true

echo "== report"
"$python" "$root/scripts/bench/report.py" --dir "$out" >"$out/results.md"
cat "$out/results.md"
echo "results: $out/results.md (raw JSON in $out/json, log in $log)"
