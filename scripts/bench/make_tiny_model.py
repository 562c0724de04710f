"""Writes tiny.pt: a TorchScript segmentation model whose compute is negligible.

One 1x1 convolution from RGB to two classes. deeplab-serve's benchmarks serve it to measure
what the gateway and the worker's plumbing cost by themselves (scripts/benchmark.sh).
"""
import argparse

import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.jit.script(Tiny().eval()).save(args.out)


if __name__ == "__main__":
    main()
