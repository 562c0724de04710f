#!/usr/bin/env bash
# Downloads the published weight files of the model repository (models/) into place, for
# machines that reach the internet.
#
# Usage: scripts/fetch_weights.sh [--models DIR] [NAME ...]
#   NAME     weight sets (folders of the repository) to fetch; all of them by default.
#   --models the model repository; default: the models/ folder beside this script's.
#
# For each weight set it reads weights { file url sha256 format } from NAME/config.pbtxt,
# downloads the url to a temporary file beside the destination, checks the sha256 when the
# config pins one (a mismatch keeps nothing), and moves the file into NAME/FILE. It then
# writes NAME/FILE.sha256 ("<hex>  FILE", as sha256sum writes it): when the config pins no
# hash, that record is what later loads check the file against.
# A file already present with the expected hash is left alone, so running it again is cheap.
# Exit status: 0 when every weight set is in place, 1 if any failed, 2 for a usage error.
set -uo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
models_dir="$script_dir/../models"
names=()
while [ $# -gt 0 ]; do
  case "$1" in
    --models) [ $# -ge 2 ] || { echo "fetch_weights.sh: --models needs a folder" >&2; exit 2; }
              models_dir=$2; shift 2 ;;
    --models=*) models_dir=${1#--models=}; shift ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fetch_weights.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) names+=("$1"); shift ;;
  esac
done
[ -d "$models_dir" ] || { echo "fetch_weights.sh: no model repository at $models_dir" >&2; exit 2; }

if command -v sha256sum >/dev/null 2>&1; then
  sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
elif command -v shasum >/dev/null 2>&1; then
  sha256_of() { shasum -a 256 "$1" | cut -d' ' -f1; }
else
  echo "fetch_weights.sh: needs sha256sum or shasum" >&2; exit 2
fi

if command -v curl >/dev/null 2>&1; then
  # -f: an HTTP error is a failure, not an HTML page saved as weights. GitHub release
  # downloads redirect, hence -L.
  download() { curl -fL --retry 3 --retry-delay 2 --connect-timeout 30 -sS -o "$2" "$1"; }
elif command -v wget >/dev/null 2>&1; then
  download() { wget -q --tries=3 -O "$2" "$1"; }
else
  echo "fetch_weights.sh: needs curl or wget" >&2; exit 2
fi

# weights_field CONFIG FIELD: the config reader shared with prepare_models.sh.
source "$script_dir/model_config.sh"

tmp_file=""
cleanup() { [ -n "$tmp_file" ] && rm -f "$tmp_file"; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

if [ ${#names[@]} -eq 0 ]; then
  for config in "$models_dir"/*/config.pbtxt; do
    [ -f "$config" ] || continue
    names+=("$(basename "$(dirname "$config")")")
  done
  [ ${#names[@]} -gt 0 ] || { echo "fetch_weights.sh: no weight sets in $models_dir" >&2; exit 2; }
fi

fetched=() present=() skipped=() failed=()
fail() { echo "  FAILED: $*" >&2; failed+=("$name"); }

for name in "${names[@]}"; do
  echo "== $name"
  config="$models_dir/$name/config.pbtxt"
  if [ ! -f "$config" ]; then fail "no $config"; continue; fi
  format=$(weights_field "$config" format)
  file=$(weights_field "$config" file)
  url=$(weights_field "$config" url)
  expected=$(weights_field "$config" sha256)
  if [ "$format" = WEIGHTS_FORMAT_RANDOM ]; then
    echo "  random weights, nothing to fetch"; skipped+=("$name"); continue
  fi
  if [ -z "$file" ]; then fail "$config sets no weights.file"; continue; fi
  case "$file" in /*|..|../*|*/..|*/../*) fail "weights.file '$file' leaves the weight set's folder"; continue ;; esac
  if [ -n "$expected" ] && ! [[ "$expected" =~ ^[0-9a-f]{64}$ ]]; then
    fail "weights.sha256 '$expected' in $config is not 64 lower-case hex digits"; continue
  fi
  dest="$models_dir/$name/$file"
  record="$dest.sha256"

  # Already there? Trust it only against a hash: the config's, else our earlier record.
  if [ -f "$dest" ]; then
    want=$expected source="$config"
    if [ -z "$want" ] && [ -f "$record" ]; then
      want=$(head -c 64 "$record") source="$record"
    fi
    have=$(sha256_of "$dest")
    if [ -n "$want" ] && [ "$have" = "$want" ]; then
      [ -f "$record" ] || printf '%s  %s\n' "$have" "$(basename "$file")" > "$record"
      echo "  present: $dest (sha256 $have matches $source)"; present+=("$name"); continue
    fi
    if [ -z "$want" ]; then
      # Put there by hand, with nothing to compare: keep it, and record what it is now so
      # later loads notice if it changes.
      printf '%s  %s\n' "$have" "$(basename "$file")" > "$record"
      echo "  present: $dest (no published sha256; recorded $have in $record)"
      present+=("$name"); continue
    fi
    echo "  $dest has sha256 $have but $source expects $want: downloading it again"
  fi

  if [ -z "$url" ]; then fail "$config sets no weights.url; put $file there by hand"; continue; fi
  mkdir -p "$(dirname "$dest")" || { fail "cannot create $(dirname "$dest")"; continue; }
  # Beside the destination, so the final mv is an atomic rename on the same file system
  # and a loader never sees half a file.
  tmp_file=$(mktemp "$(dirname "$dest")/.$(basename "$file").XXXXXX.part") ||
    { fail "cannot create a temporary file in $(dirname "$dest")"; continue; }
  echo "  downloading $url"
  if ! download "$url" "$tmp_file"; then
    rm -f "$tmp_file"; tmp_file=""
    fail "download of $url failed"; continue
  fi
  got=$(sha256_of "$tmp_file")
  if [ -n "$expected" ] && [ "$got" != "$expected" ]; then
    rm -f "$tmp_file"; tmp_file=""
    fail "sha256 mismatch for $url: $config expects $expected, the download has $got; nothing kept"
    continue
  fi
  # mktemp makes the file private; weights should read like any file the user creates.
  chmod "$(printf '%o' $(( 0666 & ~0$(umask) )))" "$tmp_file"
  if ! mv -f "$tmp_file" "$dest"; then
    rm -f "$tmp_file"; tmp_file=""
    fail "cannot move the download to $dest"; continue
  fi
  tmp_file=""
  printf '%s  %s\n' "$got" "$(basename "$file")" > "$record"
  if [ -n "$expected" ]; then
    echo "  fetched: $dest (sha256 $got, as $config expects)"
  else
    echo "  fetched: $dest (sha256 $got; no published hash, recorded in $record;"
    echo "           pin it as weights.sha256 in $config once you trust this download)"
  fi
  fetched+=("$name")
done

echo "== fetched ${#fetched[@]}, already present ${#present[@]}, nothing to fetch ${#skipped[@]}, failed ${#failed[@]}${failed[*]:+: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
