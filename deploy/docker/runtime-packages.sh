#!/usr/bin/env bash
# Prints, one per line, the packages that own the shared libraries the given programs load,
# so that a runtime image can apt-get install exactly those (and what they depend on)
# instead of the whole build toolchain. Runs in a build stage, where the programs were linked.
#
# Usage: runtime-packages.sh [--copied DIR]... [--provided SONAME]... PROGRAM...
#   --copied DIR      libraries under DIR reach the image by COPY, not by a package
#   --provided SONAME a library that is absent at build time and mounted at run time
#                     (libcuda.so.1 comes with the host's driver through the container toolkit)
# A library that is missing or owned by no package fails the script: the image would build
# and then not start.
set -euo pipefail

copied=()
provided=()
programs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --copied) copied+=("${2:?--copied needs a folder}"); shift 2 ;;
    --provided) provided+=("${2:?--provided needs a soname}"); shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "runtime-packages: unknown option $1" >&2; exit 2 ;;
    *) programs+=("$1"); shift ;;
  esac
done
[ ${#programs[@]} -gt 0 ] || { echo "runtime-packages: no programs given" >&2; exit 2; }

is_provided() {
  local p
  for p in "${provided[@]+"${provided[@]}"}"; do [ "$1" = "$p" ] && return 0; done
  return 1
}
is_copied() {
  local d
  for d in "${copied[@]+"${copied[@]}"}"; do
    case "$1" in "${d%/}"/*) return 0 ;; esac
  done
  return 1
}

# With merged /usr, ldd may print /lib/... for a file that dpkg registered as /usr/lib/...
# (or the reverse), and a library reached through /etc/alternatives is registered only under
# its real path: each library is looked up under every spelling, in one dpkg-query call
# (one call per path takes a minute for the worker's 350 libraries).
spellings() {
  local lib=$1 real
  real=$(readlink -f "$lib")
  printf '%s\n' "$lib" "$real" "/usr$lib" "${lib#/usr}" "/usr$real" "${real#/usr}"
}
declare -A owner=()
load_owners() {
  local line pkgs path
  while IFS= read -r line; do
    case "$line" in diversion\ *) continue ;; esac
    pkgs=${line%%: /*}       # "pkg:arch[, pkg2:arch]: /path"
    path=${line#"$pkgs: "}
    pkgs=${pkgs%%,*}         # the first owner is enough
    owner[$path]=${pkgs%%:*}
  done < <(dpkg-query -S "$@" 2>/dev/null || true)
}
owner_of() {
  local candidate
  while IFS= read -r candidate; do
    if [ -n "${owner[$candidate]+set}" ]; then printf '%s\n' "${owner[$candidate]}"; return 0; fi
  done < <(spellings "$1")
  return 1
}

failed=0
libraries=()
for program in "${programs[@]}"; do
  [ -x "$program" ] || { echo "runtime-packages: $program is not an executable" >&2; exit 1; }
  listing=$(ldd "$program") || { echo "runtime-packages: ldd $program failed" >&2; exit 1; }
  while read -r name arrow path _; do
    if [ "$arrow" = "=>" ] && [ "$path" = "not" ]; then
      if ! is_provided "$name"; then
        echo "runtime-packages: $program needs $name, which is not installed here" >&2
        failed=1
      fi
    elif [ "$arrow" = "=>" ] && [ "${path#/}" != "$path" ]; then
      libraries+=("$path")
    elif [ "${name#/}" != "$name" ]; then
      libraries+=("$name")     # the dynamic loader itself: "/lib64/ld-linux-x86-64.so.2 (0x...)"
    fi
  done <<<"$listing"
done

wanted=()
for lib in $(printf '%s\n' "${libraries[@]}" | sort -u); do
  is_copied "$(readlink -f "$lib")" || is_copied "$lib" || wanted+=("$lib")
done
if [ ${#wanted[@]} -gt 0 ]; then
  mapfile -t paths < <(for lib in "${wanted[@]}"; do spellings "$lib"; done | sort -u)
  load_owners "${paths[@]}"
fi

packages=()
for lib in "${wanted[@]+"${wanted[@]}"}"; do
  if pkg=$(owner_of "$lib"); then
    packages+=("$pkg")
  else
    echo "runtime-packages: no package owns $lib" >&2
    failed=1
  fi
done
[ $failed -eq 0 ] || exit 1

# Names without versions: a stable release's mirror keeps only the newest version of a
# package, and within a release a library's soname, hence its ABI, does not change.
printf '%s\n' "${packages[@]+"${packages[@]}"}" | sort -u
