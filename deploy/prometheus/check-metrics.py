#!/usr/bin/python3
"""Checks that rules and dashboard only use metrics and labels the code exports.

  check-metrics.py [--root REPO]

Exported names come from the C++ sources in services/, workers/ and common/: each
`.Name("deeplab_...")` of a prometheus-cpp builder (its type from the Build* call before it,
its label names from the `.Add({{"label", ...}})` calls on the member it initialises) and each
`Gauge("deeplab_...")` of the worker's ProcessCollector (no labels).

In the rules (rules/*.yml) and the dashboard (../grafana/deeplab-serve.json) every
deeplab_* name must be exported (histograms also as _bucket, _sum, _count), every label in
a `{...}` selector must be one the metric has or one that scraping adds, and every label in
`by (...)` and in a legend must exist somewhere. Recorded names (with a colon) must be defined
in rules/deeplab-recording.yml. The dashboard must be valid JSON with unique panel ids, and
every panel and query must use the ${datasource} variable.

Exit status 0 when all is well, 1 with one line per problem otherwise.
"""
import argparse
import json
import pathlib
import re
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent

# Labels scraping adds: prometheus.yml, prometheus-local.yml and podmonitor.yaml, the
# ServiceMonitors of deploy/k8s/components/prometheus-operator, and what prometheus-operator
# adds by itself.
TARGET_LABELS = {"namespace", "pod", "component", "instance", "job", "container", "endpoint",
                 "service"}

# Metrics announced for the code but not in it yet: name -> (type, set of labels). Lets rules
# and dashboard be written alongside the code change; the check says when to drop an entry.
PENDING = {}

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
NAME_RE = re.compile(r'\.Name\(\s*"(deeplab_\w+)"\s*\)')
BUILD_RE = re.compile(r'(?:(\w+)\(\s*)?prometheus::Build(Counter|Gauge|Histogram|Summary)\(\)\s*$')
COLLECTOR_GAUGE_RE = re.compile(r'\bGauge\(\s*"(deeplab_\w+)"')
LABEL_KEY_RE = re.compile(r'\{\s*"(\w+)"\s*,')


class Metric:
    def __init__(self, kind, labels, where):
        self.kind = kind        # counter, gauge, histogram, summary
        self.labels = labels    # set of label names, or None when they could not be read
        self.where = where


def exported_metrics(root):
    metrics = {}
    for folder in ("services", "workers", "common"):
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in (".cc", ".h") or not path.is_file():
                continue
            text = path.read_text(errors="replace")
            where = str(path.relative_to(root))
            for match in NAME_RE.finditer(text):
                before = text[max(0, match.start() - 300):match.start()]
                build = BUILD_RE.search(before)
                if build is None:
                    metrics[match.group(1)] = Metric(None, None, where)
                    continue
                member, kind = build.group(1), build.group(2).lower()
                metrics[match.group(1)] = Metric(kind, labels_of(member, text), where)
            for match in COLLECTOR_GAUGE_RE.finditer(text):
                metrics[match.group(1)] = Metric("gauge", set(), where)
    return metrics


def labels_of(member, text):
    """Label names of every `member.Add({{"k", v}, ...})` in text; None if there is none."""
    if not member:
        return None
    calls = re.findall(r'\b' + re.escape(member) + r'\.Add\(\s*\{((?:\s*\{[^{}]*\}\s*,?)*)\s*\}',
                       text)
    if not calls:
        return None
    return {key for call in calls for key in LABEL_KEY_RE.findall(call)}


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


SELECTOR_RE = re.compile(r'(?<![\w:$.])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?')
MATCHER_RE = re.compile(r'(\w+)\s*(?:=~|!~|!=|=)')
GROUPING_RE = re.compile(r'\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)')


def check_expr(expr, where, metrics, recorded, all_labels, problems):
    bare = strip_strings(expr)
    for match in SELECTOR_RE.finditer(bare):
        name, matchers = match.group(1), match.group(2)
        if "deeplab" not in name:
            continue
        if ":" in name:
            if name not in recorded:
                problems.append(f"{where}: {name} is not a recording rule in rules/")
            continue
        base, metric = resolve(name, metrics)
        if metric is None:
            problems.append(f"{where}: {name} is not exported by services/, workers/ or common/")
            continue
        if matchers and metric.labels is not None:
            allowed = metric.labels | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
            for label in MATCHER_RE.findall(matchers):
                if label not in allowed:
                    problems.append(f"{where}: {base} has no label '{label}' "
                                    f"(it has: {', '.join(sorted(metric.labels)) or 'none'})")
    for group in GROUPING_RE.findall(bare):
        for label in filter(None, (part.strip() for part in group.split(","))):
            if label not in all_labels:
                problems.append(f"{where}: no metric has a label '{label}'")


def resolve(name, metrics):
    if name in metrics:
        return name, metrics[name]
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[:-len(suffix)]
        if name.endswith(suffix) and base in metrics:
            metric = metrics[base]
            if metric.kind in ("histogram", None) or (metric.kind == "summary" and suffix != "_bucket"):
                return base, metric
    return name, None


def rule_exprs():
    recorded, exprs = set(), []
    for path in sorted((HERE / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("record") or rule.get("alert")
                exprs.append((f"rules/{path.name}: {name}", rule["expr"]))
                if "record" in rule:
                    recorded.add(rule["record"])
    return recorded, exprs


def all_panels(panels):
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_exprs(path, problems):
    where = f"grafana/{path.name}"
    try:
        dash = json.loads(path.read_text())
    except ValueError as e:
        problems.append(f"{where}: not valid JSON: {e}")
        return [], []
    exprs, legends = [], []
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        problems.append(f"{where}: no 'datasource' variable of type datasource")
    if "model" not in variables:
        problems.append(f"{where}: no 'model' variable")
    for name, variable in variables.items():
        if variable.get("type") == "query":
            query = variable.get("query")
            if isinstance(query, dict):
                query = query.get("query", "")
            exprs.append((f"{where}: variable {name}", query or ""))
    ids = {}
    for panel in all_panels(dash.get("panels", [])):
        pid, title = panel.get("id"), panel.get("title", "?")
        if not isinstance(pid, int):
            problems.append(f"{where}: panel '{title}' has no integer id")
        elif pid in ids:
            problems.append(f"{where}: panels '{ids[pid]}' and '{title}' share id {pid}")
        else:
            ids[pid] = title
        if "gridPos" not in panel:
            problems.append(f"{where}: panel '{title}' has no gridPos")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{where}: panel '{title}' does not use ${{datasource}}")
        refs = set()
        for target in panel.get("targets", []):
            ref = target.get("refId")
            if ref in refs:
                problems.append(f"{where}: panel '{title}' repeats refId {ref}")
            refs.add(ref)
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{where}: panel '{title}' query {ref} does not use ${{datasource}}")
            if not target.get("expr", "").strip():
                problems.append(f"{where}: panel '{title}' query {ref} has no expr")
            exprs.append((f"{where}: panel '{title}' {ref}", target.get("expr", "")))
            legends.append((f"{where}: panel '{title}' {ref}", target.get("legendFormat", "")))
        if not panel.get("targets"):
            problems.append(f"{where}: panel '{title}' has no queries")
    return exprs, legends


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path, default=HERE.parent.parent,
                        help="repository root (default: two levels up from this script)")
    args = parser.parse_args()
    problems = []

    metrics = exported_metrics(args.root)
    if not metrics:
        sys.exit(f"check-metrics: no deeplab_* metric found under {args.root}/services, workers or common")
    for name, (kind, labels) in PENDING.items():
        if name in metrics:
            print(f"note: {name} is now exported ({metrics[name].where}); "
                  "drop it from PENDING in check-metrics.py")
        else:
            metrics[name] = Metric(kind, labels, "PENDING")
    for name, metric in sorted(metrics.items()):
        if metric.labels is None and metric.where != "PENDING":
            print(f"note: could not read the labels of {name} ({metric.where}); not checked")
    all_labels = set(TARGET_LABELS) | {"le"}
    for metric in metrics.values():
        all_labels |= metric.labels or set()

    recorded, exprs = rule_exprs()
    dash_exprs, legends = dashboard_exprs(HERE.parent / "grafana" / "deeplab-serve.json", problems)
    for where, expr in exprs + dash_exprs:
        check_expr(expr, where, metrics, recorded, all_labels, problems)
    for where, legend in legends:
        for label in re.findall(r'\{\{\s*(\w+)\s*\}\}', legend):
            if label not in all_labels:
                problems.append(f"{where}: legend names '{label}', which no metric has")

    for line in problems:
        print(line)
    print(f"check-metrics: {len(metrics)} metrics known ({len(PENDING)} pending), "
          f"{len(exprs)} rule and {len(dash_exprs)} dashboard expressions, "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
