#!/usr/bin/env python3
"""DeepLabv3+ in plain PyTorch eager mode: the baseline the worker is measured against.

The network is the one workers/model builds in C++ (Xception-65 and MobileNetV2 backbones,
ASPP, decoder), with the same module names, so a state dict of this model has exactly the
tensor names of our native checkpoint (.dlck) and either can hold the other's weights.
tests/workers/model_test.cc checks that this model and the C++ one compute the same function
on the same weights, so a benchmark of the two compares runtimes, not networks.

It is written the way a user would serve the model from Python: eval(), inference_mode,
BatchNorm left in place, the precision applied with .to(dtype). It is not used by the server.

Commands:

  bench      time the forward pass at each batch size; one JSON object on stdout.
               eager_deeplab.py bench --arch xception65 --classes 21 --size 512x512
                 --device cuda --dtype fp16 --batch-sizes 1,2,4,8,16,32 [--channels-last]
  reference  load a .dlck, run it on a seeded input, and save input and output in a
             TorchScript container (buffers "input" and "output") for the C++ test.
               eager_deeplab.py reference --weights m.dlck --out ref.pt [--weights ... --out ...]
                 [--size 65x49] [--batch 2]

Run with an interpreter that has torch (Debian's /usr/bin/python3 here; any PyTorch from
1.13 on). Reading a .dlck also needs grpc_tools (python3-grpc-tools), which compiles the
checkpoint's header schema from protos/.
"""

import argparse
import atexit
import json
import math
import os
import platform
import shutil
import struct
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

KERAS_BN_EPS = 1e-3  # backbones (Keras' default)
HEAD_BN_EPS = 1e-5   # ASPP, decoder
LOW_LEVEL_PROJECTION = 48


# ---------------------------------------------------------------------------------------
# Layers


def same_padding(n: int, kernel: int, stride: int, dilation: int) -> Tuple[int, int]:
    """TF padding='same' along one dimension: (before, after), the odd pixel after."""
    k_eff = kernel + (kernel - 1) * (dilation - 1)
    out = (n + stride - 1) // stride
    total = max((out - 1) * stride + k_eff - n, 0)
    return total // 2, total - total // 2


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int, dilation: int = 1) -> torch.Tensor:
    top, bottom = same_padding(x.shape[2], kernel, stride, dilation)
    left, right = same_padding(x.shape[3], kernel, stride, dilation)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom))


def conv(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
         dilation: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=False)


def resize_bilinear(x: torch.Tensor, height: int, width: int, align_corners: bool) -> torch.Tensor:
    if x.shape[2] == height and x.shape[3] == width:
        return x
    if x.shape[2] == 1 and x.shape[3] == 1:
        return x.expand(x.shape[0], x.shape[1], height, width)
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=align_corners)


class SepConvBN(nn.Module):
    """[ReLU] depthwise 3x3 (dilation rate) -> BN -> [ReLU] -> pointwise 1x1 -> BN -> [ReLU]."""

    def __init__(self, cin: int, cout: int, stride: int, rate: int, depth_activation: bool,
                 eps: float):
        super().__init__()
        self.depth_activation = depth_activation
        self.depthwise = conv(cin, cin, 3, stride, rate, rate, cin)
        self.depthwise_BN = nn.BatchNorm2d(cin, eps=eps)
        self.pointwise = conv(cin, cout, 1)
        self.pointwise_BN = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x):
        if not self.depth_activation:
            x = F.relu(x)
        x = self.depthwise_BN(self.depthwise(x))
        if self.depth_activation:
            x = F.relu(x)
        x = self.pointwise_BN(self.pointwise(x))
        if self.depth_activation:
            x = F.relu(x)
        return x


# ---------------------------------------------------------------------------------------
# Xception-65


class XceptionBlock(nn.Module):
    def __init__(self, cin: int, depths: Tuple[int, int, int], shortcut: str, stride: int,
                 rate: int, depth_activation: bool):
        super().__init__()
        self.shortcut_type = shortcut
        channels = cin
        for i in range(3):
            setattr(self, f"separable_conv{i + 1}",
                    SepConvBN(channels, depths[i], stride if i == 2 else 1, rate,
                              depth_activation, KERAS_BN_EPS))
            channels = depths[i]
        if shortcut == "conv":
            self.shortcut = conv(cin, depths[2], 1, stride)
            self.shortcut_BN = nn.BatchNorm2d(depths[2], eps=KERAS_BN_EPS)

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns the block output and separable_conv2's output (the decoder's skip)."""
        residual = self.separable_conv1(x)
        skip = self.separable_conv2(residual)
        residual = self.separable_conv3(skip)
        if self.shortcut_type == "conv":
            residual = residual + self.shortcut_BN(self.shortcut(x))
        elif self.shortcut_type == "sum":
            residual = residual + x
        return residual, skip


class Xception65(nn.Module):
    default_output_stride = 16
    default_decoder = True
    aspp_atrous_branches = True

    def __init__(self, output_stride: int, alpha: float):
        super().__init__()
        del alpha  # no width multiplier
        os8 = output_stride == 8
        middle_rate, exit_rate1, exit_rate2 = (2, 2, 4) if os8 else (1, 1, 2)
        self.entry_flow_conv1_1 = conv(3, 32, 3, 2)
        self.entry_flow_conv1_1_BN = nn.BatchNorm2d(32, eps=KERAS_BN_EPS)
        self.entry_flow_conv1_2 = conv(32, 64, 3, 1, 1)
        self.entry_flow_conv1_2_BN = nn.BatchNorm2d(64, eps=KERAS_BN_EPS)
        self.entry_flow_block1 = XceptionBlock(64, (128, 128, 128), "conv", 2, 1, False)
        self.entry_flow_block2 = XceptionBlock(128, (256, 256, 256), "conv", 2, 1, False)
        self.entry_flow_block3 = XceptionBlock(256, (728, 728, 728), "conv", 1 if os8 else 2, 1,
                                               False)
        self.middle = [f"middle_flow_unit_{i + 1}" for i in range(16)]
        for name in self.middle:
            setattr(self, name, XceptionBlock(728, (728, 728, 728), "sum", 1, middle_rate, False))
        self.exit_flow_block1 = XceptionBlock(728, (728, 1024, 1024), "conv", 1, exit_rate1, False)
        self.exit_flow_block2 = XceptionBlock(1024, (1536, 1536, 2048), "none", 1, exit_rate2, True)
        self.low_level_channels = 256
        self.high_level_channels = 2048

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.entry_flow_conv1_1_BN(self.entry_flow_conv1_1(tf_same_pad(x, 3, 2))))
        x = F.relu(self.entry_flow_conv1_2_BN(self.entry_flow_conv1_2(x)))
        x, _ = self.entry_flow_block1(x)
        x, low_level = self.entry_flow_block2(x)
        x, _ = self.entry_flow_block3(x)
        for name in self.middle:
            x, _ = getattr(self, name)(x)
        x, _ = self.exit_flow_block1(x)
        x, _ = self.exit_flow_block2(x)
        return low_level, x


# ---------------------------------------------------------------------------------------
# MobileNetV2


def make_divisible(v: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(v + divisor / 2.0) // divisor * divisor)
    if rounded < 0.9 * v:
        rounded += divisor
    return rounded


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int, rate: int,
                 residual: bool):
        super().__init__()
        self.stride, self.rate, self.residual = stride, rate, residual
        hidden = cin
        self.has_expand = expansion != 1
        if self.has_expand:
            hidden = cin * expansion
            self.expand = conv(cin, hidden, 1)
            self.expand_BN = nn.BatchNorm2d(hidden, eps=KERAS_BN_EPS)
        self.depthwise = conv(hidden, hidden, 3, stride, rate if stride == 1 else 0, rate, hidden)
        self.depthwise_BN = nn.BatchNorm2d(hidden, eps=KERAS_BN_EPS)
        self.project = conv(hidden, cout, 1)
        self.project_BN = nn.BatchNorm2d(cout, eps=KERAS_BN_EPS)

    def forward(self, inputs):
        x = inputs
        if self.has_expand:
            x = F.relu6(self.expand_BN(self.expand(x)))
        if self.stride > 1:
            x = tf_same_pad(x, 3, self.stride, self.rate)
        x = F.relu6(self.depthwise_BN(self.depthwise(x)))
        x = self.project_BN(self.project(x))
        return inputs + x if self.residual else x


class MobileNetV2(nn.Module):
    default_output_stride = 8
    default_decoder = False
    aspp_atrous_branches = False

    def __init__(self, output_stride: int, alpha: float):
        super().__init__()
        os8 = output_stride == 8
        r1, r2 = (2, 4) if os8 else (1, 2)
        # filters, expansion, stride, rate
        blocks = [(16, 1, 1, 1), (24, 6, 2, 1), (24, 6, 1, 1), (32, 6, 2, 1), (32, 6, 1, 1),
                  (32, 6, 1, 1), (64, 6, 1 if os8 else 2, 1), (64, 6, 1, r1), (64, 6, 1, r1),
                  (64, 6, 1, r1), (96, 6, 1, r1), (96, 6, 1, r1), (96, 6, 1, r1),
                  (160, 6, 1, r1), (160, 6, 1, r2), (160, 6, 1, r2), (320, 6, 1, r2)]
        first = make_divisible(32 * alpha)
        self.Conv = conv(3, first, 3, 2)
        self.Conv_BN = nn.BatchNorm2d(first, eps=KERAS_BN_EPS)
        channels = first
        self.block_names: List[str] = []
        for i, (filters, expansion, stride, rate) in enumerate(blocks):
            out = make_divisible(int(filters * alpha))
            residual = i > 0 and stride == 1 and blocks[i - 1][0] == filters
            name = "expanded_conv" if i == 0 else f"expanded_conv_{i}"
            setattr(self, name, InvertedResidual(channels, out, expansion, stride, rate, residual))
            self.block_names.append(name)
            channels = out
            if i == 2:
                self.low_level_channels = out
        self.high_level_channels = channels

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        x = F.relu6(self.Conv_BN(self.Conv(tf_same_pad(x, 3, 2))))
        low_level = x
        for i, name in enumerate(self.block_names):
            x = getattr(self, name)(x)
            if i == 2:
                low_level = x
        return low_level, x


BACKBONES = {"xception65": Xception65, "mobilenetv2": MobileNetV2}


# ---------------------------------------------------------------------------------------
# Head


class Aspp(nn.Module):
    def __init__(self, cin: int, atrous_branches: bool, output_stride: int, channels: int):
        super().__init__()
        self.channels = channels
        self.image_pooling = conv(cin, channels, 1)
        self.image_pooling_BN = nn.BatchNorm2d(channels, eps=HEAD_BN_EPS)
        self.aspp0 = conv(cin, channels, 1)
        self.aspp0_BN = nn.BatchNorm2d(channels, eps=HEAD_BN_EPS)
        branches = 2
        self.atrous = []
        if atrous_branches:
            base_rate = 12 if output_stride == 8 else 6
            for i in range(1, 4):
                branch = SepConvBN(cin, channels, 1, base_rate * i, True, HEAD_BN_EPS)
                setattr(self, f"aspp{i}", branch)
                self.atrous.append(f"aspp{i}")
            branches += 3
        self.concat_projection = conv(branches * channels, channels, 1)
        self.concat_projection_BN = nn.BatchNorm2d(channels, eps=HEAD_BN_EPS)

    def forward(self, x):
        pooled = x.mean(dim=(2, 3), keepdim=True)
        pooled = F.relu(self.image_pooling_BN(self.image_pooling(pooled)))
        parts = [pooled.expand(x.shape[0], self.channels, x.shape[2], x.shape[3]),
                 F.relu(self.aspp0_BN(self.aspp0(x)))]
        parts += [getattr(self, name)(x) for name in self.atrous]
        return F.relu(self.concat_projection_BN(self.concat_projection(torch.cat(parts, 1))))


class Decoder(nn.Module):
    def __init__(self, low_level_channels: int, align_corners: bool, channels: int):
        super().__init__()
        self.align_corners = align_corners
        self.feature_projection0 = conv(low_level_channels, LOW_LEVEL_PROJECTION, 1)
        self.feature_projection0_BN = nn.BatchNorm2d(LOW_LEVEL_PROJECTION, eps=HEAD_BN_EPS)
        self.decoder_conv0 = SepConvBN(channels + LOW_LEVEL_PROJECTION, channels, 1, 1, True,
                                       HEAD_BN_EPS)
        self.decoder_conv1 = SepConvBN(channels, channels, 1, 1, True, HEAD_BN_EPS)

    def forward(self, x, low_level):
        up = resize_bilinear(x, low_level.shape[2], low_level.shape[3], self.align_corners)
        projected = F.relu(self.feature_projection0_BN(self.feature_projection0(low_level)))
        return self.decoder_conv1(self.decoder_conv0(torch.cat([up, projected], 1)))


class DeepLabV3Plus(nn.Module):
    """Architecture fields as in model_config.proto's Architecture (zero: the default)."""

    def __init__(self, backbone: str, num_classes: int, output_stride: int = 0,
                 alpha: float = 1.0, decoder: Optional[bool] = None, head_channels: int = 0,
                 align_corners: bool = False, activation: str = "none",
                 logits_layer_name: str = ""):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone '{backbone}' has no eager version here; "
                             f"known: {', '.join(sorted(BACKBONES))}")
        kind = BACKBONES[backbone]
        output_stride = output_stride or kind.default_output_stride
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        decoder = kind.default_decoder if decoder is None else decoder
        head_channels = head_channels or 256
        if not logits_layer_name:
            logits_layer_name = ("logits_semantic" if num_classes in (19, 21)
                                 else "custom_logits_semantic")
        self.align_corners = align_corners
        self.activation = activation
        self.logits_layer_name = logits_layer_name
        self.backbone = kind(output_stride, alpha)
        self.aspp = Aspp(self.backbone.high_level_channels, kind.aspp_atrous_branches,
                         output_stride, head_channels)
        self.decoder = (Decoder(self.backbone.low_level_channels, align_corners, head_channels)
                        if decoder else None)
        self.head = nn.Module()
        setattr(self.head, logits_layer_name, nn.Conv2d(head_channels, num_classes, 1))
        self._init_weights()

    def _init_weights(self):
        # He initialisation, as the C++ model does, so random weights keep a useful scale.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        low_level, high_level = self.backbone(x)
        y = self.aspp(high_level)
        if self.decoder is not None:
            y = self.decoder(y, low_level)
        y = getattr(self.head, self.logits_layer_name)(y)
        y = resize_bilinear(y, x.shape[2], x.shape[3], self.align_corners)
        if self.activation == "softmax":
            return torch.softmax(y, 1)
        if self.activation == "sigmoid":
            return torch.sigmoid(y)
        return y


# ---------------------------------------------------------------------------------------
# Native checkpoint (.dlck): "DLCKPT01", header size (u64, little-endian), a
# deeplab.v1.CheckpointHeader, then the tensors at 64-byte aligned offsets.

CHECKPOINT_MAGIC = b"DLCKPT01"
CHECKPOINT_ALIGNMENT = 64


_PROTO_MODULES = None


def _checkpoint_proto():
    """Compiles protos/deeplab/v1/checkpoint.proto with grpc_tools (once) and imports it."""
    global _PROTO_MODULES  # pylint: disable=global-statement
    if _PROTO_MODULES is not None:
        return _PROTO_MODULES
    try:
        from grpc_tools import protoc
    except ImportError as e:
        raise SystemExit("reading a .dlck needs grpc_tools (apt-get install python3-grpc-tools)"
                         ) from e
    protos = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "protos")
    out = tempfile.mkdtemp(prefix="eager_deeplab_pb_")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    for name in ("model_config", "checkpoint"):
        rc = protoc.main(["protoc", f"-I{protos}", f"--python_out={out}",
                          os.path.join(protos, "deeplab", "v1", f"{name}.proto")])
        if rc != 0:
            raise SystemExit(f"protoc failed on {name}.proto")
    sys.path.insert(0, out)
    from deeplab.v1 import checkpoint_pb2, model_config_pb2  # pylint: disable=import-error
    _PROTO_MODULES = (checkpoint_pb2, model_config_pb2)
    return _PROTO_MODULES


def read_checkpoint(path: str):
    """Returns (architecture keyword arguments for DeepLabV3Plus, {name: float32 tensor})."""
    checkpoint_pb2, model_config_pb2 = _checkpoint_proto()
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 16 or data[:8] != CHECKPOINT_MAGIC:
        raise SystemExit(f"{path}: not a deeplab-serve native checkpoint")
    (header_size,) = struct.unpack("<Q", data[8:16])
    header = checkpoint_pb2.CheckpointHeader()
    header.ParseFromString(data[16:16 + header_size])
    start = (16 + header_size + CHECKPOINT_ALIGNMENT - 1) // CHECKPOINT_ALIGNMENT * \
        CHECKPOINT_ALIGNMENT
    tensors = {}
    for t in header.tensors:
        if t.dtype != "float32":
            raise SystemExit(f"{path}: tensor {t.name} has dtype {t.dtype}, expected float32")
        raw = bytearray(data[start + t.offset:start + t.offset + t.nbytes])
        tensors[t.name] = torch.frombuffer(raw, dtype=torch.float32).reshape(list(t.shape))
    a = header.architecture
    arch = model_config_pb2.Architecture
    kwargs = dict(
        backbone=a.backbone, num_classes=a.num_classes, output_stride=a.output_stride,
        alpha=a.alpha or 1.0,
        decoder={arch.DECODER_ON: True, arch.DECODER_OFF: False}.get(a.decoder),
        head_channels=a.head_channels, align_corners=a.align_corners,
        activation={model_config_pb2.ACTIVATION_SOFTMAX: "softmax",
                    model_config_pb2.ACTIVATION_SIGMOID: "sigmoid"}.get(a.activation, "none"),
        logits_layer_name=a.logits_layer_name)
    return kwargs, tensors


def load_checkpoint(model: nn.Module, tensors: Dict[str, torch.Tensor]):
    """Copies every tensor in; the names and shapes must match both ways."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(state) - set(tensors))
    unexpected = sorted(set(tensors) - set(state))
    if missing or unexpected:
        raise SystemExit(f"checkpoint does not fit the eager model: missing {missing[:5]} "
                         f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")
    with torch.no_grad():
        for name, value in tensors.items():
            if tuple(state[name].shape) != tuple(value.shape):
                raise SystemExit(f"{name}: checkpoint shape {tuple(value.shape)}, "
                                 f"model {tuple(state[name].shape)}")
            state[name].copy_(value)


# ---------------------------------------------------------------------------------------
# Commands

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_size(text: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must be HxW, got '{text}'") from None
    if h < 1 or w < 1:
        raise SystemExit(f"--size must be positive, got '{text}'")
    return h, w


class Reference(nn.Module):
    def __init__(self, tensors: Dict[str, torch.Tensor]):
        super().__init__()
        for name, value in tensors.items():
            self.register_buffer(name, value)

    def forward(self, x):
        return x


def command_reference(args):
    if len(args.weights) != len(args.out):
        raise SystemExit("reference: give one --out for each --weights")
    h, w = parse_size(args.size)
    for weights, out in zip(args.weights, args.out):
        kwargs, tensors = read_checkpoint(weights)
        model = DeepLabV3Plus(**kwargs)
        load_checkpoint(model, tensors)
        model.eval()
        generator = torch.Generator().manual_seed(args.seed)
        x = torch.rand(args.batch, 3, h, w, generator=generator) * 2 - 1
        with torch.no_grad():
            y = model(x)
        torch.jit.script(Reference({"input": x, "output": y})).save(out)
        print(json.dumps({"weights": weights, "architecture": kwargs, "tensors": len(tensors),
                          "output_shape": list(y.shape)}))


def time_forward(model, x, device: torch.device, iterations: int, min_seconds: float) -> List[float]:
    """Seconds per forward pass, each synchronised; after warm-up passes."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):
        model(x)
    sync()
    times = []
    began = time.perf_counter()
    while len(times) < iterations or time.perf_counter() - began < min_seconds:
        start = time.perf_counter()
        model(x)
        sync()
        times.append(time.perf_counter() - start)
        if len(times) >= 10 * iterations:
            break
    return times


def command_bench(args):
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this PyTorch sees no CUDA device")
    dtype = DTYPES[args.dtype]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    h, w = parse_size(args.size)
    torch.manual_seed(args.seed)
    model = DeepLabV3Plus(args.arch, args.classes, args.output_stride, args.alpha)
    model.eval().to(device=device, dtype=dtype)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    if args.compile:
        if not hasattr(torch, "compile"):
            raise SystemExit(f"--compile needs PyTorch 2.0 or later; this is {torch.__version__}")
        # Each batch size compiles on its first (untimed) passes.
        model = torch.compile(model, mode=args.compile)
    steps = []
    with torch.inference_mode():
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            x = (torch.rand(batch, 3, h, w, device=device) * 2 - 1).to(dtype)
            x = x.contiguous(memory_format=memory_format)
            times = sorted(time_forward(model, x, device, args.iterations, args.min_seconds))
            median = times[len(times) // 2]
            p90 = times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)]
            steps.append({"batch_size": batch, "passes": len(times),
                          "mean_ms": sum(times) / len(times) * 1e3, "median_ms": median * 1e3, "p90_ms": p90 * 1e3,
                          "images_per_second": batch / median})
            print(f"eager {args.arch} {args.dtype} batch {batch}: {median * 1e3:.2f} ms, "
                  f"{batch / median:.2f} images/s", file=sys.stderr, flush=True)
    print(json.dumps({
        "runtime": f"pytorch {torch.__version__} {'compile ' + args.compile if args.compile else 'eager'}"
                   f" {device} {args.dtype}"
                   f"{' channels_last' if args.channels_last else ''}",
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(), "arch": args.arch, "size": [h, w],
        "steps": steps}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="time the forward pass at each batch size")
    bench.add_argument("--arch", default="xception65", choices=sorted(BACKBONES))
    bench.add_argument("--classes", type=int, default=21)
    bench.add_argument("--output-stride", type=int, default=0)
    bench.add_argument("--alpha", type=float, default=1.0)
    bench.add_argument("--size", default="512x512", help="input HxW")
    bench.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K")
    bench.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    bench.add_argument("--channels-last", action="store_true")
    bench.add_argument("--compile", default="", metavar="MODE",
                       help="torch.compile the model first (default, reduce-overhead, max-autotune)")
    bench.add_argument("--batch-sizes", default="1", help="comma-separated")
    bench.add_argument("--iterations", type=int, default=10, help="fewest timed passes per size")
    bench.add_argument("--min-seconds", type=float, default=2.0,
                       help="least time measured per size (at most 10x --iterations passes)")
    bench.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: default")
    bench.add_argument("--seed", type=int, default=1)
    bench.set_defaults(run=command_bench)

    reference = sub.add_parser("reference", help="input and output of a .dlck, for the C++ test")
    reference.add_argument("--weights", required=True, action="append",
                           help="native checkpoint (.dlck); repeat for several")
    reference.add_argument("--size", default="65x49", help="input HxW")
    reference.add_argument("--batch", type=int, default=2)
    reference.add_argument("--seed", type=int, default=1)
    reference.add_argument("--out", required=True, action="append",
                           help="TorchScript container to write, one per --weights")
    reference.set_defaults(run=command_reference)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
