#!/usr/bin/env bash
# Installs every Debian package deeplab-serve needs to build, test and run, and the npm packages
# of tests/node.
# Idempotent: packages already present are left alone, so it is cheap to run before every build.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libtorch-dev                                   # LibTorch 1.13 (CPU)
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libopencv-dev prometheus-cpp-dev libcivetweb-dev libabsl-dev libhdf5-dev zlib1g-dev libssl-dev
  libpng-dev                                     # PNG outputs written with libpng directly
  libjpeg-dev                                    # large JPEGs decoded in bands with libjpeg-turbo
  libgoogle-perftools-dev                        # tcmalloc (see CMakeLists.txt)
  libgtest-dev libgmock-dev
  python3 python3-torch python3-numpy python3-h5py python3-grpcio python3-grpc-tools
  python3-pil                                    # scripts/bench/naive_server.py
  python3-yaml prometheus                        # deploy/ checks: PyYAML, promtool
  clang libclang-rt-14-dev openssl               # scripts/fuzz.sh (libFuzzer); test certificates
  curl                                           # tests/integration/oip_curl_test.sh
)
# tests/node and deploy/validate.sh run node and npm. Where the machine already has them (a
# NodeSource or nvm install, which Debian's npm package would conflict with) they are used
# as they are; else Debian's.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  # dpkg-query prints "install ok installed" only for fully installed packages.
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "install_deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# tests/node's packages (@grpc/grpc-js, @grpc/proto-loader), pinned by its package-lock.json:
# `npm ci` when node_modules is missing or older than the lock file (that needs the npm
# registry, once); otherwise a file-date check.
node_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/node"
if [ ! -f "$node_dir/node_modules/.package-lock.json" ] ||
   [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
  echo "install_deps: npm ci in $node_dir"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "install_deps: $node_dir/node_modules up to date"
fi
