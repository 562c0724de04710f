#!/usr/bin/env bash
# scripts/prepare_models.sh as the worker's init container runs it, without a network: the
# configs as a mounted ConfigMap (flat NAME.config.pbtxt keys behind ..data symlinks), the
# shipped demo weights as the image's baked-in repository, and "published" weights served
# over HTTP from loopback by python3's http.server on a port it picks.
# Usage: prepare_models_test.sh SOURCE_DIR [DEEPLAB_WORKER_BINARY]
#   With the worker binary, the prepared repository is also loaded by a real worker.
set -euo pipefail
src=$1
worker=${2:-}
script="$src/scripts/prepare_models.sh"
tmp=$(mktemp -d)
server_pid=""
worker_pid=""
stop() {
  if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}
trap 'stop "$worker_pid"; stop "$server_pid"; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() {  # expect NEEDLE HAYSTACK
  case "$2" in *"$1"*) ;; *) fail "expected '$1' in: $2" ;; esac
}
# run ARGS...: runs the script, output in $out, exit status in $rc.
run() { set +e; out=$(bash "$script" "$@" 2>&1); rc=$?; set -e; }
# partials DIR: temporary files a download or copy left behind.
partials() { find "$1" -name '*.part' 2>/dev/null; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# --- the web server --------------------------------------------------------------------
www="$tmp/www"
mkdir -p "$www"
printf 'pretend these are Keras weights\n' > "$www/pascal_voc.h5"
printf 'other weights\n' > "$www/cityscapes.h5"
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$www" > "$tmp/http.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$tmp/http.log" | head -n1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || fail "http.server did not start: $(cat "$tmp/http.log")"
base="http://127.0.0.1:$port"

# fetch_weights.sh downloads with curl, else wget: either talks HTTP. Without both, a
# stand-in that does what `curl -f -o FILE URL` does.
if ! command -v curl >/dev/null && ! command -v wget >/dev/null; then
  mkdir -p "$tmp/bin"
  cat > "$tmp/bin/curl" <<'EOF'
#!/usr/bin/env python3
import shutil, sys, urllib.request
args, out, url = sys.argv[1:], None, None
while args:
    a = args.pop(0)
    if a == "-o": out = args.pop(0)
    elif a in ("--retry", "--retry-delay", "--connect-timeout"): args.pop(0)
    elif not a.startswith("-"): url = a
try:
    with urllib.request.urlopen(url) as r, open(out, "wb") as f: shutil.copyfileobj(r, f)
except Exception as e:
    sys.exit(f"curl: {e}")
EOF
  chmod +x "$tmp/bin/curl"
  export PATH="$tmp/bin:$PATH"
fi

# --- the ConfigMap volume --------------------------------------------------------------
# The kubelet writes the keys into a timestamped folder and links each key to ..data/KEY.
# configmap NAME...: a ConfigMap of these shipped configs, with their urls pointed at $base.
configmap() {
  local cm="$tmp/cm" data="$tmp/cm/..2026_11_21_10_00_00.000000001" name
  rm -rf "$cm"; mkdir -p "$data"
  ln -s "$(basename "$data")" "$cm/..data"
  for name in "$@"; do
    sed -E "s#^([[:space:]]*url:[[:space:]]*)\"[^\"]*\"#\1\"$base/$name.h5\"#" \
      "$src/models/$name/config.pbtxt" > "$data/$name.config.pbtxt"
    ln -s "..data/$name.config.pbtxt" "$cm/$name.config.pbtxt"
  done
}
# pin NAME SHA: pins weights.sha256 in NAME's config (the shipped ones pin none).
pin() {
  sed -i -E "s#^([[:space:]]*sha256:[[:space:]]*)\"[^\"]*\"#\1\"$2\"#" "$tmp/cm/..data/$1.config.pbtxt"
  grep -q "sha256: \"$2\"" "$tmp/cm/..data/$1.config.pbtxt" || fail "could not pin $1"
}
# The image's repository: the shipped demo folder, and a published set baked in with the
# record fetch_weights.sh writes.
baked="$tmp/baked"
mkdir -p "$baked"
cp -r "$src/models/demo" "$baked/demo"
mkdir -p "$baked/cityscapes"
cp "$www/cityscapes.h5" "$baked/cityscapes/deeplabv3_xception_tf_dim_ordering_tf_kernels_cityscapes.h5"
printf '%s  %s\n' "$(sha "$www/cityscapes.h5")" deeplabv3_xception_tf_dim_ordering_tf_kernels_cityscapes.h5 \
  > "$baked/cityscapes/deeplabv3_xception_tf_dim_ordering_tf_kernels_cityscapes.h5.sha256"
voc_file=deeplabv3_xception_tf_dim_ordering_tf_kernels.h5
cs_file=deeplabv3_xception_tf_dim_ordering_tf_kernels_cityscapes.h5

# 1. The default CPU set: demo from the image (checksum pinned in its config), nothing
#    downloaded; the configs in the repository are the ConfigMap's.
configmap demo pascal_voc cityscapes
out_dir="$tmp/out1"
run --configs "$tmp/cm" --baked "$baked" --out "$out_dir" --load demo
[ $rc -eq 0 ] || fail "demo: exit $rc: $out"
expect "copied baked-in $baked/demo/demo.dlck" "$out"
expect "ready 1: demo; failed 0" "$out"
cmp -s "$src/models/demo/demo.dlck" "$out_dir/demo/demo.dlck" || fail "demo weights not copied"
cmp -s "$tmp/cm/demo.config.pbtxt" "$out_dir/demo/config.pbtxt" || fail "demo config not copied"
[ "$(ls "$out_dir")" = demo ] || fail "--load demo prepared more: $(ls "$out_dir")"
[ -z "$(partials "$out_dir")" ] || fail "temporary files left: $(partials "$out_dir")"

# 2. A download with a pinned checksum that matches; a baked-in file trusted through its
#    record; a second run downloads nothing.
pin pascal_voc "$(sha "$www/pascal_voc.h5")"
out_dir="$tmp/out2"
run --configs "$tmp/cm" --baked "$baked" --out "$out_dir" --load demo,pascal_voc,cityscapes
[ $rc -eq 0 ] || fail "three sets: exit $rc: $out"
expect "downloading $base/pascal_voc.h5" "$out"
expect "copied baked-in $baked/cityscapes/$cs_file" "$out"
expect "matches $baked/cityscapes/$cs_file.sha256" "$out"
expect "ready 3: demo pascal_voc cityscapes; failed 0" "$out"
cmp -s "$www/pascal_voc.h5" "$out_dir/pascal_voc/$voc_file" || fail "pascal_voc weights not downloaded"
cmp -s "$www/cityscapes.h5" "$out_dir/cityscapes/$cs_file" || fail "cityscapes weights not copied"
(cd "$out_dir/pascal_voc" && sha256sum -c --quiet "$voc_file.sha256") || fail "bad record for pascal_voc"
mv "$www/pascal_voc.h5" "$www/pascal_voc.h5.away"  # another download attempt would now fail
run --configs "$tmp/cm" --baked "$baked" --out "$out_dir" --load pascal_voc
[ $rc -eq 0 ] || fail "second run: exit $rc: $out"
expect "present: $out_dir/pascal_voc/$voc_file" "$out"
mv "$www/pascal_voc.h5.away" "$www/pascal_voc.h5"

# 3. A download whose checksum does not match: exit 1, and nothing of that set is kept.
pin pascal_voc "$(sha "$www/cityscapes.h5")"
out_dir="$tmp/out3"
run --configs "$tmp/cm" --baked "$baked" --out "$out_dir" --load demo,pascal_voc
[ $rc -eq 1 ] || fail "bad checksum: exit $rc: $out"
expect "sha256 mismatch" "$out"
expect "ready 1: demo; failed 1: pascal_voc" "$out"
[ ! -e "$out_dir/pascal_voc" ] || fail "kept after a bad checksum: $(find "$out_dir/pascal_voc")"
[ -z "$(partials "$out_dir")" ] || fail "temporary files left: $(partials "$out_dir")"
[ -f "$out_dir/demo/demo.dlck" ] || fail "the good set was not kept beside the bad one"

# 4. A baked-in file that does not match the config is not used: downloaded instead.
printf 'retrained cityscapes weights\n' > "$tmp/cs_new.h5"
cp "$tmp/cs_new.h5" "$www/cityscapes.h5"
pin cityscapes "$(sha "$tmp/cs_new.h5")"
out_dir="$tmp/out4"
run --configs "$tmp/cm" --baked "$baked" --out "$out_dir" --load cityscapes
[ $rc -eq 0 ] || fail "mismatching baked-in file: exit $rc: $out"
expect "baked-in $baked/cityscapes/$cs_file not used: sha256 $(sha "$baked/cityscapes/$cs_file")" "$out"
expect "downloading $base/cityscapes.h5" "$out"
cmp -s "$tmp/cs_new.h5" "$out_dir/cityscapes/$cs_file" || fail "the download did not replace it"

# 5. A baked-in file with nothing to check it against is not trusted.
configmap cityscapes
rm "$baked/cityscapes/$cs_file.sha256"
out_dir="$tmp/out5"
run --configs "$tmp/cm" --baked "$baked" --out "$out_dir"
[ $rc -eq 0 ] || fail "unchecked baked-in file: exit $rc: $out"
expect "nothing to check it against" "$out"
expect "downloading $base/cityscapes.h5" "$out"

# 6. A failed download (404) keeps nothing either.
configmap pathology_paip
out_dir="$tmp/out6"
run --configs "$tmp/cm" --out "$out_dir" --load pathology_paip
[ $rc -eq 1 ] || fail "404: exit $rc: $out"
expect "download of $base/pathology_paip.h5 failed" "$out"
[ -z "$(ls -A "$out_dir")" ] || fail "kept after a failed download: $(ls -A "$out_dir")"

# 7. The repository layout works as --configs too (NAME/config.pbtxt; no --load: all).
out_dir="$tmp/out7"
mkdir -p "$tmp/repo_layout/demo"
cp "$src/models/demo/config.pbtxt" "$tmp/repo_layout/demo/"
run --configs "$tmp/repo_layout" --baked "$baked" --out "$out_dir"
[ $rc -eq 0 ] || fail "repository layout: exit $rc: $out"
cmp -s "$src/models/demo/demo.dlck" "$out_dir/demo/demo.dlck" || fail "demo not prepared"

# 8. Names that are not there, and usage errors.
configmap demo
run --configs "$tmp/cm" --baked "$baked" --out "$tmp/out8" --load demo,no_such_set
[ $rc -eq 1 ] || fail "unknown name: exit $rc: $out"
expect "no no_such_set/config.pbtxt or no_such_set.config.pbtxt in $tmp/cm; there: demo" "$out"
[ ! -e "$tmp/out8/no_such_set" ] || fail "unknown name left a folder"
run --configs "$tmp/cm" --out "$tmp/out9" --load "demo, pascal_voc"
[ $rc -eq 2 ] || fail "name with a space: exit $rc: $out"
expect "' pascal_voc' in --load is not a weight-set name" "$out"
run --out "$tmp/out9"
[ $rc -eq 2 ] || fail "no --configs: exit $rc: $out"
expect "--configs is required" "$out"
run --configs "$tmp/nowhere" --out "$tmp/out9"
[ $rc -eq 2 ] || fail "missing --configs folder: exit $rc: $out"
run --configs "$tmp/cm" --out "$tmp/out9" --fetch "$tmp/nowhere.sh"
[ $rc -eq 2 ] || fail "missing fetch script: exit $rc: $out"
run --bogus
[ $rc -eq 2 ] || fail "unknown option: exit $rc: $out"
run --help
[ $rc -eq 0 ] || fail "--help: exit $rc"
expect "Usage: scripts/prepare_models.sh" "$out"

# 9. The prepared repository is one a real worker loads, with the flags of the Deployment.
if [ -n "$worker" ]; then
  "$worker" --models "$tmp/out1" --load=demo --host 127.0.0.1 --port 0 --metrics-port 0 \
    --instances 1 --threads 1 > "$tmp/worker.log" 2>&1 &
  worker_pid=$!
  for _ in $(seq 600); do
    grep -q 'deeplab-worker: ready' "$tmp/worker.log" && break
    kill -0 "$worker_pid" 2>/dev/null || fail "worker exited: $(cat "$tmp/worker.log")"
    sleep 0.1
  done
  grep -q 'deeplab-worker: ready' "$tmp/worker.log" || fail "worker not ready: $(cat "$tmp/worker.log")"
  kill -TERM "$worker_pid"
  set +e; wait "$worker_pid"; rc=$?; set -e
  worker_pid=""
  [ $rc -eq 0 ] || fail "worker exit $rc after SIGTERM: $(cat "$tmp/worker.log")"
fi

echo "prepare_models_test: OK"
