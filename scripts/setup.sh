#!/usr/bin/env bash
# The main job, one command on a fresh Debian 12 machine: installs the packages, builds,
# starts a local cluster (a gateway and a worker on loopback), segments the bundled sample
# images with the demo weight set through the `deeplab` client, stops the cluster and says
# where the label maps, overlays and class statistics are.
#
#   bash scripts/setup.sh [--keep-running]
#
# With --keep-running the cluster stays up afterwards (stop it: bash scripts/cluster.sh down).
# DEEPLAB_PORT / DEEPLAB_METRICS_PORT / DEEPLAB_HTTP_PORT choose other ports than 8000 / 9100 /
# 8080 (the REST port of the Open Inference Protocol).
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = "--keep-running" ] && keep=1
port="${DEEPLAB_PORT:-8000}"
metrics_port="${DEEPLAB_METRICS_PORT:-9100}"
http_port="${DEEPLAB_HTTP_PORT:-8080}"
out="$PWD/deeplab-out/samples"

bash scripts/install_deps.sh
bash scripts/build.sh

echo
echo "== starting a local cluster (gateway 127.0.0.1:$port, one worker)"
bash scripts/cluster.sh up --detach --port "$port" --metrics-port "$metrics_port" \
  --http-port "$http_port"
if [ $keep -eq 0 ]; then
  trap 'echo; echo "== stopping the local cluster"; bash scripts/cluster.sh down' EXIT
fi

echo
echo "== build/bin/deeplab models --server 127.0.0.1:$port"
build/bin/deeplab models --server "127.0.0.1:$port"

echo
echo "== build/bin/deeplab segment --server 127.0.0.1:$port --model demo --out deeplab-out/samples models/demo/samples/images"
rm -rf "$out"
build/bin/deeplab segment --server "127.0.0.1:$port" --model demo --out "$out" \
  models/demo/samples/images

echo
echo "Done. For each bundled sample image (models/demo/samples/images/*.png) there is, in"
echo "  $out/:"
echo "    NAME_label.png    the label map (pixel value = class id: 0 background, 1 circle,"
echo "                      2 square, 3 triangle, 4 star)"
echo "    NAME_overlay.png  the image with the classes painted over it: look at these"
echo "    NAME.json         the area of each class"
echo "  The generator's true labels are in models/demo/samples/labels/ for comparison."
if [ $keep -eq 1 ]; then
  echo "The cluster is still running on 127.0.0.1:$port; stop it with: bash scripts/cluster.sh down"
fi
