#!/usr/bin/env bash
# Installs every Debian package deeplab-serve needs to build, test and run.
# Idempotent: packages already present are left alone, so it is cheap to run before every build.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libtorch-dev                                   # LibTorch 1.13 (CPU)
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libopencv-dev prometheus-cpp-dev libabsl-dev libhdf5-dev zlib1g-dev libssl-dev
  libgoogle-perftools-dev                        # tcmalloc (see CMakeLists.txt)
  libgtest-dev libgmock-dev
  python3 python3-torch python3-numpy python3-h5py python3-grpcio python3-grpc-tools
  python3-yaml prometheus                        # deploy/ checks: PyYAML, promtool
  clang libclang-rt-14-dev openssl               # scripts/fuzz.sh (libFuzzer); test certificates
)

missing=()
for p in "${PACKAGES[@]}"; do
  # dpkg-query prints "install ok installed" only for fully installed packages.
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
