#!/usr/bin/env python3
"""Turns the output of scripts/benchmark_eager.sh into a Markdown table on stdout.

Reads DIR/machine.txt and, for each NAME = ARCH_PRECISION, DIR/json/NAME_ours.json and
NAME_ours_forward.json (deeplab-bench --in-process --json, with the default batch slots and
with one) and NAME_eager_nchw.json and NAME_eager_channels_last.json (eager_deeplab.py
bench). Every forward time is a mean over passes of one batch.
"""
import argparse
import glob
import json
import os
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def by_batch(steps):
    return {s["batch_size"]: s for s in steps}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    args = parser.parse_args(argv)
    with open(os.path.join(args.dir, "machine.txt")) as f:
        machine = [line.rstrip("\n") for line in f if line.strip()]
    print("### The worker's engine beside PyTorch eager\n")
    for line in machine:
        print(f"- {line}")
    print()
    print("| network | precision | batch | worker runtime | worker: forward ms per batch "
          "| eager NCHW: ms | eager channels_last: ms | eager (best) ÷ worker forward "
          "| worker end to end: images/s | eager (best): images/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = 0
    for ours_path in sorted(glob.glob(os.path.join(args.dir, "json", "*_ours.json"))):
        name = os.path.basename(ours_path)[:-len("_ours.json")]
        arch, precision = name.rsplit("_", 1)
        ours = load(ours_path)
        ours_forward = by_batch(load(os.path.join(args.dir, "json",
                                                  f"{name}_ours_forward.json"))["steps"])
        eager = {layout: by_batch(load(os.path.join(args.dir, "json",
                                                    f"{name}_eager_{layout}.json"))["steps"])
                 for layout in ("nchw", "channels_last")}
        for step in ours["steps"]:
            batch = step["batch_size"]
            alone = ours_forward[batch]
            for s in (step, alone):
                if s["images_ok"] == 0 or s.get("errors"):
                    sys.exit(f"{name} batch {batch}: the worker's engine failed: {s['errors']}")
            # deeplab-bench shares each batch's forward time out among its images.
            forward = alone["stage_ms_per_image"]["forward"] * batch
            nchw = eager["nchw"][batch]["mean_ms"]
            channels_last = eager["channels_last"][batch]["mean_ms"]
            best = min(nchw, channels_last)
            print(f"| {arch} | {precision} | {batch} | {ours['device']} | {forward:.1f} "
                  f"| {nchw:.1f} | {channels_last:.1f} | **{best / forward:.2f}** "
                  f"| {step['throughput']:.2f} | {batch / best * 1e3:.2f} |")
            rows += 1
    if rows == 0:
        sys.exit(f"no results under {args.dir}/json")
    print()
    print("The worker's forward time is measured around the model call, with one batch in "
          "flight so that nothing else runs meanwhile: it includes copying the batch to the "
          "device and the logits back. Eager runs on a tensor already on the device and keeps "
          "its output there. A ratio above 1: the worker's forward pass is faster. End to end "
          "is the worker's engine as a worker runs it: decoding, letterboxing, resizing the "
          "labels to the image's size and PNG encoding, overlapped with other batches' forward "
          "passes.")


if __name__ == "__main__":
    main()
