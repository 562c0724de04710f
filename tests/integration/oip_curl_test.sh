#!/usr/bin/env bash
# The Open Inference Protocol's REST form with plain curl, as a user would call it: a worker
# serving the shipped demo weight set and a gateway with --http-port 0 on loopback; health,
# metadata, an infer with JSON data, the binary data extension (the curl example of
# docs/api.md, run as written there but for the port) and errors. See docs/api.md, "The Open
# Inference Protocol (KServe v2)". python3 only reads the JSON answers.
#   oip_curl_test.sh SOURCE_DIR WORKER_BINARY GATEWAY_BINARY
set -euo pipefail
src="$(cd "$1" && pwd)"
worker_bin="$2"
gateway_bin="$3"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL $*" >&2
  for log in "$work"/*.err; do
    [ -f "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
  done
  exit 1
}
ok() { echo "ok   $*"; }

# Waits (up to 60 s) for a line matching $2 in file $1.
wait_line() {
  for _ in $(seq 600); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# req METHOD PATH [curl args...]: sets $code; the body is in $work/body, headers in
# $work/headers.
req() {
  local method="$1" path="$2"
  shift 2
  code=$(curl -sS -X "$method" -o "$work/body" -D "$work/headers" -w '%{http_code}' "$@" \
    "$url$path") || fail "curl $method $path did not get an answer"
}

# json EXPR: EXPR (Python, over the JSON body `d`) is true.
json() {
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' \
    "$work/body" "$1" 2>/dev/null
}

body() { head -c 300 "$work/body"; }

# Only the demo weight set: the test does not depend on what else is in models/.
mkdir -p "$work/models"
cp -r "$src/models/demo" "$work/models/"

"$worker_bin" --models "$work/models" --threads 1 --host 127.0.0.1 --port 0 --metrics-port 0 \
  >"$work/worker.out" 2>"$work/worker.err" &
pids+=($!)
wait_line "$work/worker.out" '^deeplab-worker: ready' || fail "the worker did not start"
worker=$(sed -n 's/^deeplab-worker: grpc //p' "$work/worker.out")

"$gateway_bin" --workers "$worker" --status-interval 200ms --host 127.0.0.1 --port 0 \
  --metrics-port 0 --http-port 0 >"$work/gateway.out" 2>"$work/gateway.err" &
pids+=($!)
wait_line "$work/gateway.out" '^deeplab-gateway: http ' ||
  fail "the gateway printed no 'deeplab-gateway: http HOST:PORT' line: $(cat "$work/gateway.out")"
http=$(sed -n 's/^deeplab-gateway: http //p' "$work/gateway.out")
url="http://$http"
ok "the gateway serves REST on $http"

req GET /v2/health/live
[ "$code" = 200 ] && json 'd == {"live": True}' || fail "GET /v2/health/live: $code $(body)"
ok "GET /v2/health/live: 200 {\"live\": true}"

for _ in $(seq 300); do
  req GET /v2/health/ready
  [ "$code" = 200 ] && break
  sleep 0.1
done
[ "$code" = 200 ] && json 'd == {"ready": True}' || fail "GET /v2/health/ready: $code $(body)"
ok "GET /v2/health/ready: 200 {\"ready\": true}"

req GET /v2
[ "$code" = 200 ] && json 'd["name"] == "deeplab-serve" and "binary_tensor_data" in d["extensions"]' ||
  fail "GET /v2: $code $(body)"
ok "GET /v2: server metadata with the binary_tensor_data extension"

req GET /v2/models/demo
[ "$code" = 200 ] && json 'd["name"] == "demo" and d["versions"] == ["1"] and d["inputs"][0]["name"] == "image" and sorted(o["name"] for o in d["outputs"]) == ["class_stats", "label_png", "labels", "overlay_png", "probabilities"]' ||
  fail "GET /v2/models/demo: $code $(body)"
ok "GET /v2/models/demo: model metadata"

req GET /v2/models/demo/versions/1/ready
[ "$code" = 200 ] && json 'd == {"name": "demo", "ready": True}' ||
  fail "GET /v2/models/demo/versions/1/ready: $code $(body)"
ok "GET /v2/models/demo/versions/1/ready: 200, ready"

# JSON data: two 2x3 images as nested UINT8 arrays; labels and class_stats back as JSON.
req POST /v2/models/demo/infer -H 'Content-Type: application/json' --data-binary \
  '{"id":"curl-1","inputs":[{"name":"image","datatype":"UINT8","shape":[2,2,3,3],"data":[[[[0,0,0],[255,255,255],[9,9,9]],[[1,2,3],[4,5,6],[7,8,9]]],[[[200,0,0],[0,200,0],[0,0,200]],[[50,50,50],[60,60,60],[70,70,70]]]]}],"outputs":[{"name":"labels"},{"name":"class_stats"}]}'
[ "$code" = 200 ] && json 'd["model_name"] == "demo" and d["id"] == "curl-1" and d["outputs"][0]["name"] == "labels" and d["outputs"][0]["shape"] == [2, 2, 3] and len(d["outputs"][0]["data"]) == 12 and max(d["outputs"][0]["data"]) < 5 and d["outputs"][1]["shape"] == [2, 5] and abs(sum(d["outputs"][1]["data"]) - 2) < 1e-4' ||
  fail "infer with UINT8 JSON data: $code $(body)"
ok "POST /v2/models/demo/infer with UINT8 JSON data: labels [2, 2, 3], class_stats [2, 5]"

# A sample as base64 JSON.
b64=$(base64 -w0 "$src/models/demo/samples/images/000001.png")
req POST /v2/models/demo/versions/1/infer -H 'Content-Type: application/json' --data-binary \
  '{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"parameters":{"content_type":"base64"},"data":["'"$b64"'"]}],"outputs":[{"name":"label_png"}]}'
[ "$code" = 200 ] && json 'd["outputs"][0]["shape"] == [1] and d["outputs"][0]["parameters"]["content_type"] == "base64" and __import__("base64").b64decode(d["outputs"][0]["data"][0]).startswith(b"\x89PNG")' ||
  fail "infer with base64 BYTES: $code $(body)"
ok "POST .../versions/1/infer with a base64 PNG: label_png back as base64"

# The binary data extension: the curl example of docs/api.md, run from the source folder as
# written there, but for the port.
example=$(awk '/^# REST with curl/ { f = 1 } f && /^```/ { exit } f' "$src/docs/api.md")
grep -q 'http://127.0.0.1:8080/v2/models/demo/infer' <<<"$example" ||
  fail "docs/api.md has no curl example calling http://127.0.0.1:8080/v2/models/demo/infer"
(cd "$src" && bash -c "set -o pipefail; ${example//http:\/\/127.0.0.1:8080/$url}") >"$work/body" ||
  fail "the curl example of docs/api.md failed: $(body)"
json 'd["model_name"] == "demo" and d["outputs"][0]["name"] == "class_stats" and d["outputs"][0]["shape"] == [1, 5] and abs(sum(d["outputs"][0]["data"]) - 1) < 1e-4' ||
  fail "the curl example of docs/api.md answered: $(body)"
ok "the curl example of docs/api.md (a binary PNG in, class_stats as JSON)"

# Binary data back: binary_data_output, labels of a 128x128 sample after the JSON.
img="$src/models/demo/samples/images/000002.png"
size=$(stat -c%s "$img")
head_json='{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":'$((size + 4))'}}],"parameters":{"binary_data_output":true},"outputs":[{"name":"labels"}]}'
{ printf '%s' "$head_json"; python3 -c 'import struct,sys; sys.stdout.buffer.write(struct.pack("<I", int(sys.argv[1])))' "$size"; cat "$img"; } >"$work/request"
req POST /v2/models/demo/infer -H "Inference-Header-Content-Length: ${#head_json}" \
  --data-binary @"$work/request"
[ "$code" = 200 ] || fail "infer with binary_data_output: $code $(body)"
grep -qi '^Content-Type: application/octet-stream' "$work/headers" ||
  fail "binary answer without Content-Type application/octet-stream: $(cat "$work/headers")"
json_length=$(sed -n 's/^[Ii]nference-[Hh]eader-[Cc]ontent-[Ll]ength: *\([0-9]*\).*/\1/p' "$work/headers")
[ -n "$json_length" ] || fail "binary answer without Inference-Header-Content-Length: $(cat "$work/headers")"
[ "$(stat -c%s "$work/body")" = $((json_length + 128 * 128)) ] ||
  fail "binary answer of $(stat -c%s "$work/body") bytes, expected $json_length + 16384"
head -c "$json_length" "$work/body" >"$work/body.json"
mv "$work/body.json" "$work/body"
json 'd["outputs"][0]["shape"] == [1, 128, 128] and d["outputs"][0]["parameters"]["binary_data_size"] == 16384 and "data" not in d["outputs"][0]' ||
  fail "binary answer's JSON: $(body)"
ok "binary_data_output: labels as 16384 bytes after the JSON (Inference-Header-Content-Length)"

# Errors.
req POST /v2/models/no_such_model/infer -H "Inference-Header-Content-Length: ${#head_json}" \
  --data-binary @"$work/request"
[ "$code" = 404 ] && json 'list(d) == ["error"] and "no_such_model" in d["error"]' ||
  fail "infer of an unknown model: $code $(body)"
ok "infer of an unknown model: 404 {\"error\": ...}"

req GET /v2/models/no_such_model
[ "$code" = 404 ] && json 'list(d) == ["error"]' || fail "metadata of an unknown model: $code $(body)"
ok "GET /v2/models/no_such_model: 404"

req GET /v2/models/demo/infer
[ "$code" = 405 ] && json 'list(d) == ["error"]' || fail "GET .../infer: $code $(body)"
ok "GET /v2/models/demo/infer: 405"

req POST /v2/models/demo/infer -H 'Content-Type: application/json' --data-binary \
  '{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"parameters":{"content_type":"base64"},"data":["bm90IGFuIGltYWdl"]}]}'
[ "$code" = 400 ] && json 'd["error"].startswith("image 0: ")' || fail "garbage image: $code $(body)"
ok "infer of a garbage image: 400 {\"error\": \"image 0: ...\"}"

echo "oip_curl_test: all checks passed"
