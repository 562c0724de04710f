#!/usr/bin/env bash
# Checks the monitoring files: Prometheus configs, rules and their unit tests, the generated
# PrometheusRule, the metric names in rules and dashboard against the code, and that the
# tests notice a broken alert.
#
#   bash deploy/prometheus/check.sh
#
# Needs promtool (Debian: the `prometheus` package) and /usr/bin/python3 with python3-yaml;
# installs nothing. Exit codes: 0 all good; 1 a check failed; 77 promtool missing (skipped).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python=/usr/bin/python3

if ! command -v promtool >/dev/null 2>&1; then
  echo "SKIPPED: promtool not found"
  echo "(Debian: apt-get install --no-install-recommends prometheus)" >&2
  exit 77
fi
if ! "$python" -c 'import yaml' 2>/dev/null; then
  echo "check: $python cannot import yaml; install python3-yaml" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$here"

step() { echo; echo "== $*"; }

# Debian builds promtool without Kubernetes service discovery, so it rejects
# kubernetes_sd_configs outright. Then the rest of the file is still checked, with each
# kubernetes_sd_configs block (its role checked here) swapped for a static target.
check_config() {
  local config="$1" out
  if out="$(promtool check config "$config" 2>&1)"; then
    echo "$out"
    return 0
  fi
  if ! grep -q 'field kubernetes_sd_configs not found' <<<"$out"; then
    echo "$out" >&2
    return 1
  fi
  echo "note: this promtool has no Kubernetes discovery; checking $config with" \
    "kubernetes_sd_configs replaced by static_configs"
  "$python" - "$config" "$tmp/$config" <<'PY'
import pathlib, sys, yaml
source, target = map(pathlib.Path, sys.argv[1:])
config = yaml.safe_load(source.read_text())
roles = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}
for job in config.get("scrape_configs", []):
    for sd in job.pop("kubernetes_sd_configs", None) or []:
        if sd.get("role") not in roles:
            sys.exit(f"{source}: job {job['job_name']}: kubernetes_sd_configs role "
                     f"{sd.get('role')!r} is not one of {sorted(roles)}")
        job.setdefault("static_configs", []).append({"targets": ["127.0.0.1:9"]})
config["rule_files"] = [str(source.resolve().parent / f) for f in config.get("rule_files", [])]
target.write_text(yaml.safe_dump(config))
PY
  promtool check config "$tmp/$config"
}

step "promtool: $(promtool --version 2>&1 | head -n 1)"

step "promtool check config"
check_config prometheus.yml
check_config prometheus-local.yml

step "promtool check rules"
promtool check rules rules/*.yml

step "promtool test rules"
promtool test rules tests/*_test.yml

step "prometheusrule.yaml matches the rule files"
"$python" make-prometheusrule.py --check

step "metric names and labels in rules and dashboard exist in the code"
"$python" check-metrics.py --root "$root"

step "the tests catch broken alerts"
"$python" check-mutants.py

echo
echo "check: all monitoring checks passed"
