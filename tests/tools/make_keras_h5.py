#!/usr/bin/env python3
"""Write synthetic DeepLabv3+ Keras weight files for testing the HDF5 importer.

The published keras-deeplab-v3-plus / DigiPathAI weight files are large downloads that
tests cannot fetch, so this tool writes files with the same HDF5 structure (what Keras 2
`model.save_weights()` or `model.save()` produce) filled with seeded random values.
An optional "expected" file holds the same values already converted to PyTorch layout,
so an importer can be checked value by value without TensorFlow.

The model is described as a graph of Keras layers (weighted and weightless), built in the
order Keras would create them, and the saved layer order is computed with the rule Keras
uses for `Model.layers` (by depth from the output, then by traversal order). Layer names,
shapes and the order of each layer's weights follow DESIGN.md section 5.

Run with an interpreter that has numpy and h5py, e.g. /usr/bin/python3 on the dev image:

    make_keras_h5.py --arch xception65 --classes 21 --seed 1 --out x.h5 --expected x_exp.h5

One JSON object is printed on stdout: a summary, plus which weight a --defect affected.
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import List, Tuple

import h5py
import numpy as np

# Element counts that pin the architecture, keyed by (arch, classes, alpha): (total, which
# includes BatchNorm moving statistics, and trainable, or None where not pinned).
# The totals are DESIGN.md's. Its trainable figures (40,954,013 and 2,097,013) equal
# total - 3 * (BatchNorm channels), which no Keras layout gives; the values here are
# total - 2 * (BatchNorm channels): only moving_mean and moving_variance are non-trainable.
KNOWN_PARAM_COUNTS = {
    ("xception65", 21, None): (41_258_213, 41_055_413),
    ("xception65", 19, None): (41_257_699, None),
    ("xception65", 2, None): (41_253_330, None),
    ("mobilenetv2", 21, 1.0): (2_146_645, 2_113_557),
}

KERAS_VERSION = "2.4.0"
BACKEND = "tensorflow"


@dataclass
class Weight:
    """One Keras variable of a layer, e.g. var='kernel' with its Keras-layout shape."""
    var: str
    shape: Tuple[int, ...]
    trainable: bool = True


@dataclass(eq=False)  # identity semantics: layers are graph nodes and dict keys
class Layer:
    """A Keras layer: its class (for auto-naming), the layers feeding it, its variables."""
    name: str
    class_name: str
    inputs: List["Layer"]
    weights: List[Weight] = field(default_factory=list)


@dataclass
class Tensor:
    """The output of a layer together with its channel count (NHWC, so the last axis)."""
    layer: Layer
    channels: int


class KerasGraph:
    """Creates layers in model-building order and names unnamed ones as tf.keras 2.4 does.

    tf.keras names an unnamed layer after its class in snake case, counting from zero
    per prefix ("activation", "activation_1", ...); the input layer counts from one
    ("input_1"). Named layers do not consume a number.
    """

    _AUTO_PREFIX = {
        "InputLayer": "input",
        "Activation": "activation",
        "ZeroPadding2D": "zero_padding2d",
        "Add": "add",
        "Concatenate": "concatenate",
        "Dropout": "dropout",
        "GlobalAveragePooling2D": "global_average_pooling2d",
        "Reshape": "reshape",
        "Resizing": "resizing",
    }

    def __init__(self):
        self._uid = {}

    def _add(self, class_name, inputs, name=None, weights=()):
        if name is None:
            prefix = self._AUTO_PREFIX[class_name]
            count = self._uid.get(prefix, 0)
            self._uid[prefix] = count + 1
            if class_name == "InputLayer":
                name = f"{prefix}_{count + 1}"
            else:
                name = prefix if count == 0 else f"{prefix}_{count}"
        return Layer(name, class_name, [t.layer for t in inputs], list(weights))

    def input(self, channels=3):
        return Tensor(self._add("InputLayer", []), channels)

    def conv(self, x, name, out, k=1, bias=False):
        weights = [Weight("kernel", (k, k, x.channels, out))]
        if bias:
            weights.append(Weight("bias", (out,)))
        return Tensor(self._add("Conv2D", [x], name, weights), out)

    def depthwise(self, x, name, k=3):
        weights = [Weight("depthwise_kernel", (k, k, x.channels, 1))]
        return Tensor(self._add("DepthwiseConv2D", [x], name, weights), x.channels)

    def bn(self, x, name):
        c = (x.channels,)
        weights = [Weight("gamma", c), Weight("beta", c),
                   Weight("moving_mean", c, trainable=False),
                   Weight("moving_variance", c, trainable=False)]
        return Tensor(self._add("BatchNormalization", [x], name, weights), x.channels)

    def op(self, class_name, x, name=None):
        """A weightless layer with one input that keeps the channel count."""
        return Tensor(self._add(class_name, [x], name), x.channels)

    def add(self, xs, name=None):
        return Tensor(self._add("Add", xs, name), xs[0].channels)

    def concat(self, xs):
        return Tensor(self._add("Concatenate", xs), sum(t.channels for t in xs))


def keras_layer_order(output: Layer) -> List[Layer]:
    """Order layers as tf.keras `Model.layers` does, which is the order save_weights writes.

    Keras walks the graph depth-first from the output, following each layer's inputs in
    order, and numbers layers on first visit. A layer's depth is the longest path from it
    to the output. Layers are sorted by decreasing depth, ties by visit number.
    """
    visit_index = {output: 0}
    postorder = []
    stack = [(output, iter(output.inputs))]
    while stack:
        layer, pending = stack[-1]
        nxt = next(pending, None)
        if nxt is None:
            stack.pop()
            postorder.append(layer)
        elif nxt not in visit_index:
            visit_index[nxt] = len(visit_index)
            stack.append((nxt, iter(nxt.inputs)))

    # Reversed postorder lists every layer before its inputs, so depths are final on use.
    depth = {}
    for layer in reversed(postorder):
        d = depth.setdefault(layer, 0)
        for parent in layer.inputs:
            depth[parent] = max(depth.get(parent, 0), d + 1)
    return sorted(depth, key=lambda l: (-depth[l], visit_index[l]))


def make_divisible(v, divisor=8):
    """keras-deeplab-v3-plus's rounding of MobileNetV2 widths to a multiple of 8."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def separable_conv(g, x, prefix, filters, stride=1, depth_activation=False):
    """Depthwise 3x3 + BN, pointwise 1x1 + BN; layers as keras-deeplab-v3-plus creates them.

    Strided convs get an explicit ZeroPadding2D first; the ReLU sits before the depthwise
    conv unless depth_activation, in which case one follows each BN.
    """
    if stride > 1:
        x = g.op("ZeroPadding2D", x)
    if not depth_activation:
        x = g.op("Activation", x)
    x = g.bn(g.depthwise(x, prefix + "_depthwise"), prefix + "_depthwise_BN")
    if depth_activation:
        x = g.op("Activation", x)
    x = g.bn(g.conv(x, prefix + "_pointwise", filters), prefix + "_pointwise_BN")
    if depth_activation:
        x = g.op("Activation", x)
    return x


def xception_block(g, x, prefix, depths, shortcut, stride, depth_activation=False):
    """Three separable convs (stride on the last); returns (output, second conv's output)."""
    residual, skip = x, None
    for i, depth in enumerate(depths):
        residual = separable_conv(g, residual, f"{prefix}_separable_conv{i + 1}", depth,
                                  stride=stride if i == 2 else 1,
                                  depth_activation=depth_activation)
        if i == 1:
            skip = residual
    if shortcut == "conv":
        s = g.op("ZeroPadding2D", x) if stride > 1 else x  # pads by 0 for the 1x1 kernel
        s = g.bn(g.conv(s, prefix + "_shortcut", depths[-1]), prefix + "_shortcut_BN")
        return g.add([residual, s]), skip
    if shortcut == "sum":
        return g.add([residual, x]), skip
    return residual, skip


def xception65_backbone(g, x, output_stride):
    """Returns (stride-16/8 features, stride-4 low-level features for the decoder)."""
    # Output stride changes dilation rates (which leave no trace in the file) and
    # entry_flow_block3's stride, which decides whether its ZeroPadding2D layers exist.
    entry3_stride = 2 if output_stride == 16 else 1
    x = g.op("Activation", g.bn(g.conv(x, "entry_flow_conv1_1", 32, k=3), "entry_flow_conv1_1_BN"))
    x = g.op("Activation", g.bn(g.conv(x, "entry_flow_conv1_2", 64, k=3), "entry_flow_conv1_2_BN"))
    x, _ = xception_block(g, x, "entry_flow_block1", [128] * 3, "conv", 2)
    x, low_level = xception_block(g, x, "entry_flow_block2", [256] * 3, "conv", 2)
    x, _ = xception_block(g, x, "entry_flow_block3", [728] * 3, "conv", entry3_stride)
    for i in range(1, 17):
        x, _ = xception_block(g, x, f"middle_flow_unit_{i}", [728] * 3, "sum", 1)
    x, _ = xception_block(g, x, "exit_flow_block1", [728, 1024, 1024], "conv", 1)
    x, _ = xception_block(g, x, "exit_flow_block2", [1536, 1536, 2048], "none", 1,
                          depth_activation=True)
    return x, low_level


def mobilenetv2_backbone(g, x, alpha):
    """The published MobileNetV2 variant: 17 inverted residual blocks, no final 1x1 conv."""
    x = g.conv(x, "Conv", make_divisible(32 * alpha), k=3)
    x = g.op("Activation", g.bn(x, "Conv_BN"), "Conv_Relu6")
    filters = [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]
    # Blocks whose input and output shapes match get a residual Add.
    residual_blocks = {2, 4, 5, 7, 8, 9, 11, 12, 14, 15}
    for block_id, f in enumerate(filters):
        block_in = x
        if block_id == 0:
            prefix = "expanded_conv_"
        else:
            prefix = f"expanded_conv_{block_id}_"
            x = g.conv(x, prefix + "expand", 6 * x.channels)
            x = g.op("Activation", g.bn(x, prefix + "expand_BN"), prefix + "expand_relu")
        x = g.bn(g.depthwise(x, prefix + "depthwise"), prefix + "depthwise_BN")
        x = g.op("Activation", x, prefix + "depthwise_relu")
        x = g.bn(g.conv(x, prefix + "project", make_divisible(int(f * alpha))),
                 prefix + "project_BN")
        if block_id in residual_blocks:
            x = g.add([block_in, x], prefix + "add")
    return x


def build_model(arch, classes, alpha, output_stride, logits_name):
    """Builds the layer graph of the whole DeepLabv3+ model and returns its saved order."""
    g = KerasGraph()
    x = g.input()
    if arch == "xception65":
        x, low_level = xception65_backbone(g, x, output_stride)
    else:
        x, low_level = mobilenetv2_backbone(g, x, alpha), None

    pool = g.op("Reshape", g.op("GlobalAveragePooling2D", x))
    pool = g.op("Activation", g.bn(g.conv(pool, "image_pooling", 256), "image_pooling_BN"))
    pool = g.op("Resizing", pool)
    aspp0 = g.bn(g.conv(x, "aspp0", 256), "aspp0_BN")
    branches = [pool, g.op("Activation", aspp0, "aspp0_activation")]
    if arch == "xception65":
        branches += [separable_conv(g, x, f"aspp{i}", 256, depth_activation=True)
                     for i in (1, 2, 3)]
    x = g.concat(branches)
    x = g.op("Activation", g.bn(g.conv(x, "concat_projection", 256), "concat_projection_BN"))
    x = g.op("Dropout", x)

    if low_level is not None:
        x = g.op("Resizing", x)
        proj = g.bn(g.conv(low_level, "feature_projection0", 48), "feature_projection0_BN")
        x = g.concat([x, g.op("Activation", proj)])
        x = separable_conv(g, x, "decoder_conv0", 256, depth_activation=True)
        x = separable_conv(g, x, "decoder_conv1", 256, depth_activation=True)

    x = g.conv(x, logits_name, classes, bias=True)
    x = g.op("Resizing", x)
    return keras_layer_order(x.layer)


def random_value(rng, weight: Weight) -> np.ndarray:
    """Seeded values with plausible magnitudes (so a forward pass stays finite)."""
    shape = weight.shape
    if weight.var in ("kernel", "depthwise_kernel"):
        fan_in = int(np.prod(shape[:-1])) if weight.var == "kernel" else shape[0] * shape[1]
        v = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
    elif weight.var in ("gamma", "moving_variance"):
        v = rng.uniform(0.5, 1.5, shape)  # moving_variance must be positive
    else:  # beta, moving_mean, bias
        v = rng.normal(0.0, 0.1, shape)
    return v.astype(np.float32)


def to_pytorch_layout(var: str, value: np.ndarray) -> np.ndarray:
    """Keras HWIO conv kernels -> OIHW; depthwise (kh,kw,C,1) -> (C,1,kh,kw); vectors as is."""
    if var == "kernel":
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    if var == "depthwise_kernel":
        return np.ascontiguousarray(value.transpose(2, 3, 0, 1))
    return value


def write_bytes_list_attr(group, name, items: List[bytes], chunks=1):
    """Store a list of names as Keras does.

    Keras assigns the Python list straight to the attribute, so names become a fixed-length
    bytes array ('S<max len>') and an empty list becomes an empty float64 array. A list too
    big for an HDF5 object header is split with np.array_split into name0, name1, ...
    """
    if chunks == 1:
        group.attrs[name] = np.asarray(items) if items else np.asarray([])
        return
    for i, chunk in enumerate(np.array_split(np.asarray(items), chunks)):
        group.attrs[f"{name}{i}"] = chunk


def write_weights_group(root, entries, split_names):
    """Write layer groups the way Keras save_weights_to_hdf5_group does.

    entries: (layer name, [(weight name, value), ...]) in saved order.
    """
    write_bytes_list_attr(root, "layer_names", [n.encode("utf8") for n, _ in entries],
                          chunks=split_names)
    # np.bytes_ keeps these fixed-length strings as in files written with h5py 2 (h5py 3
    # would store a plain bytes object as a variable-length string).
    root.attrs["backend"] = np.bytes_(BACKEND.encode("utf8"))
    root.attrs["keras_version"] = np.bytes_(KERAS_VERSION.encode("utf8"))
    for layer_name, weights in entries:
        group = root.create_group(layer_name)
        write_bytes_list_attr(group, "weight_names", [w.encode("utf8") for w, _ in weights])
        for weight_name, value in weights:
            # The '/' in "layer/kernel:0" makes h5py create the nested group Keras files have.
            dset = group.create_dataset(weight_name, value.shape, dtype=value.dtype)
            dset[...] = value


def apply_defect(kind, entries, rng):
    """Corrupt entries in place; returns a JSON-able description of what was changed."""
    if kind == "none":
        return {}
    weighted = [(li, wi) for li, (_, ws) in enumerate(entries) for wi in range(len(ws))]
    if kind == "missing":
        li, wi = weighted[rng.integers(len(weighted))]
        layer_name, weights = entries[li]
        weight_name, _ = weights.pop(wi)
        return {"layer": layer_name, "weight": weight_name}
    if kind == "extra":
        layer_name = "unexpected_extra_conv"
        value = rng.normal(0.0, 0.1, (1, 1, 8, 8)).astype(np.float32)
        entries.append((layer_name, [(f"{layer_name}/kernel:0", value)]))
        return {"layer": layer_name, "weight": f"{layer_name}/kernel:0", "shape": list(value.shape)}
    if kind == "misshaped":
        kernels = [(li, wi) for li, wi in weighted if entries[li][1][wi][1].ndim == 4]
        li, wi = kernels[rng.integers(len(kernels))]
        layer_name, weights = entries[li]
        weight_name, value = weights[wi]
        bad_shape = value.shape[:-1] + (value.shape[-1] + 1,)
        weights[wi] = (weight_name, rng.normal(0.0, 0.1, bad_shape).astype(np.float32))
        return {"layer": layer_name, "weight": weight_name, "shape": list(bad_shape),
                "expected_shape": list(value.shape)}
    raise ValueError(kind)


def model_config_json(layers: List[Layer]) -> str:
    """A stand-in for the model_config that model.save stores; importers must not need it."""
    config = {"class_name": "Functional",
              "config": {"name": "deeplabv3plus",
                         "layers": [{"class_name": l.class_name, "name": l.name} for l in layers]}}
    return json.dumps(config)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True, choices=["xception65", "mobilenetv2"])
    p.add_argument("--classes", required=True, type=int)
    p.add_argument("--alpha", type=float, help="MobileNetV2 width multiplier (default 1.0)")
    p.add_argument("--output-stride", type=int, choices=[8, 16],
                   help="Xception only (default 16); changes weightless layers, not weights")
    p.add_argument("--layout", choices=["save_weights", "model_save"], default="save_weights")
    p.add_argument("--logits-name", help="default: logits_semantic for 21 or 19 classes, "
                                         "else custom_logits_semantic")
    p.add_argument("--split-names", type=int, metavar="K",
                   help="store layer_names as layer_names0..K-1 (K >= 2)")
    p.add_argument("--defect", choices=["none", "missing", "extra", "misshaped"], default="none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--expected", help="also write the PyTorch-layout values here")
    args = p.parse_args(argv)
    if args.classes < 1:
        p.error("--classes must be >= 1")
    if args.arch == "xception65":
        if args.alpha is not None:
            p.error("--alpha applies to mobilenetv2 only")
        args.output_stride = args.output_stride or 16
    else:
        if args.output_stride is not None:
            p.error("--output-stride applies to xception65 only (MobileNetV2 is fixed at 8)")
        args.alpha = 1.0 if args.alpha is None else args.alpha
        if args.alpha <= 0:
            p.error("--alpha must be > 0")
    if args.split_names is not None and args.split_names < 2:
        p.error("--split-names needs K >= 2 (leave it out for an unsplit attribute)")
    if args.logits_name is None:
        args.logits_name = ("logits_semantic" if args.classes in (21, 19)
                            else "custom_logits_semantic")
    return args


def main(argv=None):
    args = parse_args(argv)
    layers = build_model(args.arch, args.classes, args.alpha, args.output_stride,
                         args.logits_name)
    name_chunks = args.split_names or 1
    if name_chunks > len(layers):
        sys.exit(f"--split-names {name_chunks} exceeds the {len(layers)} layers")

    specs = [(l.name, w) for l in layers for w in l.weights]
    total = sum(int(np.prod(w.shape)) for _, w in specs)
    trainable = sum(int(np.prod(w.shape)) for _, w in specs if w.trainable)
    known = KNOWN_PARAM_COUNTS.get(
        (args.arch, args.classes, args.alpha if args.arch == "mobilenetv2" else None))
    if known is not None:
        assert total == known[0], f"total {total} != known {known[0]}"
        assert known[1] is None or trainable == known[1], \
            f"trainable {trainable} != known {known[1]}"

    # Values come from the seed alone, so a defective file shares its clean values (and
    # its expected file) with the defect-free file of the same seed.
    rng = np.random.default_rng(args.seed)
    values = {(name, w.var): random_value(rng, w) for name, w in specs}
    entries = [(l.name, [(f"{l.name}/{w.var}:0", values[(l.name, w.var)]) for w in l.weights])
               for l in layers]
    defect = apply_defect(args.defect, entries, np.random.default_rng([args.seed, 1]))

    with h5py.File(args.out, "w") as f:
        root = f
        if args.layout == "model_save":
            # model.save keeps str (not bytes) metadata at the top and the weights below.
            f.attrs["keras_version"] = KERAS_VERSION
            f.attrs["backend"] = BACKEND
            f.attrs["model_config"] = model_config_json(layers)
            root = f.create_group("model_weights")
        write_weights_group(root, entries, name_chunks)

    if args.expected:
        with h5py.File(args.expected, "w") as f:
            f.attrs["num_params_total"] = np.int64(total)
            f.attrs["num_params_trainable"] = np.int64(trainable)
            f.attrs["arch"] = args.arch
            f.attrs["classes"] = np.int64(args.classes)
            f.attrs["logits_layer"] = args.logits_name
            for (name, var), value in values.items():
                f.create_dataset(f"{name}/{var}", data=to_pytorch_layout(var, value))

    summary = {"defect": args.defect, **defect, "arch": args.arch, "classes": args.classes,
               "logits_layer": args.logits_name, "layers": len(layers),
               "weighted_layers": sum(1 for l in layers if l.weights), "weights": len(specs),
               "num_params_total": total, "num_params_trainable": trainable,
               "out": args.out, "expected": args.expected}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
