#!/usr/bin/env bash
# One command from a fresh Debian 12 machine: installs the packages, builds, and shows the
# model family working (deeplab-inspect prints the published Xception-65 parameter counts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
echo
echo "== deeplab-inspect --arch xception65 --classes 21"
build/workers/deeplab-inspect --arch xception65 --classes 21
echo
echo "Built. Tools are in build/workers/ (deeplab-inspect, deeplab-convert)."
