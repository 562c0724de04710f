#!/usr/bin/env bash
# The programs that run LibTorch on the CPU use tcmalloc (CMakeLists.txt says why): each one
# links it, and at run time the dynamic linker binds malloc to it rather than to glibc.
# Usage: allocator_test.sh PROGRAM...
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
for program in "$@"; do
  dynamic=$(readelf -d "$program")  # whole, before grep: see cluster_script_test.sh
  grep -q 'NEEDED.*\[libtcmalloc_minimal\.so' <<<"$dynamic" ||
    fail "$program does not link libtcmalloc_minimal"
  bindings=$(LD_DEBUG=bindings "$program" --helpfull 2>&1 >/dev/null || true)
  grep -qE "to [^ ]*libtcmalloc_minimal\.so[^ ]* \[0\]: normal symbol \`malloc'" <<<"$bindings" ||
    fail "$program: malloc is not bound to tcmalloc at run time"
  echo "ok: $(basename "$program") allocates with tcmalloc"
done
