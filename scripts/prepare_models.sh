#!/usr/bin/env bash
# Fills a model repository for deeplab-worker from weight-set configs, with weights that
# match their checksums: the Kubernetes worker's init container runs it (deploy/k8s/).
#
# Usage: scripts/prepare_models.sh --configs DIR --out DIR [--baked DIR] [--load NAME,...]
#   --configs DIR  the configs: NAME/config.pbtxt folders, or NAME.config.pbtxt files (a
#                  ConfigMap mounted as a volume, whose keys cannot hold a '/')
#   --out DIR      the repository to fill (the worker's --models); created if missing
#   --baked DIR    a repository whose weights are already in place (the worker image's
#                  /opt/deeplab/models); optional
#   --load LIST    comma-separated weight sets; empty or absent: every config in --configs
#   --fetch FILE   the download script; default: fetch_weights.sh beside this script
#
# For each weight set it writes OUT/NAME/config.pbtxt, then puts the weights beside it:
# a file in --baked is copied when its sha256 matches the config's weights.sha256 (or, when
# the config pins none, the FILE.sha256 record that fetch_weights.sh left beside it);
# anything else is left to fetch_weights.sh, which downloads weights.url and checks it. A
# weight set that fails leaves nothing in OUT (no config without its weights).
# Exit status: 0 when every weight set is ready, 1 if any failed, 2 for a usage error.
set -uo pipefail

me=prepare_models.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
configs_dir="" out_dir="" baked_dir="" load="" fetch="$script_dir/fetch_weights.sh"
usage_error() { echo "$me: $*" >&2; echo "$me: see --help" >&2; exit 2; }
needs_value() { [ $# -ge 2 ] && [ -n "$2" ] || usage_error "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --configs) needs_value "$@"; configs_dir=$2; shift 2 ;;
    --configs=*) configs_dir=${1#*=}; shift ;;
    --out) needs_value "$@"; out_dir=$2; shift 2 ;;
    --out=*) out_dir=${1#*=}; shift ;;
    --baked) needs_value "$@"; baked_dir=$2; shift 2 ;;
    --baked=*) baked_dir=${1#*=}; shift ;;
    # An empty list is allowed: it means all, as the worker's --load does.
    --load) [ $# -ge 2 ] || usage_error "--load needs a value"; load=$2; shift 2 ;;
    --load=*) load=${1#*=}; shift ;;
    --fetch) needs_value "$@"; fetch=$2; shift 2 ;;
    --fetch=*) fetch=${1#*=}; shift ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage_error "unexpected argument '$1'" ;;
  esac
done
[ -n "$configs_dir" ] || usage_error "--configs is required"
[ -n "$out_dir" ] || usage_error "--out is required"
[ -d "$configs_dir" ] || usage_error "--configs $configs_dir is not a folder"
[ -z "$baked_dir" ] || [ -d "$baked_dir" ] || usage_error "--baked $baked_dir is not a folder"
[ -f "$fetch" ] || usage_error "no download script at $fetch (give --fetch)"
command -v sha256sum >/dev/null 2>&1 || { echo "$me: needs sha256sum" >&2; exit 2; }

# weights_field CONFIG FIELD: the config reader fetch_weights.sh uses too.
source "$script_dir/model_config.sh"

# config_of NAME: prints the config file of NAME in --configs, in either layout.
config_of() {
  if [ -f "$configs_dir/$1/config.pbtxt" ]; then printf '%s\n' "$configs_dir/$1/config.pbtxt"
  elif [ -f "$configs_dir/$1.config.pbtxt" ]; then printf '%s\n' "$configs_dir/$1.config.pbtxt"
  else return 1; fi
}
available() {
  local path
  # A ConfigMap volume also holds ..data and ..TIMESTAMP entries: '*' skips them.
  for path in "$configs_dir"/*/config.pbtxt "$configs_dir"/*.config.pbtxt; do
    [ -f "$path" ] || continue
    case "$path" in */config.pbtxt) basename "$(dirname "$path")" ;;
                    *) basename "$path" .config.pbtxt ;; esac
  done | sort -u
}

names=()
if [ -n "$load" ]; then
  IFS=',' read -r -a names <<< "$load"
else
  mapfile -t names < <(available)
  [ ${#names[@]} -gt 0 ] || usage_error "no NAME/config.pbtxt or NAME.config.pbtxt in $configs_dir"
fi
for name in "${names[@]}"; do
  # The worker looks names up verbatim, so " pascal_voc" would load nothing.
  [[ "$name" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] ||
    usage_error "'$name' in --load is not a weight-set name (letters, digits, '_', '.', '-'; no spaces)"
done

mkdir -p "$out_dir" || { echo "$me: cannot create $out_dir" >&2; exit 2; }

tmp_file=""
cleanup() { [ -n "$tmp_file" ] && rm -f "$tmp_file"; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# install_file SRC DEST: copies SRC to DEST through a temporary file in DEST's folder, so
# that a reader (or a second init container on a shared volume) never sees half a file.
install_file() {
  tmp_file=$(mktemp "$(dirname "$2")/.$(basename "$2").XXXXXX.part") || return 1
  if cp "$1" "$tmp_file" && chmod 0644 "$tmp_file" && mv -f "$tmp_file" "$2"; then
    tmp_file=""; return 0
  fi
  rm -f "$tmp_file"; tmp_file=""; return 1
}

# use_baked NAME CONFIG: copies NAME's weights from --baked when their checksum matches.
use_baked() {
  local name=$1 config=$2 file want source have src dest
  file=$(weights_field "$config" file)
  [ -n "$file" ] && [ -n "$baked_dir" ] || return 0
  case "$file" in /*|..|../*|*/..|*/../*) return 0 ;; esac  # fetch_weights.sh says why
  src="$baked_dir/$name/$file" dest="$out_dir/$name/$file"
  [ -f "$src" ] || return 0
  if [ -f "$dest" ]; then
    echo "  $dest is already there: fetch_weights.sh checks it"; return 0
  fi
  want=$(weights_field "$config" sha256) source="weights.sha256 of $config"
  if [ -z "$want" ] && [ -f "$src.sha256" ]; then
    want=$(head -c 64 "$src.sha256") source="$src.sha256"
  fi
  if [ -z "$want" ]; then
    echo "  baked-in $src not used: nothing to check it against (pin weights.sha256, or keep"
    echo "  the FILE.sha256 record fetch_weights.sh writes beside it in the image)"
    return 0
  fi
  have=$(sha256sum "$src" | cut -d' ' -f1)
  if [ "$have" != "$want" ]; then
    echo "  baked-in $src not used: sha256 $have, but $source expects $want"
    return 0
  fi
  mkdir -p "$(dirname "$dest")" && install_file "$src" "$dest" ||
    { echo "  cannot copy $src to $dest" >&2; return 1; }
  printf '%s  %s\n' "$have" "$(basename "$file")" > "$dest.sha256" ||
    { echo "  cannot write $dest.sha256" >&2; return 1; }
  echo "  copied baked-in $src (sha256 $have matches $source)"
}

ready=() failed=()
for name in "${names[@]}"; do
  echo "== $name"
  if ! config=$(config_of "$name"); then
    echo "  FAILED: no $name/config.pbtxt or $name.config.pbtxt in $configs_dir;" \
         "there: $(available | tr '\n' ' ')" >&2
    failed+=("$name"); continue
  fi
  dir="$out_dir/$name"
  if mkdir -p "$dir" && install_file "$config" "$dir/config.pbtxt" &&
     use_baked "$name" "$config" &&
     bash "$fetch" --models "$out_dir" "$name" 2>&1 | sed '/^== /d'; then
    ready+=("$name")
  else
    # fetch_weights.sh keeps no bad download; a stale file it could not replace, and the
    # config, go too, so that the worker never lists a weight set it cannot load.
    echo "  FAILED: $name is not ready; removed $dir" >&2
    rm -rf "$dir"
    failed+=("$name")
  fi
done

echo "== $me: ready ${#ready[@]}${ready[*]:+: ${ready[*]}}; failed ${#failed[@]}${failed[*]:+: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
