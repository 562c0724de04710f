"""Turns the output of scripts/benchmark.sh into the Markdown tables of docs/BENCHMARKS.md.

Reads DIR/json/*.json (deeplab-bench --json), DIR/json/*.cpu (machine CPU busy fraction
during each bench run), DIR/metrics/*.txt (worker /metrics before and after runs) and
DIR/machine.txt; prints Markdown on stdout.
"""
import argparse
import json
import os
import re
import sys


def load(directory, name):
    path = os.path.join(directory, "json", name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def cpu(directory, name):
    path = os.path.join(directory, "json", name + ".cpu")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return float(f.read().strip())


def lvl(s):
    """The load of a step: its concurrency (closed loop) or rate (open loop)."""
    return s["concurrency"] if "concurrency" in s else s["rate"]


def step(doc, level):
    for s in doc["steps"]:
        if lvl(s) == level:
            return s
    raise KeyError(f"{doc.get('model')}: no step at level {level}")


def best_step(doc):
    return max(doc["steps"], key=lambda s: s["throughput"])


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def f1(x):
    return f"{x:.1f}"


def f2(x):
    return f"{x:.2f}"


def errors(s):
    return "" if s.get("error_count", 0) == 0 else f" ({s['errors']})"


METRIC = re.compile(r'^(\w+)\{([^}]*)\} (\S+)$')


def read_metrics(path):
    values = {}
    if not os.path.exists(path):
        return values
    with open(path, errors="replace") as f:
        for line in f:
            m = METRIC.match(line.strip())
            if not m:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            key = (m.group(1), tuple(sorted(labels.items())))
            values[key] = float(m.group(3))
    return values


def stage_ms(directory, before, after, model):
    """Mean milliseconds per image in each worker stage between two scrapes."""
    a = read_metrics(os.path.join(directory, "metrics", before + ".txt"))
    b = read_metrics(os.path.join(directory, "metrics", after + ".txt"))

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return b.get(key, 0.0) - a.get(key, 0.0)

    items = delta("deeplab_worker_items_total", model=model, code="OK")
    result = {}
    for stage in ("decode", "preprocess", "forward", "postprocess", "encode"):
        total = delta("deeplab_worker_stage_seconds_sum", model=model, stage=stage)
        count = delta("deeplab_worker_stage_seconds_count", model=model, stage=stage)
        if stage == "forward":  # observed per batch: share it over the images
            result[stage] = 1000 * total / items if items else None
        else:
            result[stage] = 1000 * total / count if count else None
    return result, items


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True)
    d = parser.parse_args().dir
    out = []
    with open(os.path.join(d, "machine.txt")) as f:
        out.append("Machine and build:\n\n```\n" + f.read().strip() + "\n```\n")

    # 1. Serving efficiency.
    rows = []
    for name, inproc, served in (("demo (128x128)", "inproc_demo", "served_demo"),
                                 ("xception65_512 (512x512)", "inproc_xception",
                                  "served_xception")):
        i, s = load(d, inproc), load(d, served)
        if i is None or s is None:
            continue
        ceiling = i["ceiling"]
        top = best_step(s)
        rows.append([name, f"{f2(ceiling['throughput'])} (batch {int(ceiling['batch_size'])})",
                     f"{f2(top['throughput'])} (concurrency {lvl(top):g}, mean batch "
                     f"{f1(top['batch_size_mean'])}){errors(top)}",
                     f2(top["throughput"] / ceiling["throughput"]),
                     f"{100 * cpu(d, served):.0f}%"])
    out.append("### Serving efficiency\n\n" + table(
        ["weight set", "in-process ceiling, images/s", "served through the gateway, images/s",
         "efficiency", "machine CPU busy (served)"], rows))

    # In-process stage split.
    rows = []
    for name, inproc in (("demo", "inproc_demo"), ("xception65_512, 640x427 scenes",
                                                   "inproc_xception"),
                         ("xception65_512, --photo", "inproc_photo")):
        i = load(d, inproc)
        if i is None:
            continue
        for s in i["steps"]:
            st = s["stage_ms_per_image"]
            rows.append([name, int(s["batch_size"]), f2(s["throughput"]),
                         f1(s["batch_latency_ms"]["p50"]), f1(st["decode"]), f1(st["preprocess"]),
                         f1(st["forward"]), f1(st["postprocess"]), f1(st["encode"])])
    out.append("### In-process, by batch size (ms per image in each stage)\n\n" + table(
        ["weight set", "batch", "images/s", "batch p50 ms", "decode", "preprocess", "forward",
         "postprocess", "encode"], rows))

    # 2. Batching on and off.
    on, off = load(d, "batching_on"), load(d, "batching_off")
    if on and off:
        rows = []
        for level in (1, 4, 16):
            a, b = step(on, level), step(off, level)
            rows.append([level, f2(a["throughput"]) + errors(a), f1(a["latency_ms"]["p99"]),
                         f1(a["batch_size_mean"]), f2(b["throughput"]) + errors(b),
                         f1(b["latency_ms"]["p99"]), f2(a["throughput"] / b["throughput"])])
        out.append("### Dynamic batching on (max_batch_size 32) and off (1), demo weight set\n\n"
                   + table(["concurrency", "on: images/s", "on: p99 ms", "on: mean batch",
                            "off: images/s", "off: p99 ms", "throughput on/off"], rows))

    # 3. Gateway overhead.
    direct, via = load(d, "tiny_direct"), load(d, "tiny_gateway")
    nodelay = load(d, "tiny_gateway_nodelay")
    if direct and via:
        a = direct["steps"][0]
        rows = [["straight to the worker (Worker/Infer)", f2(a["latency_ms"]["p50"]),
                 f2(a["latency_ms"]["p99"]), f1(a["throughput"])]]
        # The weight set with no queue delay first: its difference is the gateway's own
        # cost; the other adds the 500 us batching wait that its config asks for.
        for doc, what, bold in ((nodelay, "max_queue_delay 0", True),
                                (via, "max_queue_delay 500 us", False)):
            if not doc:
                continue
            b = doc["steps"][0]
            p50 = f"{b['latency_ms']['p50'] - a['latency_ms']['p50']:.2f}"
            p99 = f"{b['latency_ms']['p99'] - a['latency_ms']['p99']:.2f}"
            rows.append([f"through the gateway (Segment), {what}", f2(b["latency_ms"]["p50"]),
                         f2(b["latency_ms"]["p99"]), f1(b["throughput"])])
            rows.append([f"**the gateway's overhead**, {what}",
                         f"**{p50}**" if bold else p50, f"**{p99}**" if bold else p99, ""])
        out.append("### The gateway's own cost: tiny weight set, one request at a time\n\n" +
                   table(["path", "p50 ms", "p99 ms", "images/s"], rows))
    ceiling, ceiling_direct = load(d, "tiny_ceiling"), load(d, "tiny_ceiling_direct")
    if ceiling:
        rows = []
        if ceiling_direct:
            s = ceiling_direct["steps"][0]
            rows.append([f"straight to the worker, concurrency {lvl(s):g}",
                         f1(s["throughput"]) + errors(s), f1(s["latency_ms"]["p50"]),
                         f1(s["latency_ms"]["p99"]), "1.0", f"{100 * cpu(d, 'tiny_ceiling_direct'):.0f}%"])
        for s in ceiling["steps"]:
            rows.append([f"through the gateway, concurrency {lvl(s):g}",
                         f1(s["throughput"]) + errors(s), f1(s["latency_ms"]["p50"]),
                         f1(s["latency_ms"]["p99"]), f1(s["batch_size_mean"]),
                         f"{100 * cpu(d, 'tiny_ceiling'):.0f}%"])
        out.append("### Request rate ceiling, tiny weight set\n\n" + table(
            ["path", "requests/s", "p50 ms", "p99 ms", "mean batch", "machine CPU busy"], rows))

    # 4. One worker and two.
    one, two = load(d, "served_demo"), load(d, "two_workers_demo")
    if one and two:
        rows = []
        for doc, n, name in ((one, 1, "served_demo"), (two, 2, "two_workers_demo")):
            for s in doc["steps"]:
                rows.append([n, f"{lvl(s):g}", f2(s["throughput"]) + errors(s),
                             f1(s["latency_ms"]["p50"]), f1(s["latency_ms"]["p99"]),
                             f1(s["batch_size_mean"]), f"{100 * cpu(d, name):.0f}%"])
        out.append("### One worker and two behind one gateway, demo weight set\n\n" + table(
            ["workers", "concurrency", "images/s", "p50 ms", "p99 ms", "mean batch",
             "machine CPU busy"], rows))

    # 5. Beside a naive Python server.
    ours, naive = load(d, "side_cluster"), load(d, "side_naive")
    if ours and naive:
        photo = ""
        if os.path.exists(os.path.join(d, "side_photo.txt")):
            with open(os.path.join(d, "side_photo.txt")) as f:
                photo = os.path.basename(f.read().split(":", 1)[1].strip())
        rows = []
        for s in ours["steps"]:
            n = step(naive, lvl(s))
            rows.append([f"{lvl(s):g}", f2(s["throughput"]) + errors(s),
                         f1(s["latency_ms"]["p99"]), f1(s["batch_size_mean"]),
                         f2(n["throughput"]) + errors(n), f1(n["latency_ms"]["p99"]),
                         f"**{s['throughput'] / n['throughput']:.2f}**"])
        out.append(f"### Beside a naive Python server: demo weight set, {photo}, one worker\n\n" +
                   table(["concurrency", "deeplab-serve images/s", "p99 ms", "mean batch",
                          "naive server images/s", "p99 ms", "throughput ratio"], rows))

    # 6. Where the time goes inside the worker, from its metrics.
    rows = []
    for name, model, before, after in (("demo, batching on steps", "demo", "before_batching",
                                        "after_batching"),
                                       ("xception65_512, served", "xception65_512",
                                        "before_xception", "after_xception")):
        stages, items = stage_ms(d, before, after, model)
        if not items:
            continue
        total = sum(v for v in stages.values() if v is not None)
        cells = [f"{f2(v)} ({100 * v / total:.0f}%)" if v is not None else "-"
                 for v in stages.values()]
        rows.append([name, int(items)] + cells)
    out.append("### Where the time goes inside the worker (deeplab_worker_stage_seconds, ms "
               "per image)\n\n" + table(["weight set", "images", "decode", "preprocess",
                                         "forward", "postprocess", "encode"], rows))
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
