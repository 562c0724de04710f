#!/usr/bin/env bash
# Configures and builds deeplab-serve into BUILD_DIR (default: build/).
# Extra arguments go to cmake's configure step, e.g. -DDEEPLAB_SANITIZE=address,undefined.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
mkdir -p "$BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -G Ninja -DDEEPLAB_WERROR=ON "$@" >"$BUILD_DIR/configure.log" 2>&1 ||
  { cat "$BUILD_DIR/configure.log"; exit 1; }
# Two jobs: a LibTorch translation unit needs about 1.5 GiB of memory to compile.
cmake --build "$BUILD_DIR" -j "${JOBS:-2}"
