#!/usr/bin/env python3
"""Write small TorchScript fixtures for the C++ model-loading and processing tests.

The C++ worker must run models exported in the ways people actually export them: scripted,
traced, and torchvision-style models that return a dict. These fixtures are tiny so tests
stay fast; reference.pt carries a fixed input and each model's output on it, so a C++ test
can check that LibTorch reproduces Python's numbers without reimplementing the models.

Files written to --out-dir:
  scripted.pt       torch.jit.script model, NCHW float in, NCHW logits (3 classes) out,
                    same spatial size as the input.
  traced.pt         torch.jit.trace model, same contract; traced at one size, checked here
                    at other sizes (it has no size-dependent constants).
  dict_out.pt       scripted, returns Dict[str, Tensor] like torchvision segmentation models:
                    "aux" (inserted first, deliberately a different tensor) and "out".
  colour_argmax.pt  scripted identity: logits are the input channels, so the argmax labels
                    each pixel by its dominant colour channel (R=0, G=1, B=2); used to check
                    pre/post-processing geometry. A per-channel normalisation that differs
                    between channels (mean/std) can change that argmax; x/127.5-1 cannot.
  reference.pt      scripted container whose buffers are "input" (1x3x17x23) and
                    "scripted_out", "traced_out", "dict_out" (the "out" entry); read them in
                    C++ with module.attr("input").toTensor().

Run with an interpreter that has torch (e.g. /usr/bin/python3 on the dev image):

    make_torchscript.py --out-dir /tmp/fixtures
"""

import argparse
import json
import os
from typing import Dict

import torch
from torch import nn

NUM_CLASSES = 3
REFERENCE_SHAPE = (1, 3, 17, 23)  # odd, unequal sides catch transposed or padded outputs
OTHER_SHAPES = [(2, 3, 8, 8), (1, 3, 31, 12)]


class TinySegNet(nn.Module):
    """Two 3x3 'same' convs and a 1x1 classifier: output size equals input size."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.BatchNorm2d(8), nn.ReLU())
        self.classifier = nn.Conv2d(8, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DictOutSegNet(nn.Module):
    """torchvision-style output: a dict whose "out" entry holds the logits."""

    def __init__(self):
        super().__init__()
        self.net = TinySegNet()
        self.aux_classifier = nn.Conv2d(3, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        result: Dict[str, torch.Tensor] = {}
        result["aux"] = self.aux_classifier(x)
        result["out"] = self.net(x)
        return result


class ColourArgmax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Reference(nn.Module):
    """Holds named tensors as buffers so C++ can read them with module.attr(name)."""

    def __init__(self, tensors: Dict[str, torch.Tensor]):
        super().__init__()
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor.detach().clone())

    def forward(self) -> torch.Tensor:
        return self.input


def randomised(model: nn.Module) -> nn.Module:
    """Eval mode with non-trivial BatchNorm statistics, so folding mistakes would show."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def check_same(name, exported, eager, shapes, key=None):
    """Fail loudly if the reloaded export disagrees with the eager model or misplaces sizes."""
    for shape in shapes:
        x = torch.rand(shape)
        got, want = exported(x), eager(x)
        if key is not None:
            got, want = got[key], want[key]
        assert got.shape == (shape[0], NUM_CLASSES) + shape[2:], (name, shape, got.shape)
        assert torch.allclose(got, want, atol=1e-6), (name, shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    torch.manual_seed(args.seed)
    path = lambda name: os.path.join(args.out_dir, name)

    scripted_eager = randomised(TinySegNet())
    traced_eager = randomised(TinySegNet())
    dict_eager = randomised(DictOutSegNet())
    reference_input = torch.rand(REFERENCE_SHAPE)

    with torch.no_grad():
        torch.jit.script(scripted_eager).save(path("scripted.pt"))
        torch.jit.trace(traced_eager, torch.rand(1, 3, 16, 16)).save(path("traced.pt"))
        torch.jit.script(dict_eager).save(path("dict_out.pt"))
        torch.jit.script(ColourArgmax()).save(path("colour_argmax.pt"))

        # Reload from disk so the checks and reference outputs come from the saved files.
        scripted = torch.jit.load(path("scripted.pt"))
        traced = torch.jit.load(path("traced.pt"))
        dict_out = torch.jit.load(path("dict_out.pt"))
        colour = torch.jit.load(path("colour_argmax.pt"))
        shapes = [REFERENCE_SHAPE] + OTHER_SHAPES
        check_same("scripted", scripted, scripted_eager, shapes)
        check_same("traced", traced, traced_eager, shapes)
        check_same("dict_out", dict_out, dict_eager, shapes, key="out")
        assert list(dict_out(reference_input).keys()) == ["aux", "out"]
        assert torch.equal(colour(reference_input), reference_input)

        outputs = {"input": reference_input,
                   "scripted_out": scripted(reference_input),
                   "traced_out": traced(reference_input),
                   "dict_out": dict_out(reference_input)["out"]}
        torch.jit.script(Reference(outputs)).save(path("reference.pt"))
        reloaded = torch.jit.load(path("reference.pt"))
        for name, tensor in outputs.items():
            assert torch.equal(getattr(reloaded, name), tensor), name

    print(json.dumps({
        "out_dir": args.out_dir, "torch": torch.__version__, "num_classes": NUM_CLASSES,
        "files": ["scripted.pt", "traced.pt", "dict_out.pt", "colour_argmax.pt", "reference.pt"],
        "reference_buffers": {k: list(v.shape) for k, v in outputs.items()}}))


if __name__ == "__main__":
    main()
