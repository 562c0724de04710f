#!/usr/bin/env bash
# scripts/cluster.sh for real: a detached cluster on free loopback ports serving the shipped
# demo weight set, status, a second `up` refused, a segment request through it, `down`;
# then a foreground cluster stopped by a signal, leaving no process behind.
#   cluster_script_test.sh SOURCE_DIR BIN_DIR
set -euo pipefail
src="$1"
bin="$2"
work="$(mktemp -d)"
export DEEPLAB_CLUSTER_DIR="$work/state" DEEPLAB_BIN="$bin"
cleanup() {
  bash "$src/scripts/cluster.sh" down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A base port with base..base+2 free (a gateway and up to two workers), for gRPC and metrics.
pick_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 30000))
    port_free "$p" && port_free $((p + 1)) && port_free $((p + 2)) && { echo "$p"; return; }
  done
  fail "no free port"
}

# Only the demo weight set: the test does not depend on what else is in models/.
repo="$work/models"
mkdir -p "$repo"
cp -r "$src/models/demo" "$repo/"

port=$(pick_port)
metrics=$(pick_port)
http=$(pick_port)
out=$(bash "$src/scripts/cluster.sh" up --detach --workers 2 --models "$repo" --port "$port" \
  --metrics-port "$metrics" --http-port "$http" 2>&1) || fail "up failed: $out"
grep -q "gateway gRPC       127.0.0.1:$port" <<<"$out" || fail "no gateway endpoint in: $out"
grep -q "http://127.0.0.1:$metrics/metrics" <<<"$out" || fail "no metrics endpoint in: $out"
grep -q "http://127.0.0.1:$http/v2" <<<"$out" || fail "no REST endpoint in: $out"
# The REST port answers the Open Inference Protocol.
ready=$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
  "http://127.0.0.1:$http/v2/models/demo/ready") || fail "REST model ready failed"
grep -q '"ready":true' <<<"$ready" || fail "REST says demo is not ready: $ready"
# Worker K listens on port+K and metrics-port+K, and the gateway knows both.
grep -q "worker-2 gRPC      127.0.0.1:$((port + 2))" <<<"$out" || fail "no worker-2 endpoint in: $out"
grep -q "http://127.0.0.1:$((metrics + 2))/metrics" <<<"$out" || fail "no worker-2 metrics in: $out"
"$bin/deeplab" wait --server "127.0.0.1:$port" --model demo --timeout 60s >/dev/null ||
  fail "demo not ready"
# Outputs are captured before grep reads them: under pipefail, `cmd | grep -q` fails at
# random when grep stops at its match and cmd is still writing (SIGPIPE).
for _ in $(seq 100); do
  models=$("$bin/deeplab" models --server "127.0.0.1:$port" || true)
  grep -q "2 workers, 2 healthy" <<<"$models" && break
  sleep 0.2
done
grep -q "2 workers, 2 healthy" <<<"$models" ||
  fail "the gateway does not see both workers: $models"

status=$(bash "$src/scripts/cluster.sh" status)
grep -q "worker-1 gRPC" <<<"$status" || fail "status lists no worker: $status"
set +e
again=$(bash "$src/scripts/cluster.sh" up --detach --models "$repo" --port "$port" 2>&1)
code=$?
set -e
[ $code -eq 2 ] || fail "a second up exited $code, expected 2: $again"
grep -q "already running" <<<"$again" || fail "second up did not say why: $again"

"$bin/deeplab" segment --server "127.0.0.1:$port" --model demo --out "$work/out" --quiet \
  "$src/models/demo/samples/images" || fail "segment through the cluster failed"
[ -f "$work/out/000000_overlay.png" ] || fail "no overlay written"
exposition=$(exec 3<>"/dev/tcp/127.0.0.1/$metrics"; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3)
grep -q 'deeplab_gateway_requests_total{code="OK",model="demo"}' <<<"$exposition" ||
  grep -q 'deeplab_gateway_requests_total{model="demo",code="OK"}' <<<"$exposition" ||
  fail "the gateway's metrics do not count the requests"

mapfile -t pids < <(awk '{print $1}' "$DEEPLAB_CLUSTER_DIR/pids")
down=$(bash "$src/scripts/cluster.sh" down)
grep -q stopped <<<"$down" || fail "down did not stop: $down"
for pid in "${pids[@]}"; do
  kill -0 "$pid" 2>/dev/null && fail "process $pid still running after down"
done
set +e
bash "$src/scripts/cluster.sh" down >/dev/null 2>&1
code=$?
set -e
[ $code -eq 2 ] || fail "down with nothing running exited $code, expected 2"

# Foreground: a signal (Ctrl-C or SIGTERM) stops everything.
port=$(pick_port)
metrics=$(pick_port)
http=$(pick_port)
bash "$src/scripts/cluster.sh" up --models "$repo" --port "$port" --metrics-port "$metrics" \
  --http-port "$http" >"$work/foreground.log" 2>&1 &
script_pid=$!
for _ in $(seq 600); do
  grep -q "press Ctrl-C" "$work/foreground.log" && break
  kill -0 $script_pid 2>/dev/null || fail "foreground up exited: $(cat "$work/foreground.log")"
  sleep 0.2
done
grep -q "press Ctrl-C" "$work/foreground.log" || fail "foreground cluster never became ready"
mapfile -t pids < <(awk '{print $1}' "$DEEPLAB_CLUSTER_DIR/pids")
kill -TERM $script_pid
wait $script_pid || fail "foreground up did not exit 0 on SIGTERM: $(cat "$work/foreground.log")"
for pid in "${pids[@]}"; do
  kill -0 "$pid" 2>/dev/null && fail "process $pid still running after the signal"
done
echo "cluster_script_test: ok"
