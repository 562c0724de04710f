#!/usr/bin/env bash
# scripts/fetch_weights.sh without a network: the shipped configs, copied into a scratch
# repository with their weights.url pointed at local file:// fixtures.
# Usage: fetch_weights_test.sh SOURCE_DIR
set -euo pipefail
src=$1
script="$src/scripts/fetch_weights.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() {  # expect NEEDLE HAYSTACK
  case "$2" in *"$1"*) ;; *) fail "expected '$1' in: $2" ;; esac
}
# leftovers DIR: what DIR holds besides its config, one per line (hidden files included).
leftovers() { find "$1" -mindepth 1 ! -name config.pbtxt; }
# run ARGS...: runs the script, output in $out, exit status in $rc.
run() { set +e; out=$(bash "$script" --models "$repo" "$@" 2>&1); rc=$?; set -e; }

# Real curl when there is one (its flags get checked too); otherwise a stand-in that serves
# file:// URLs the way `curl -f -o FILE URL` would, since wget has no file:// support.
if ! command -v curl >/dev/null; then
  mkdir -p "$tmp/bin"
  cat > "$tmp/bin/curl" <<'EOF'
#!/usr/bin/env bash
out="" url=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2 ;;
    --retry|--retry-delay|--connect-timeout) shift 2 ;;
    -*) shift ;;
    *) url=$1; shift ;;
  esac
done
path=${url#file://}
[ "$path" != "$url" ] && [ -f "$path" ] || { echo "curl: cannot get $url" >&2; exit 37; }
cp "$path" "$out"
EOF
  chmod +x "$tmp/bin/curl"
  export PATH="$tmp/bin:$PATH"
fi
printf 'pretend these are Keras weights\n' > "$tmp/weights_a.h5"
printf 'a different file\n' > "$tmp/weights_b.h5"
sha_a=$(sha256sum "$tmp/weights_a.h5" | cut -d' ' -f1)
sha_b=$(sha256sum "$tmp/weights_b.h5" | cut -d' ' -f1)

repo="$tmp/models"
# A shipped config, with its url replaced: exercises the reading of real configs.
ship() {  # ship SHIPPED_NAME URL
  mkdir -p "$repo/$1"
  sed -E "s#^([[:space:]]*url:[[:space:]]*)\"[^\"]*\"#\1\"$2\"#" \
    "$src/models/$1/config.pbtxt" > "$repo/$1/config.pbtxt"
  grep -q "url: \"$2\"" "$repo/$1/config.pbtxt" || fail "could not rewrite the url of $1"
}
ship pascal_voc "file://$tmp/weights_a.h5"
ship pathology_camelyon "file://$tmp/weights_b.h5"
voc_file="$repo/pascal_voc/deeplabv3_xception_tf_dim_ordering_tf_kernels.h5"
cam_file="$repo/pathology_camelyon/camelyon_deeplabv3.h5"

# 1. No pinned hash: downloads, records the hash beside the file.
run
[ $rc -eq 0 ] || fail "first fetch: exit $rc: $out"
cmp -s "$tmp/weights_a.h5" "$voc_file" || fail "pascal_voc weights not in place"
cmp -s "$tmp/weights_b.h5" "$cam_file" || fail "camelyon weights not in place"
expect "fetched 2" "$out"
expect "no published hash" "$out"
[ "$(cat "$voc_file.sha256")" = "$sha_a  deeplabv3_xception_tf_dim_ordering_tf_kernels.h5" ] ||
  fail "record: $(cat "$voc_file.sha256")"
(cd "$repo/pascal_voc" && sha256sum -c --quiet deeplabv3_xception_tf_dim_ordering_tf_kernels.h5.sha256) ||
  fail "the record is not in sha256sum's format"
[ -z "$(find "$repo/pascal_voc" -name '*.part')" ] || fail "temporary file left behind"

# 2. Idempotent: a second run downloads nothing.
rm "$tmp/weights_a.h5"  # a download attempt would now fail
run pascal_voc
[ $rc -eq 0 ] || fail "second fetch: exit $rc: $out"
expect "present: $voc_file" "$out"
expect "fetched 0, already present 1" "$out"
printf 'pretend these are Keras weights\n' > "$tmp/weights_a.h5"

# 3. A file that changed since it was recorded is downloaded again.
printf 'corrupted' > "$voc_file"
run pascal_voc
[ $rc -eq 0 ] || fail "refetch: exit $rc: $out"
expect "downloading it again" "$out"
cmp -s "$tmp/weights_a.h5" "$voc_file" || fail "corrupted file not replaced"

# 4. A pinned hash that matches.
rm "$cam_file" "$cam_file.sha256"
sed -i -E "s#^([[:space:]]*sha256:[[:space:]]*)\"\"#\1\"$sha_b\"#" "$repo/pathology_camelyon/config.pbtxt"
grep -q "$sha_b" "$repo/pathology_camelyon/config.pbtxt" || fail "could not pin the hash"
run pathology_camelyon
[ $rc -eq 0 ] || fail "pinned fetch: exit $rc: $out"
expect "as $repo/pathology_camelyon/config.pbtxt expects" "$out"
cmp -s "$tmp/weights_b.h5" "$cam_file" || fail "pinned download not in place"

# 5. A pinned hash that does not match: fails loudly, keeps nothing.
rm "$cam_file" "$cam_file.sha256"
sed -i "s#$sha_b#$sha_a#" "$repo/pathology_camelyon/config.pbtxt"
run pathology_camelyon
[ $rc -eq 1 ] || fail "mismatch: exit $rc: $out"
expect "sha256 mismatch" "$out"
expect "expects $sha_a, the download has $sha_b; nothing kept" "$out"
expect "failed 1: pathology_camelyon" "$out"
[ -e "$cam_file" ] && fail "mismatching download was kept"
[ -z "$(leftovers "$repo/pathology_camelyon")" ] ||
  fail "files left after a mismatch: $(leftovers "$repo/pathology_camelyon")"

# 6. The text format as people write it: one line, single quotes, odd spacing, comments
#    holding decoy fields; and random weights, which have nothing to fetch.
mkdir -p "$repo/handwritten" "$repo/random"
cat > "$repo/handwritten/config.pbtxt" <<EOF
# weights { file: "decoy.h5" url: "file:///nonexistent" }
name: 'handwritten'
weights{format:WEIGHTS_FORMAT_KERAS_H5   file :'w.h5'  # file: "decoy2.h5"
  url:'file://$tmp/weights_b.h5' sha256:   "$sha_b"}
EOF
printf 'name: "random"\nweights {\n  format: WEIGHTS_FORMAT_RANDOM\n}\n' > "$repo/random/config.pbtxt"
run handwritten random
[ $rc -eq 0 ] || fail "handwritten: exit $rc: $out"
cmp -s "$tmp/weights_b.h5" "$repo/handwritten/w.h5" || fail "handwritten config misread: $out"
expect "random weights, nothing to fetch" "$out"

# 7. Failures are counted and named; the others still run.
run pascal_voc no_such_set
[ $rc -eq 1 ] || fail "unknown name: exit $rc: $out"
expect "no $repo/no_such_set/config.pbtxt" "$out"
expect "already present 1" "$out"
rm "$voc_file" "$voc_file.sha256"
sed -i "s#file://$tmp/weights_a.h5#file://$tmp/missing.h5#" "$repo/pascal_voc/config.pbtxt"
run pascal_voc
[ $rc -eq 1 ] || fail "failed download: exit $rc: $out"
expect "download of file://$tmp/missing.h5 failed" "$out"
[ -z "$(leftovers "$repo/pascal_voc")" ] || fail "files left after a failed download"

# 8. Usage errors.
set +e
bash "$script" --models "$tmp/nowhere" >/dev/null 2>&1; rc=$?
set -e
[ $rc -eq 2 ] || fail "missing repository: exit $rc"
set +e
bash "$script" --bogus >/dev/null 2>&1; rc=$?
set -e
[ $rc -eq 2 ] || fail "unknown option: exit $rc"

echo "fetch_weights_test: OK"
