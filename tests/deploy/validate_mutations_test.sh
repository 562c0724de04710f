#!/usr/bin/env bash
# deploy/validate.sh must fail on broken manifests, each time for the right reason: it runs
# on a scratch copy of deploy/ with one mistake at a time, and expects exit 1 and a message
# naming the mistake.
# Usage: validate_mutations_test.sh SOURCE_DIR [GATEWAY_BINARY WORKER_BINARY]
# Exit 77 (skipped) where validate.sh itself skips (no kubectl, node or npm).
set -euo pipefail
src=$1
binaries=()
[ $# -lt 3 ] || binaries=(--gateway "$2" --worker "$3")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# The copy: deploy/ (the manifests, the validator and any installed packages), the
# configs of models/ that sync-model-configs.sh compares against, and the init container's
# script, whose flags the validator reads.
mkdir -p "$tmp/repo/models" "$tmp/repo/scripts"
cp "$src/scripts/prepare_models.sh" "$src/scripts/fetch_weights.sh" "$src/scripts/model_config.sh" \
  "$tmp/repo/scripts/"
# -a keeps the times that tell validate.sh its node_modules is up to date (a copy, never a
# link: npm ci would empty the original through it).
cp -a "$src/deploy" "$tmp/repo/deploy"
for config in "$src"/models/*/config.pbtxt; do
  name=$(basename "$(dirname "$config")")
  mkdir -p "$tmp/repo/models/$name"
  cp "$config" "$tmp/repo/models/$name/"
done
# deploy/prometheus has tests of its own; here its check would only slow every run.
rm -f "$tmp/repo/deploy/prometheus/check.sh"
k8s="$tmp/repo/deploy/k8s"

set +e
out=$(bash "$tmp/repo/deploy/validate.sh" "${binaries[@]}" 2>&1); rc=$?
set -e
[ $rc -eq 77 ] && { echo "$out" | tail -n1; exit 77; }
[ $rc -eq 0 ] || fail "the unbroken copy does not validate (exit $rc): $out"

# The mistakes below need only the programs' flag lists, which validate.mjs reads from
# --helpfull: read once, and served from a file to every later run (a program takes over a
# second to load LibTorch and say them; 2 of them in 30 runs added a minute to this test).
if [ ${#binaries[@]} -gt 0 ]; then
  mkdir -p "$tmp/bin"
  "$2" --helpfull >"$tmp/gateway.help" 2>/dev/null || true
  "$3" --helpfull >"$tmp/worker.help" 2>/dev/null || true
  for program in gateway worker; do
    printf '#!/bin/sh\ncat "%s"\nexit 1\n' "$tmp/$program.help" >"$tmp/bin/$program"
    chmod +x "$tmp/bin/$program"
  done
  binaries=(--gateway "$tmp/bin/gateway" --worker "$tmp/bin/worker")
fi

# mutate FILE PERL_SUBSTITUTION EXPECTED_MESSAGE [BUILD]: one mistake, queued. FILE is
# relative to deploy/k8s; validate.sh must fail (exit 1) saying EXPECTED_MESSAGE. Only BUILD
# (validate.sh --only; default cpu, the overlay with the components it lists) is built: the
# unbroken copy above was checked whole, and one build shows each mistake.
# mutate_schema: the same, for a mistake the API schemas catch, after which validate.mjs
# makes none of its own checks of that build. mutate_alone: for a mistake after which
# validate.sh checks nothing else at all (a broken `kubectl kustomize`, configs out of step
# with models/).
files=() substitutions=() messages=() builds=() kinds=()
mutate() {
  files+=("$1") substitutions+=("$2") messages+=("$3") builds+=("${4:-cpu}") kinds+=(check)
}
mutate_schema() {
  mutate "$@"
  kinds[$((${#kinds[@]} - 1))]=schema
}
mutate_alone() {
  mutate "$@"
  kinds[$((${#kinds[@]} - 1))]=alone
}

# Runs the queued mistakes, several to a validate.sh run (it reports every problem of a
# build), which takes a third of the time of one run each: the mistakes of a run share
# their build and their kind and never their file, and those queued by mutate_alone run
# alone. Every expected message must come.
checked=0
run_group() {
  local build=$1; shift
  local i file
  for i in "$@"; do
    file="$k8s/${files[$i]}"
    cp "$file" "$tmp/saved.$i"
    perl -0pi -e "${substitutions[$i]}" "$file"
    cmp -s "$file" "$tmp/saved.$i" &&
      fail "mutation '${substitutions[$i]}' changed nothing in ${files[$i]}"
  done
  set +e
  out=$(bash "$tmp/repo/deploy/validate.sh" "${binaries[@]}" --only "$build" 2>&1); rc=$?
  set -e
  for i in "$@"; do cp "$tmp/saved.$i" "$k8s/${files[$i]}"; done
  local what=""
  for i in "$@"; do what+=" ${files[$i]} with '${substitutions[$i]}';"; done
  [ $rc -eq 1 ] || fail "$build:$what validate.sh exited $rc, expected 1: $out"
  # A message missing from a group's run may be masked by another mistake of the group (a
  # check that needs an object another mistake broke): that mistake runs again alone.
  for i in "$@"; do
    case "$out" in
      *"${messages[$i]}"*) checked=$((checked + 1)) ;;
      *) [ $# -gt 1 ] ||
           fail "${files[$i]} with '${substitutions[$i]}': expected '${messages[$i]}' in: $out"
         masked+=("$i") ;;
    esac
  done
}
run_queued() {
  local -a left=("${!files[@]}")
  while [ ${#left[@]} -gt 0 ]; do
    local build=${builds[${left[0]}]} group=() taken=" " rest=() i
    for i in "${left[@]}"; do
      if [ "${builds[$i]}" = "$build" ] && [[ "$taken" != *" ${files[$i]} "* ]] &&
         { [ ${#group[@]} -eq 0 ] ||
           { [ "${kinds[$i]}" = "${kinds[${group[0]}]}" ] && [ "${kinds[$i]}" != alone ]; }; }; then
        group+=("$i")
        taken+="${files[$i]} "
      else
        rest+=("$i")
      fi
    done
    masked=()
    run_group "$build" "${group[@]}"
    for i in "${masked[@]+"${masked[@]}"}"; do run_group "$build" "$i"; done
    left=("${rest[@]+"${rest[@]}"}")
  done
}

# Schema: a misspelt field, and a value of the wrong type.
mutate_schema base/worker.yaml 's/readOnlyRootFilesystem: true/readOnlyRootFileSystem: true/' \
  "unknown field spec.template.spec.initContainers[0].securityContext.readOnlyRootFileSystem"
mutate_schema base/gateway.yaml 's/containerPort: 9100/containerPort: "9100"/' \
  "Deployment/deeplab-gateway: schema: /spec/template/spec/containers/0/ports/1/containerPort must be integer"
mutate_schema components/keda/scaledobject.yaml 's/pollingInterval: 15/pollingIntervall: 15/' \
  "ScaledObject/deeplab-worker: unknown field spec.pollingIntervall" cpu+keda
mutate components/keda/scaledobject.yaml 's/threshold: "1"/treshold: "1"/' \
  "prometheus trigger has no metadata.threshold" cpu+keda
# Ports: a probe on a port the container does not have; a flag and a port that disagree.
mutate base/gateway.yaml 's/(livenessProbe:\n\s+tcpSocket:\n\s+port:) grpc/$1 grcp/' \
  "livenessProbe port grcp is not a container port"
mutate base/worker.yaml 's/--metrics-port=9101/--metrics-port=9102/' \
  "port metrics is 9101 but --metrics-port is 9102"
# Names: the gateway's DNS name, a Service selector, an autoscaler's target.
mutate base/gateway.yaml 's#dns:///deeplab-worker:8001#dns:///deeplab-workers:8001#' \
  "--workers names Service deeplab-workers, which does not exist"
mutate base/gateway.yaml 's#dns:///deeplab-worker:8001#dns:///deeplab-worker:8000#' \
  "--workers port 8000 is not a port of Service deeplab-worker"
mutate base/worker.yaml 's/clusterIP: None\n//' "it must be headless (clusterIP: None)"
mutate base/gateway.yaml 's/(kind: Service\n(?:.*\n)*?spec:\n(?:.*\n)*?  selector:\n\s+app.kubernetes.io\/name:) deeplab-gateway/$1 deeplab-gatway/' \
  "Service/deeplab-gateway: selector"
mutate base/worker-autoscaler.yaml 's/(scaleTargetRef:\n(?:.*\n)*?\s+name:) deeplab-worker/$1 deeplab-wroker/' \
  "scale target Deployment/deeplab-wroker does not exist"
# Flags a program does not have.
mutate base/worker.yaml 's/--baked=/--bakd=/' "prepare_models.sh has no flag --bakd"
if [ ${#binaries[@]} -gt 0 ]; then
  mutate overlays/gpu/worker-gpu-args.yaml 's/value: --pipeline-threads=4/value: --pipline-threads=4/' \
    "worker has no flag --pipline-threads" gpu
fi
# The GPU overlay edits the base's worker flags in place: a reordered base list stops its
# build rather than lose a flag.
mutate_alone base/worker.yaml 's/--instances=2/--instances=3/' "FAIL gpu: kubectl kustomize" gpu
# Shutdown: a grace period the drain does not fit in.
mutate base/worker.yaml 's/terminationGracePeriodSeconds: 90/terminationGracePeriodSeconds: 70/' \
  "terminationGracePeriodSeconds 70 does not exceed --drain-timeout (60s) + preStop sleep (15s)"
# Weight sets: a name with no config; a config out of step with models/.
mutate overlays/gpu/kustomization.yaml 's/load=demo,pascal_voc,cityscapes/load=demo,pascal_vco/' \
  "--load names 'pascal_vco', which has no pascal_vco.config.pbtxt" gpu
mutate_alone base/model-configs/demo.config.pbtxt 's/max_batch_size: 32/max_batch_size: 16/' \
  "differs or missing: demo.config.pbtxt"
# Components: KEDA left beside the HPA; a shared volume that keeps the emptyDir too.
mutate components/keda/kustomization.yaml 's/\$patch: delete/\$patch: merge/' \
  "is already scaled by" cpu+keda
mutate components/models-pvc/kustomization.yaml 's/\s+# null removes.*\n\s+emptyDir: null//' \
  "volume models has 2 sources" cpu+models-pvc
# Listening: a `command` that replaces the image's entrypoint, and its --host=0.0.0.0.
mutate base/gateway.yaml 's/\n\s+- --host=0.0.0.0//' \
  "container gateway: listens on 127.0.0.1 (--host)"
# TLS: a grpc probe left on a TLS port, or beside the probe meant to replace it.
mutate components/tls/gateway.yaml 's/\n\s+readinessProbe:\n\s+grpc: null\n\s+tcpSocket:\n\s+port: grpc\n\s+initialDelaySeconds: 5//' \
  "readinessProbe is a grpc probe on port 8000, which speaks TLS only"
mutate components/tls/worker.yaml 's/(startupProbe:)\n\s+grpc: null/$1/' \
  "startupProbe has 2 handlers (exec, grpc)"
# TLS: the gateway dialling TLS workers in plaintext, or checking them for the wrong name.
mutate components/tls/kustomization.yaml 's/\n\s+- op: add\n\s+path: \S+\n\s+value: --worker-tls-ca=\S+//' \
  "speaks TLS (--tls-cert) but the gateway dials it in plaintext"
mutate components/tls/kustomization.yaml 's/--worker-tls-server-name=deeplab-worker\./--worker-tls-server-name=deeplab-workers./' \
  "is not a DNS name of Service deeplab-worker in namespace deeplab"
# TLS files: not where a volume is mounted; unreadable to the server's user; a Secret
# item that is not there; a Secret the README does not document.
mutate components/tls/gateway.yaml 's#mountPath: /etc/deeplab/worker-tls#mountPath: /etc/deeplab/workers-tls#' \
  "--worker-tls-ca=/etc/deeplab/worker-tls/ca.crt is not in a mounted volume"
mutate components/tls/gateway.yaml 's/\s+securityContext:\n(\s+#.*\n)*\s+fsGroup: 10001//' \
  "with no fsGroup: user 10001 cannot read it"
mutate components/tokens/kustomization.yaml 's/path: tokens.pbtxt/path: token.pbtxt/' \
  "volume tokens has no item tokens.pbtxt" cpu+tokens
mutate README.md 's/`deeplab-worker-tls`/deeplab-worker-tls/g' \
  "Secret/deeplab-worker-tls (read by Deployment/deeplab-worker volume tls) is not documented"
# NetworkPolicy: the gateway shut out of the workers; their gRPC port opened to everyone.
mutate base/network-policy.yaml 's/(podSelector:\n\s+matchLabels:\n\s+app.kubernetes.io\/name:) deeplab-gateway/$1 deeplab-gatway/' \
  "lets the pods of Deployment/deeplab-gateway reach its gRPC port 8001"
mutate base/network-policy.yaml 's/- port: metrics/- port: grpc/' \
  "lets more than the pods of Deployment/deeplab-gateway reach the workers' gRPC port 8001"
# kustomize itself: a resource that is not there.
mutate_alone base/kustomization.yaml 's/- worker-autoscaler.yaml/- worker-autoscaler.yml/' \
  "FAIL cpu: kubectl kustomize"

run_queued
[ "$checked" -eq "${#files[@]}" ] || fail "$checked of ${#files[@]} mistakes checked"
echo "validate_mutations_test: OK ($checked mistakes caught)"
