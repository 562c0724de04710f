#!/usr/bin/env python3
"""Write the seeds of the raw_image, model_config, native_checkpoint, keras_h5 and oip_request
fuzzers.

Each seed is small (a few KB) and well formed, so that the fuzzer starts from inputs that
reach deep into the reader; tests/fuzz/make_corpus.sh runs this and the image seed maker.
Files found by fuzzing (crash-*, regression-*) live beside the seeds and are left alone.

    make_corpus.py CORPUS_DIR        (with numpy, h5py and protobuf: /usr/bin/python3)
"""

import re
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
import make_keras_h5  # noqa: E402  (the Keras layout the importer's tests use)


def write(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# -- raw_image: int32 height, int32 width, int8 channels, pixel bytes (raw_image_fuzzer.cc)

def raw_seed(height, width, channels, data=None):
    if data is None:
        data = bytes((i * 37) & 0xFF for i in range(max(height * width * channels, 0)))
    return struct.pack("<iib", height, width, channels) + data


def raw_image(out: Path):
    write(out / "rgb_3x2", raw_seed(2, 3, 3))
    write(out / "grey_4x4", raw_seed(4, 4, 1))
    write(out / "rgba_2x2", raw_seed(2, 2, 4))
    write(out / "two_channels", raw_seed(2, 2, 2))
    write(out / "short_data", raw_seed(3, 3, 3, b"\x01\x02\x03"))
    write(out / "negative_height", raw_seed(-1, 4, 3, b""))


# -- model_config: the shipped configs, renamed to the fuzzer's folder name "fuzz"

def model_config(out: Path):
    for name in ("demo", "pascal_voc", "cityscapes_mobilenetv2", "pathology_camelyon"):
        text = (ROOT / "models" / name / "config.pbtxt").read_text()
        text = re.sub(r'^name: ".*"$', 'name: "fuzz"', text, count=1, flags=re.M)
        write(out / f"{name}.pbtxt", text.encode())
    write(out / "minimal.pbtxt", b'name: "fuzz"\narchitecture { backbone: "resnet50" '
          b'num_classes: 2 }\ninput { height: 64 width: 64 }\nclass_names: ["a", "b"]\n'
          b'tiling { stride: 32 }\nweights { format: WEIGHTS_FORMAT_RANDOM }\n')


# -- native_checkpoint: a few tensors of models/demo/demo.dlck under its header

MAGIC = b"DLCKPT01"


def checkpoint_module(tmp: Path):
    """checkpoint_pb2, generated from the project's protos with protoc."""
    protos = ROOT / "protos"
    subprocess.run(["protoc", f"-I{protos}", f"--python_out={tmp}",
                    "deeplab/v1/checkpoint.proto", "deeplab/v1/model_config.proto"],
                   check=True)
    sys.path.insert(0, str(tmp))
    from deeplab.v1 import checkpoint_pb2  # pylint: disable=import-outside-toplevel
    return checkpoint_pb2


def align(n):
    return (n + 63) // 64 * 64


def pack_checkpoint(header, payloads):
    """Lays the header and payloads out as SaveNativeCheckpoint does (offsets, crc32)."""
    offset = 0
    for tensor, payload in zip(header.tensors, payloads):
        tensor.offset = offset
        tensor.nbytes = len(payload)
        tensor.crc32 = zlib.crc32(payload)
        offset = align(offset + len(payload))
    data = header.SerializeToString()
    out = bytearray(MAGIC + struct.pack("<Q", len(data)) + data)
    out += bytes(align(len(out)) - len(out))
    for payload in payloads:
        out += payload + bytes(align(len(payload)) - len(payload))
    return bytes(out)


def native_checkpoint(out: Path, pb2):
    demo = (ROOT / "models" / "demo" / "demo.dlck").read_bytes()
    size = struct.unpack("<Q", demo[8:16])[0]
    full = pb2.CheckpointHeader.FromString(demo[16:16 + size])
    data_start = align(16 + size)
    # The smallest tensors: BatchNorm vectors of a few channels.
    small = sorted(full.tensors, key=lambda t: (t.nbytes, t.name))[:3]

    def seed(tensors, architecture=None):
        header = pb2.CheckpointHeader(source="tests/fuzz/make_corpus.py")
        header.architecture.CopyFrom(architecture or full.architecture)
        payloads = []
        for t in tensors:
            header.tensors.add().CopyFrom(t)
            payloads.append(demo[data_start + t.offset:data_start + t.offset + t.nbytes])
        return header, payloads

    header, payloads = seed(small)
    write(out / "demo_three_tensors.dlck", pack_checkpoint(header, payloads))
    corrupt = bytearray(pack_checkpoint(header, payloads))
    corrupt[-64] ^= 0xFF  # the last tensor's first byte: fails its checksum
    write(out / "demo_bad_checksum.dlck", bytes(corrupt))
    header, payloads = seed(small[:1])
    header.tensors[0].shape.append(1)
    write(out / "demo_wrong_shape.dlck", pack_checkpoint(header, payloads))
    header, payloads = seed(small[:1])
    header.tensors[0].name = "backbone.no_such_layer.weight"
    write(out / "demo_extra_tensor.dlck", pack_checkpoint(header, payloads))
    arch = pb2.CheckpointHeader().architecture
    arch.backbone, arch.num_classes = "xception65", 21
    header, payloads = seed([], arch)
    write(out / "xception_no_tensors.dlck", pack_checkpoint(header, payloads))


# -- keras_h5: the first layers of a Keras MobileNetV2 (alpha 0.5, as the fuzzer's network)

def keras_entries(names):
    """The named layers of the Keras model, in its saved order, with seeded values."""
    layers = make_keras_h5.build_model("mobilenetv2", 5, 0.5, None, "custom_logits_semantic")
    rng = np.random.default_rng(1)
    return [(layer.name, [(f"{layer.name}/{w.var}:0", make_keras_h5.random_value(rng, w))
                          for w in layer.weights])
            for layer in layers if layer.name in names]


# A weightless layer, a BatchNorm and a depthwise kernel; Conv's kernel (1.7 KB) in one seed.
SMALL = ("input_1", "Conv_BN", "expanded_conv_depthwise")


def keras_h5(out: Path):
    # libver "latest" (compact groups) keeps a seed at a few KB; Keras writes the "earliest"
    # format (a B-tree and heap per group, 2 KB each), which one seed keeps.
    def seed(name, entries, layout="save_weights", split=1, edit=None, libver="latest"):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w", libver=libver) as f:
            root = f
            if layout == "model_save":  # (without model.save's top-level metadata)
                root = f.create_group("model_weights")
            make_keras_h5.write_weights_group(root, entries, split)
            if edit:
                edit(root)

    seed("save_weights.h5", keras_entries(SMALL))
    seed("model_save.h5", keras_entries(SMALL[1:2]), layout="model_save")
    seed("split_layer_names.h5", keras_entries(SMALL), split=2)
    seed("conv_kernel.h5", keras_entries(("Conv", "Conv_Relu6")))

    def variable_length_names(root):
        names = [n.decode() for n in root.attrs["layer_names"]]
        del root.attrs["layer_names"]
        root.attrs.create("layer_names", names, dtype=h5py.string_dtype())
    seed("variable_length_names.h5", keras_entries(SMALL[1:2]), edit=variable_length_names)

    entries = keras_entries(SMALL[1:2])
    entries[0] = (entries[0][0], [(n, v.astype(np.float16)) for n, v in entries[0][1]])
    seed("float16_values.h5", entries)

    entries = keras_entries(SMALL[1:2])
    entries[0] = (entries[0][0], [(n, v[:-1]) for n, v in entries[0][1]])
    seed("misshaped.h5", entries, libver="earliest")


# -- oip_request: byte 0 even = REST (int32 Inference-Header-Content-Length, then the body),
# odd = a ModelInferRequest in protobuf form (oip_request_fuzzer.cc)

def pb_key(field, wire):
    return bytes([field << 3 | wire])


def pb_varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_bytes(field, data):
    return pb_key(field, 2) + pb_varint(len(data)) + data


def pb_tensor(name, datatype, shape, contents=b""):
    packed = b"".join(pb_varint(d) for d in shape)
    body = pb_bytes(1, name) + pb_bytes(2, datatype) + pb_bytes(3, packed)
    return body + (pb_bytes(5, contents) if contents else b"")


def rest_seed(json_text, binary=b"", header=True):
    body = json_text.encode() + binary
    length = len(json_text.encode()) if header else -1
    return b"\x00" + struct.pack("<i", length) + body


def oip_request(out: Path):
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
                        "0000000a49444154789c6360000000020001e221bc330000000049454e44ae426082")
    # BYTES images inline (base64), UINT8 pixels inline, both as binary data, outputs asked.
    write(out / "rest_bytes_base64.bin", rest_seed(
        '{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], '
        '"parameters": {"content_type": "base64"}, "data": ["' +
        __import__("base64").b64encode(png).decode() + '"]}], '
        '"outputs": [{"name": "labels", "parameters": {"binary_data": true}}]}', header=False))
    write(out / "rest_uint8_inline.bin", rest_seed(
        '{"id": "a", "inputs": [{"name": "image", "datatype": "UINT8", "shape": [2, 2, 3], '
        '"data": [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]]}], '
        '"parameters": {"timeout": 1000000}}', header=False))
    pixels = bytes(range(12))
    write(out / "rest_uint8_binary.bin", rest_seed(
        '{"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 2, 2, 3], '
        '"parameters": {"binary_data_size": 12}}], '
        '"parameters": {"binary_data_output": true}}', pixels))
    # The same in protobuf form: contents.bytes_contents, and raw_input_contents.
    bytes_input = pb_tensor(b"image", b"BYTES", [1], pb_bytes(8, png))
    write(out / "grpc_bytes_contents.bin",
          b"\x01" + pb_bytes(1, b"colour") + pb_bytes(5, bytes_input) +
          pb_bytes(6, pb_bytes(1, b"label_png")))
    raw_input = pb_tensor(b"image", b"UINT8", [1, 2, 2, 3])
    write(out / "grpc_uint8_raw.bin",
          b"\x01" + pb_bytes(1, b"colour") + pb_bytes(5, raw_input) + pb_bytes(7, pixels))


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    corpus = Path(argv[1])
    raw_image(corpus / "raw_image")
    model_config(corpus / "model_config")
    with tempfile.TemporaryDirectory() as tmp:
        native_checkpoint(corpus / "native_checkpoint", checkpoint_module(Path(tmp)))
    keras_h5(corpus / "keras_h5")
    oip_request(corpus / "oip_request")


if __name__ == "__main__":
    main(sys.argv)
