#!/usr/bin/python3
"""Shows that tests/alerts_test.yml pins every alert: each deliberately broken copy of an
alert must make `promtool test rules` fail.

  check-mutants.py [--promtool PATH]

For every alert in rules/deeplab-alerts.yml it makes, one at a time:
  - never:      the expression can no longer be true;
  - threshold:  each number an expression is compared with, times 1.5 and times 0.5
                (0 becomes 1); a comparison between two series gets `>=` for `>`;
  - for:        half and twice the `for` duration.
A mutant the tests still pass is a change the tests cannot see: the script lists those
and exits 1. Mutants are written to a temporary copy; the rule files are not touched.
"""
import argparse
import concurrent.futures
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ALERTS = "deeplab-alerts.yml"
# A comparison with a number: `> 0.05`, `== 0` (not the `>` of a `>=`, not `=~`).
NUMBER_COMPARISON = re.compile(r'(?<![<>=!])(==|!=|>=|<=|>|<)(?!=|~)(\s*)(\d+(?:\.\d+)?)(?![\w.])')
# `>` between two series, as in `needed > on (namespace) healthy`.
SERIES_COMPARISON = re.compile(r'(?<![<>=!])>(?![=~])(?=\s*(?:on|ignoring)?\s*[(a-zA-Z_])')
DURATION = re.compile(r'^(\d+)([smh])$')


def number_mutants(expr):
    for match in NUMBER_COMPARISON.finditer(expr):
        value = float(match.group(3))
        for new in (value * 1.5, value * 0.5) if value else (1,):
            text = f"{new:g}"
            label = f"{match.group(1)} {match.group(3)} -> {text}"
            yield label, expr[:match.start(3)] + text + expr[match.end(3):]


def series_mutants(expr):
    for match in SERIES_COMPARISON.finditer(expr):
        yield "> -> >= between series", expr[:match.start()] + ">=" + expr[match.end():]


def duration_mutants(duration):
    match = DURATION.match(duration or "")
    if not match:
        return
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
    for new in (seconds // 2, seconds * 2):
        yield f"for {duration} -> {new}s", f"{new}s"


def mutants(rule):
    expr = rule["expr"]
    yield "never", {"expr": f"({expr.strip()}) and on () vector(0) > 1"}
    for label, new in list(number_mutants(expr)) + list(series_mutants(expr)):
        yield label, {"expr": new}
    for label, new in duration_mutants(rule.get("for")):
        yield label, {"for": new}


def alert_tests(workdir):
    """The test files that load the alerts: the others cannot notice a broken alert."""
    return [str(path) for path in sorted((workdir / "tests").glob("*_test.yml"))
            if any(pathlib.Path(f).name == ALERTS
                   for f in yaml.safe_load(path.read_text()).get("rule_files", []))]


def tests_pass(promtool, workdir):
    tests = alert_tests(workdir)
    if not tests:
        sys.exit(f"check-mutants: no test file in {workdir / 'tests'} loads {ALERTS}")
    result = subprocess.run([promtool, "test", "rules", *tests], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return result.returncode == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promtool", default=shutil.which("promtool") or "promtool")
    args = parser.parse_args()

    source = yaml.safe_load((HERE / "rules" / ALERTS).read_text())
    cases = []
    for g, group in enumerate(source["groups"]):
        for r, rule in enumerate(group["rules"]):
            if "alert" in rule:
                cases += [(g, r, f"{rule['alert']}: {label}", change)
                          for label, change in mutants(rule)]

    with tempfile.TemporaryDirectory() as tmp:
        def copy(name, rules_text=None):
            work = pathlib.Path(tmp) / name
            shutil.copytree(HERE / "rules", work / "rules")
            shutil.copytree(HERE / "tests", work / "tests")
            if rules_text is not None:
                (work / "rules" / ALERTS).write_text(rules_text)
            return work

        if not tests_pass(args.promtool, copy("unchanged")):
            sys.exit("check-mutants: the tests fail on the unchanged rules; fix that first")

        def survives(index):
            g, r, _, change = cases[index]
            broken = yaml.safe_load(yaml.safe_dump(source))
            broken["groups"][g]["rules"][r].update(change)
            return tests_pass(args.promtool,
                              copy(f"mutant{index}", yaml.safe_dump(broken, sort_keys=False)))

        # promtool is single-threaded; one per core.
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            survived = list(pool.map(survives, range(len(cases))))
    survivors = [case[2] for case, alive in zip(cases, survived) if alive]
    for line in survivors:
        print(f"not caught by the tests: {line}")
    print(f"check-mutants: {len(cases) - len(survivors)} of {len(cases)} broken alerts caught")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
