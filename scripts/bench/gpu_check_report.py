#!/usr/bin/env python3
"""Turns the log of scripts/gpu_check.sh into one Markdown table.

  gpu_check_report.py LOG

Reads the RESULT lines of deeplab-gpu-check (correctness checks, speeds of the network and
of the batch path) and the RESULT_EAGER lines of eager_deeplab.py bench (eager and
torch.compile), and prints, per network: images/s for each variant and batch size, then the
two ratios the GPU targets are stated in (docs/BENCHMARKS.md): batch path with two batches
in flight / network alone (best layout), and network alone / PyTorch's best variant.
Exits 1 when the log has no speed at all, or a correctness check failed (the device's label
restore must equal the CPU's; precision labels must agree with fp32 on >= 99% of pixels).
"""
import json
import sys


def main(path):
    checks, speeds, eager = [], [], []
    with open(path, encoding="utf-8", errors="replace") as log:
        for line in log:
            if line.startswith("RESULT_EAGER "):
                eager.append(json.loads(line[len("RESULT_EAGER "):]))
            elif line.startswith("RESULT "):
                record = json.loads(line[len("RESULT "):])
                (checks if "check" in record else speeds).append(record)
    ok = True
    print("### Correctness against the CPU (fp32)\n")
    print("| check | result |")
    print("|---|---|")
    for c in checks:
        if "labels_differ" in c:
            good = c["labels_differ"] == 0
            text = f"{c['labels_differ']} of {c['pixels']} labels differ; probabilities off by >1/255: {c['probabilities_off_by_more_than_1']}"
        elif "label_agreement" in c:
            # Random weights put many pixels at near-ties; only trained (demo) weights are held to 99%.
            good = c["finite"] and (c["label_agreement"] >= 0.99 or "random" in c["check"])
            text = f"labels agree {100 * c['label_agreement']:.3f}%, relative L2 {c['rel_l2']:.2e}, finite {c['finite']}"
        else:
            good = True
            text = c.get("runtime", "")
        ok = ok and good
        print(f"| {c['check']} | {text}{'' if good else ' **FAILED**'} |")
    archs = sorted({s["arch"] for s in speeds} | {e["arch"] for e in eager})
    for arch in archs:
        rows = {}
        batches = set()
        for s in speeds:
            if s["arch"] != arch:
                continue
            name = f"{s['speed']} ({s['layout']})"
            rows.setdefault(name, {})[s["batch"]] = s["images_per_second"]
            batches.add(s["batch"])
        for e in eager:
            if e["arch"] != arch:
                continue
            for step in e["steps"]:
                rows.setdefault(e["runtime"], {})[step["batch_size"]] = step["images_per_second"]
                batches.add(step["batch_size"])
        batches = sorted(batches)
        runtime = next((s["runtime"] for s in speeds if s["arch"] == arch), "")
        print(f"\n### {arch}, images/s (our C++: {runtime})\n")
        print("| variant | " + " | ".join(f"batch {b}" for b in batches) + " |")
        print("|---|" + "---|" * len(batches))
        for name, values in rows.items():
            cells = [f"{values[b]:.1f}" if b in values else "-" for b in batches]
            print(f"| {name} | " + " | ".join(cells) + " |")

        def best(prefix):
            out = {}
            for name, values in rows.items():
                if name.startswith(prefix):
                    for b, v in values.items():
                        out[b] = max(out.get(b, 0), v)
            return out
        net, path2, theirs = best("net ("), best("path, 2 in flight"), best("pytorch")
        print("| batch path (2 in flight) / network | " + " | ".join(
            f"{path2[b] / net[b]:.2f}" if b in net and b in path2 else "-" for b in batches) + " |")
        print("| network / PyTorch's best | " + " | ".join(
            f"{net[b] / theirs[b]:.2f}" if b in net and b in theirs else "-" for b in batches) + " |")
    if not speeds:
        print("\nno speed measured")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.exit(main(sys.argv[1]))
