#!/usr/bin/env python3
"""Serving efficiency, measured in alternating rounds, with where the CPU went.

    python3 scripts/bench/efficiency.py [--rounds 5] [--duration 8] [--warmup 2]
        [--concurrency 128] [--mode unary|stream] [--batch-sizes 16,32] [--model demo]
        [--models models] [--images models/demo/samples/images] [--bin build/bin]
        [--worker-cpus LIST --other-cpus LIST] [--json FILE]

Serving efficiency is the served throughput (one gateway and one worker on loopback, driven
by deeplab-bench) over the in-process ceiling (deeplab-bench --in-process: the worker's
engine with no gRPC, at its best batch size). On a shared machine both drift by more than
the few points that matter, so each round runs one in-process step and then one served
step, and the summary is the median of the rounds' ratios.

During each served step the script reads the CPU time of the worker, the gateway and the
load generator from /proc over a window inside the measured time, and the machine's idle
time from /proc/stat, so the table says where the cores went: on one machine the gateway
and the load generator run on the worker's cores, which the in-process ceiling does not
pay for.

With --worker-cpus and --other-cpus (CPU lists such as 0 or 0-1,4), the in-process step
and the worker run on the first CPUs and the gateway and the load generator on the others:
the layout of a deployment where they do not share the worker's cores, and a measure of
what the hop costs the worker itself. Thread counts follow (the programs count the CPUs
they may run on).

Starts its own cluster (scripts/cluster.sh, one worker, free loopback ports) and stops it.
Needs the programs that scripts/setup.sh builds. Standard library only. Exit codes: 0 ok,
1 a run failed, 2 bad arguments.
"""

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICK = os.sysconf("SC_CLK_TCK")


def fail(message):
    print("efficiency: " + message, file=sys.stderr)
    sys.exit(1)


def process_seconds(pid):
    """User + system CPU seconds of a process (all its threads) so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_jiffies():
    """(idle, total) jiffies of all cores from /proc/stat (idle includes iowait)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[3] + values[4], sum(values[:8])


def parse_cpus(text):
    """A CPU list such as 0-1,4 as a set of ints."""
    cpus = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def pin_process(pid, cpus):
    """Moves every thread of a running process onto cpus."""
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass  # a thread that ended meanwhile


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def pick_ports():
    for _ in range(50):
        base = random.randint(20000, 40000)
        if all(port_free(base + k) for k in (0, 1, 1000, 1001, 2000)):
            return base
    fail("found no free loopback ports")


def bench(binary, args, window=None, pids=None, cpus=None):
    """Runs deeplab-bench --json. With window=(start, end) seconds after launch, also returns
    the CPUs each of pids (a name -> pid dict, the bench added as 'load generator') used
    over that window, and the machine's idle CPUs."""
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen([binary] + args + ["--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=pin)
    shares = None
    if window is not None:
        launched = time.monotonic()
        watched = dict(pids)
        watched["load generator"] = proc.pid
        time.sleep(window[0])
        t0 = time.monotonic()
        before = {name: process_seconds(pid) for name, pid in watched.items()}
        idle0, total0 = machine_jiffies()
        time.sleep(max(0.1, window[1] - (t0 - launched)))
        t1 = time.monotonic()
        after = {name: process_seconds(pid) for name, pid in watched.items()}
        idle1, total1 = machine_jiffies()
        cores = os.cpu_count() or 1
        shares = {name: (after[name] - before[name]) / (t1 - t0) for name in watched}
        shares["idle"] = cores * (idle1 - idle0) / max(1, total1 - total0)
        shares["rest"] = max(0.0, cores - sum(shares.values()))
    out, err = proc.communicate()
    if proc.returncode != 0:
        fail("deeplab-bench %s exited %d:\n%s" % (" ".join(args), proc.returncode, err))
    doc = json.loads(out)
    for step in doc["steps"]:
        if step.get("errors"):
            fail("deeplab-bench %s: errors %s" % (" ".join(args), step["errors"]))
    return doc, shares


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds before it")
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--mode", choices=["unary", "stream"], default="unary",
                        help="served calls: Segment (unary) or SegmentStream")
    parser.add_argument("--batch-sizes", default="16,32", help="in-process batch sizes")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--models", default=os.path.join(ROOT, "models"))
    parser.add_argument("--images", default=os.path.join(ROOT, "models/demo/samples/images"))
    parser.add_argument("--bin", default=os.environ.get("DEEPLAB_BIN",
                                                        os.path.join(ROOT, "build/bin")))
    parser.add_argument("--worker-cpus", help="CPUs of the worker and the in-process step")
    parser.add_argument("--other-cpus", help="CPUs of the gateway and the load generator")
    parser.add_argument("--json", help="also write every round's numbers here")
    args = parser.parse_args()
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0 or args.concurrency < 1:
        parser.print_usage(sys.stderr)
        print("efficiency: --rounds and --concurrency at least 1, --duration at least 1 s",
              file=sys.stderr)
        sys.exit(2)
    worker_cpus = other_cpus = None
    if bool(args.worker_cpus) != bool(args.other_cpus):
        print("efficiency: --worker-cpus and --other-cpus go together", file=sys.stderr)
        sys.exit(2)
    if args.worker_cpus:
        try:
            worker_cpus = parse_cpus(args.worker_cpus)
            other_cpus = parse_cpus(args.other_cpus)
            os.sched_setaffinity(0, os.sched_getaffinity(0))  # this Python can pin at all
        except (ValueError, OSError) as e:
            print("efficiency: bad CPU list: %s" % e, file=sys.stderr)
            sys.exit(2)
        allowed = os.sched_getaffinity(0)
        if not worker_cpus <= allowed or not other_cpus <= allowed or worker_cpus & other_cpus:
            print("efficiency: --worker-cpus and --other-cpus must be disjoint sets of the CPUs "
                  "this process may use (%s)" % sorted(allowed), file=sys.stderr)
            sys.exit(2)
    binary = os.path.join(args.bin, "deeplab-bench")
    if not os.access(binary, os.X_OK):
        fail("no %s (build first: bash scripts/setup.sh)" % binary)

    state = tempfile.mkdtemp(prefix="deeplab-efficiency-")
    env = dict(os.environ, DEEPLAB_CLUSTER_DIR=state, DEEPLAB_BIN=args.bin)
    port = pick_ports()
    cluster = ["bash", os.path.join(ROOT, "scripts/cluster.sh")]
    up = subprocess.run(cluster + ["up", "--workers", "1", "--port", str(port),
                                   "--metrics-port", str(port + 1000),
                                   "--http-port", str(port + 2000), "--models", args.models,
                                   "--wait-for", args.model, "--detach"],
                        env=env, capture_output=True, text=True,
                        preexec_fn=(lambda: os.sched_setaffinity(0, worker_cpus))
                        if worker_cpus else None)
    if up.returncode != 0:
        fail("the cluster did not start:\n" + up.stdout + up.stderr)
    rows = []
    pids = {}
    try:
        with open(os.path.join(state, "pids")) as f:
            for line in f:
                pid, name = line.split()
                pids["worker" if name.startswith("worker") else name] = int(pid)
        if other_cpus:
            pin_process(pids["gateway"], other_cpus)
        common = ["--model", args.model, "--images", args.images,
                  "--duration", "%gs" % args.duration, "--warmup", "%gs" % args.warmup]
        for r in range(1, args.rounds + 1):
            inproc, _ = bench(binary, ["--in-process", "--models", args.models,
                                       "--batch-sizes", args.batch_sizes] + common,
                              cpus=worker_cpus)
            window = (args.warmup + 0.5, args.warmup + args.duration - 0.5)
            served, shares = bench(binary, ["--server", "127.0.0.1:%d" % port, "--concurrency",
                                            str(args.concurrency), "--mode", args.mode,
                                            "--wait-ready", "30s"] + common,
                                   window=window, pids=pids, cpus=other_cpus)
            ceiling = inproc["ceiling"]
            step = served["steps"][0]
            row = {"round": r, "in_process": ceiling["throughput"],
                   "batch_size": ceiling["batch_size"], "served": step["throughput"],
                   "mean_batch": step.get("batch_size_mean", 0),
                   "efficiency": step["throughput"] / ceiling["throughput"], "cpus": shares}
            rows.append(row)
            print("round %d: in-process %.1f images/s (batch %d), served %.1f, efficiency %.3f"
                  % (r, row["in_process"], row["batch_size"], row["served"], row["efficiency"]),
                  flush=True)
    finally:
        subprocess.run(cluster + ["down"], env=env, capture_output=True)
        shutil.rmtree(state, ignore_errors=True)

    names = ["worker", "gateway", "load generator", "rest", "idle"]
    print()
    print("| round | in-process, images/s | served, images/s | efficiency | CPUs while served: "
          + " / ".join(names) + " |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| %d | %.1f (batch %d) | %.1f (mean batch %.1f) | %.3f | %s |" % (
            row["round"], row["in_process"], row["batch_size"], row["served"], row["mean_batch"],
            row["efficiency"],
            " / ".join("%.3f" % row["cpus"][n] for n in names)))
    median = statistics.median(row["efficiency"] for row in rows)
    worker = statistics.median(row["cpus"]["worker"] for row in rows)
    others = statistics.median(row["cpus"]["gateway"] + row["cpus"]["load generator"]
                               for row in rows)
    print()
    layout = ("worker on CPUs %s, gateway and load generator on %s" % (args.worker_cpus,
                                                                         args.other_cpus)
              if worker_cpus else "%s cores shared" % os.cpu_count())
    print("median efficiency %.3f over %d rounds (%s calls, concurrency %d, %s); median CPUs: "
          "worker %.3f, gateway + load generator %.3f"
          % (median, len(rows), args.mode, args.concurrency, layout, worker, others))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": rows, "median_efficiency": median,
                       "mode": args.mode, "concurrency": args.concurrency, "cores": os.cpu_count(),
                   "worker_cpus": args.worker_cpus, "other_cpus": args.other_cpus,
                   "pids": pids}, f, indent=1)


if __name__ == "__main__":
    main()
