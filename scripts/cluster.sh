#!/usr/bin/env bash
# A local deeplab-serve cluster on loopback: one gateway and N workers serving the model
# repository.
#
#   bash scripts/cluster.sh up [--workers N] [--port 8000] [--metrics-port 9100] [--http-port 8080]
#                              [--models DIR] [--wait-for NAME[,NAME...]] [--detach]
#   bash scripts/cluster.sh down
#   bash scripts/cluster.sh status
#
# `up` starts the workers and the gateway, waits until the weight sets in --wait-for
# (default: demo) are ready, and prints the endpoints. In the foreground, Ctrl-C stops
# everything (each process drains its in-flight requests first); with --detach it returns
# and `down` stops the cluster later. Worker K listens on port+K (gRPC) and
# metrics-port+K (metrics). Logs and process ids are kept in $DEEPLAB_CLUSTER_DIR
# (default: .cluster/ in the repository).
#
# Exit codes: 0 ok; 1 a process failed to start or did not become ready (its log is shown);
# 2 bad arguments, or a cluster is already running / not running.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DEEPLAB_BIN:-$root/${BUILD_DIR:-build}/bin}"
state="${DEEPLAB_CLUSTER_DIR:-$root/.cluster}"

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "cluster: $2" >&2; exit "$1"; }

# Pids recorded by a running cluster, those still alive.
live_pids() {
  [ -f "$state/pids" ] || return 0
  local pid
  while read -r pid _; do
    if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
  done <"$state/pids"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# SIGTERM, then wait for the drain (the servers finish in-flight requests), then SIGKILL.
stop_pids() {
  local pids=("$@") deadline=$((SECONDS + 70)) pid
  [ ${#pids[@]} -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

cmd_down() {
  mapfile -t pids < <(live_pids)
  if [ ${#pids[@]} -eq 0 ]; then
    rm -f "$state/pids" "$state/endpoints"
    die 2 "no local cluster is running (nothing recorded in $state)"
  fi
  echo "stopping ${#pids[@]} processes (they finish in-flight requests first)..."
  stop_pids "${pids[@]}"
  rm -f "$state/pids" "$state/endpoints"
  echo "stopped"
}

cmd_status() {
  mapfile -t pids < <(live_pids)
  if [ ${#pids[@]} -eq 0 ]; then
    echo "no local cluster is running"
    return 3
  fi
  cat "$state/endpoints"
  "$bin/deeplab" models --server "$(head -n1 "$state/endpoints" | awk '{print $NF}')" || true
}

cmd_up() {
  local workers=1 port=8000 metrics_port=9100 http_port=8080 models="$root/models" wait_for=demo
  local detach=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --workers) workers="$2"; shift 2 ;;
      --port) port="$2"; shift 2 ;;
      --metrics-port) metrics_port="$2"; shift 2 ;;
      --http-port) http_port="$2"; shift 2 ;;
      --models) models="$2"; shift 2 ;;
      --wait-for) wait_for="$2"; shift 2 ;;
      --detach) detach=1; shift ;;
      -h|--help) usage; exit 0 ;;
      *) die 2 "unknown argument '$1' (see: bash scripts/cluster.sh --help)" ;;
    esac
  done
  [[ "$workers" =~ ^[1-9][0-9]*$ ]] || die 2 "--workers must be a positive number"
  [[ "$port" =~ ^[0-9]+$ && "$metrics_port" =~ ^[0-9]+$ && "$http_port" =~ ^[0-9]+$ ]] ||
    die 2 "ports must be numbers"
  [ -d "$models" ] || die 2 "model repository '$models' is not a folder"
  for program in deeplab deeplab-gateway deeplab-worker; do
    [ -x "$bin/$program" ] || die 2 "$bin/$program is missing: build first (bash scripts/build.sh)"
  done
  mapfile -t running < <(live_pids)
  [ ${#running[@]} -eq 0 ] || die 2 "a local cluster is already running (bash scripts/cluster.sh down)"
  port_in_use "$http_port" && die 2 "port $http_port is in use (choose another with --http-port)"
  local k
  for ((k = 0; k <= workers; k++)); do
    port_in_use $((port + k)) && die 2 "port $((port + k)) is in use (choose another with --port)"
    port_in_use $((metrics_port + k)) &&
      die 2 "port $((metrics_port + k)) is in use (choose another with --metrics-port)"
  done
  mkdir -p "$state"
  : >"$state/pids"

  # The cores are shared: each worker gets its share for LibTorch.
  local cores threads
  cores=$(nproc)
  threads=$(( cores / workers > 0 ? cores / workers : 1 ))
  local start=(nohup)
  [ $detach -eq 1 ] && start=(setsid nohup)
  local addresses=()
  for ((k = 1; k <= workers; k++)); do
    "${start[@]}" "$bin/deeplab-worker" --models "$models" --host 127.0.0.1 \
      --port $((port + k)) --metrics-port $((metrics_port + k)) --threads "$threads" \
      >"$state/worker-$k.log" 2>&1 </dev/null &
    echo "$! worker-$k" >>"$state/pids"
    addresses+=("127.0.0.1:$((port + k))")
  done
  "${start[@]}" "$bin/deeplab-gateway" --host 127.0.0.1 --port "$port" \
    --metrics-port "$metrics_port" --http-port "$http_port" \
    --workers "$(IFS=,; echo "${addresses[*]}")" \
    >"$state/gateway.log" 2>&1 </dev/null &
  echo "$! gateway" >>"$state/pids"

  if [ $detach -eq 0 ]; then
    # Foreground: Ctrl-C (or SIGTERM) drains and stops everything.
    trap 'echo; cmd_stop_quietly; exit 0' INT TERM
  fi

  local wait_args=(wait --server "127.0.0.1:$port" --timeout 180s) name
  IFS=, read -r -a names <<<"$wait_for"
  for name in "${names[@]}"; do [ -n "$name" ] && wait_args+=(--model "$name"); done
  echo "starting 1 gateway and $workers worker(s); waiting for: $wait_for"
  if ! "$bin/deeplab" "${wait_args[@]}"; then
    local log
    for log in "$state"/*.log; do
      echo "---- $(basename "$log") (last lines)" >&2
      tail -n 15 "$log" >&2
    done
    cmd_stop_quietly
    die 1 "the cluster did not become ready"
  fi

  {
    echo "gateway gRPC       127.0.0.1:$port"
    echo "gateway metrics    http://127.0.0.1:$metrics_port/metrics"
    echo "gateway REST       http://127.0.0.1:$http_port/v2 (Open Inference Protocol)"
    for ((k = 1; k <= workers; k++)); do
      echo "worker-$k gRPC      127.0.0.1:$((port + k))"
      echo "worker-$k metrics   http://127.0.0.1:$((metrics_port + k))/metrics"
    done
    echo "logs               $state/"
  } >"$state/endpoints"
  echo "ready:"
  sed 's/^/  /' "$state/endpoints"
  echo "try:   $bin/deeplab segment --server 127.0.0.1:$port --model demo models/demo/samples/images"
  if [ $detach -eq 1 ]; then
    echo "stop:  bash scripts/cluster.sh down"
    return 0
  fi
  echo "press Ctrl-C to stop"
  # Stay until a process exits or Ctrl-C; a process that dies takes the cluster down.
  local pid
  while true; do
    while read -r pid _; do
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "cluster: process $pid exited; stopping the rest (logs in $state/)" >&2
        cmd_stop_quietly
        exit 1
      fi
    done <"$state/pids"
    sleep 1 &
    wait $! || true
  done
}

cmd_stop_quietly() {
  mapfile -t pids < <(live_pids)
  stop_pids "${pids[@]}"
  rm -f "$state/pids" "$state/endpoints"
  echo "stopped"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
