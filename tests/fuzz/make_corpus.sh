#!/usr/bin/env bash
# Regenerates the fuzzers' seed corpora in tests/fuzz/corpus/<fuzzer>/ (committed; run this
# only when a format changes). Inputs that fuzzing found are kept: only seeds are rewritten.
set -euo pipefail
cd "$(dirname "$0")/../.."
corpus=tests/fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$corpus/image_codec"
# shellcheck disable=SC2046  # pkg-config prints several flags
g++ -std=c++17 -O1 -Wall -Wextra -o "$tmp/make_image_seeds" tests/fuzz/make_image_seeds.cc \
  $(pkg-config --cflags --libs opencv4) -lz
"$tmp/make_image_seeds" "$corpus/image_codec"
/usr/bin/python3 tests/fuzz/make_corpus.py "$corpus"
du -a "$corpus" | sort -n | tail -5
