#!/usr/bin/env python3
"""The Open Inference Protocol (KServe v2) on the gateway, from a stock client.

Checks the contract of docs/api.md, section "The Open Inference Protocol (KServe v2)", against
a real worker and gateway on loopback ports they pick:
  - gRPC, with stubs generated at test time from protos/inference/grpc_predict_v2.proto:
    ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer (BYTES
    images in contents and in raw_input_contents, UINT8 pixels [N, H, W, 3] and [H, W, 3]),
    every output and the documented error codes;
  - REST/JSON with urllib only: /v2, health, model metadata and readiness, infer with JSON
    data (UINT8 numbers, base64 BYTES) and with the binary data extension both ways, and the
    documented {"error": ...} answers and HTTP statuses.
The worker serves three weight sets: "colour" (each pixel labelled by its dominant channel:
red 0, green 1, blue 2, so synthetic images have known labels), the shipped "demo" (its
sample scenes have true label maps to score against) and "missing" (never ready). Real
photos from --photos go through both transports.

Usage: oip_test.py --worker BIN --gateway BIN --source DIR --photos DIR
"""

import argparse
import base64
import json
import os
import queue
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import zlib

import grpc
import numpy as np
from grpc_tools import protoc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from python_client_test import write_colour_repository  # noqa: E402
from soak_test import image_size, png_chunk  # noqa: E402

COLOUR_CLASSES = ["red", "green", "blue"]
DEMO_CLASSES = ["background", "circle", "square", "triangle", "star"]
OUTPUTS = {"labels": "UINT8", "probabilities": "UINT8", "class_stats": "FP32",
           "label_png": "BYTES", "overlay_png": "BYTES"}
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# ---- processes ----------------------------------------------------------------------------

class Process:
    """A server process; a thread reads its stdout lines (so it never blocks on a full pipe)."""

    def __init__(self, argv, name, log_path):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_lines(self, done, timeout):
        """Reads output lines until done(self.seen) is true; False at exit or timeout."""
        deadline = time.time() + timeout
        while not done(self.seen):
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                return False
            if line is None:
                return False
            self.seen.append(line)
        return True

    def value(self, key):
        """HOST:PORT from the line `NAME: KEY HOST:PORT`, or None."""
        for line in self.seen:
            if line.startswith(f"{self.name}: {key} "):
                return line.split()[-1]
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def rest_of_output(self, timeout=10):
        """The lines printed after the ones already seen, once the process has exited."""
        out = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            if line is None:
                break
            out.append(line)
        return out

    def log_tail(self, n=30):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


# ---- images, PNG and tensors --------------------------------------------------------------

def png_encode(pixels):
    """An 8-bit RGB PNG of an (H, W, 3) uint8 array (filter None on every row)."""
    h, w, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def png_decode(data):
    """An 8-bit, non-interlaced grey (H, W) or RGB/RGBA/grey-alpha (H, W, C) PNG as uint8."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat += payload
        elif kind == b"IEND":
            break
        pos += 12 + length
    w, h, depth, colour_type, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour_type)
    if depth != 8 or channels is None or interlace != 0:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour_type}")
    raw = zlib.decompress(idat)
    stride = w * channels
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int64)
    for y in range(h):
        kind = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum per channel
            cur = np.cumsum(line.reshape(w, channels), axis=0).reshape(stride) & 255
        elif kind == 2:  # Up
            cur = (line + prev) & 255
        elif kind in (3, 4):  # Average, Paeth: pixel by pixel
            cur = [0] * stride
            lv, pv = line.tolist(), prev.tolist()
            for i in range(stride):
                a = cur[i - channels] if i >= channels else 0
                b = pv[i]
                if kind == 3:
                    cur[i] = (lv[i] + (a + b) // 2) & 255
                else:
                    c = pv[i - channels] if i >= channels else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    cur[i] = (lv[i] + pred) & 255
            cur = np.array(cur, np.int64)
        else:
            raise ValueError(f"bad PNG filter {kind}")
        out[y] = cur
        prev = cur
    return out.reshape(h, w) if channels == 1 else out.reshape(h, w, channels)


def image(h, w, colour):
    a = np.zeros((h, w, 3), np.uint8)
    a[:, :] = colour
    return a


def split_image(h, w, top, bottom):
    """Top half one colour, bottom half another."""
    a = image(h, w, top)
    a[h // 2:, :] = bottom
    return a


def bytes_elements(raw):
    """A raw BYTES tensor: each element a 4-byte little-endian length, then the bytes."""
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack("<I", raw[pos:pos + 4])
        out.append(raw[pos + 4:pos + 4 + n])
        pos += 4 + n
    if pos != len(raw):
        raise ValueError("BYTES data ends inside an element")
    return out


def bytes_raw(elements):
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def tensor(datatype, shape, raw):
    """A raw output tensor as a numpy array (BYTES: a list of bytes)."""
    if datatype == "BYTES":
        return bytes_elements(raw)
    dtype = {"UINT8": np.uint8, "FP32": np.dtype("<f4")}[datatype]
    return np.frombuffer(raw, dtype).reshape(shape)


# ---- the test -----------------------------------------------------------------------------

class Test:
    def __init__(self, args, tmp):
        self.args, self.tmp = args, tmp
        self.passed = self.failed = 0

    def check(self, condition, what, detail=""):
        condition = bool(condition)
        if condition:
            self.passed += 1
        else:
            self.failed += 1
        print(("ok   " if condition else "FAIL ") + what + ("" if condition or not detail
                                                            else f"  [{detail}]"), flush=True)
        return condition

    def section(self, name, fn):
        """Runs one group of checks; an exception in it is one failure, the others still run."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            self.check(False, f"{name}: raised {type(e).__name__}: {e}")

    # -- gRPC helpers --

    def infer(self, model, inputs, outputs=None, raw=None, version="", id_="", params=None,
              timeout=60):
        pb = self.pb
        request = pb.ModelInferRequest(model_name=model, model_version=version, id=id_)
        for inp in inputs:
            request.inputs.append(inp)
        for name in outputs or []:
            request.outputs.append(pb.ModelInferRequest.InferRequestedOutputTensor(name=name))
        for r in raw or []:
            request.raw_input_contents.append(r)
        for k, v in (params or {}).items():
            p = request.parameters[k]
            if isinstance(v, bool):
                p.bool_param = v
            elif isinstance(v, int):
                p.int64_param = v
            elif isinstance(v, float):
                p.double_param = v
            else:
                p.string_param = v
        return self.stub.ModelInfer(request, timeout=timeout)

    def input(self, datatype, shape, **contents):
        pb = self.pb
        t = pb.ModelInferRequest.InferInputTensor(name="image", datatype=datatype, shape=shape)
        if contents:
            t.contents.CopyFrom(pb.InferTensorContents(**contents))
        return t

    def outputs_of(self, response):
        """{name: (datatype, shape, value)} from raw_output_contents."""
        out = {}
        for i, t in enumerate(response.outputs):
            out[t.name] = (t.datatype, list(t.shape),
                           tensor(t.datatype, list(t.shape), response.raw_output_contents[i]))
        return out

    def expect_error(self, call, code, what, prefix=None):
        try:
            call()
            self.check(False, what, "no error")
        except grpc.RpcError as e:
            details = e.details() or ""
            ok = e.code() == code and (prefix is None or details.startswith(prefix))
            self.check(ok, what, f"got {e.code().name}: {details!r}")

    # -- REST helpers --

    def http(self, method, path, body=None, headers=None, base=None):
        """(status, headers, body bytes) of one request; error statuses are answers too."""
        url = f"http://{base or self.http_address}{path}"
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def http_json(self, method, path, obj=None):
        body = None if obj is None else json.dumps(obj).encode()
        headers = {} if obj is None else {"Content-Type": "application/json"}
        status, hdrs, data = self.http(method, path, body, headers)
        try:
            return status, hdrs, json.loads(data)
        except ValueError:
            return status, hdrs, {"unparsed body": data[:200].decode("latin-1")}

    def expect_http_error(self, method, path, status, what, obj=None, body=None, headers=None,
                          prefix=None):
        if obj is not None:
            body, headers = json.dumps(obj).encode(), {"Content-Type": "application/json"}
        got, _, data = self.http(method, path, body, headers)
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        ok = (got == status and isinstance(answer, dict) and list(answer) == ["error"]
              and isinstance(answer["error"], str) and answer["error"]
              and (prefix is None or answer["error"].startswith(prefix)))
        self.check(ok, what, f"got {got} {data[:300]!r}")

    def rest_outputs(self, headers, body):
        """{name: (datatype, shape, value, output JSON)} of a REST infer answer, binary or not."""
        length = headers.get("Inference-Header-Content-Length")
        json_part = body if length is None else body[:int(length)]
        binary = b"" if length is None else body[int(length):]
        answer = json.loads(json_part)
        out = {}
        for o in answer["outputs"]:
            params = o.get("parameters") or {}
            if "binary_data_size" in params:
                n = params["binary_data_size"]
                raw, binary = binary[:n], binary[n:]
                value = tensor(o["datatype"], o["shape"], raw)
            elif o["datatype"] == "BYTES":
                value = [base64.b64decode(s) for s in o["data"]]
            else:
                dtype = np.uint8 if o["datatype"] == "UINT8" else np.float32
                value = np.array(o["data"], dtype).reshape(o["shape"])
            out[o["name"]] = (o["datatype"], o["shape"], value, o)
        if binary:
            raise ValueError(f"{len(binary)} bytes of binary data left over")
        return answer, out

    # ---- setup ----

    def start(self):
        args, tmp = self.args, self.tmp
        stubs = os.path.join(tmp, "stubs")
        os.makedirs(stubs)
        if protoc.main(["protoc", f"-I{args.source}/protos", f"--python_out={stubs}",
                        f"--grpc_python_out={stubs}", "inference/grpc_predict_v2.proto"]) != 0:
            raise RuntimeError("protoc failed")
        sys.path.insert(0, stubs)
        from inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc  # noqa: E402
        self.pb, self.pb_grpc = grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc

        repo = os.path.join(tmp, "models")
        write_colour_repository(args.source, repo)
        shutil.copytree(os.path.join(args.source, "models/demo"), os.path.join(repo, "demo"),
                        ignore=shutil.ignore_patterns("samples"))
        os.makedirs(os.path.join(repo, "missing"))
        with open(os.path.join(repo, "missing", "config.pbtxt"), "w") as f:
            f.write('name: "missing"\narchitecture { num_classes: 2 }\n'
                    'input { height: 64 width: 64 normalization: NORMALIZATION_NONE }\n'
                    'class_names: ["a", "b"]\n'
                    'weights { file: "gone.pt" format: WEIGHTS_FORMAT_TORCHSCRIPT }\n')

        common = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]
        self.processes = []
        self.worker = Process([args.worker, "--models", repo, "--threads", "1",
                               "--pipeline-threads", "2"] + common,
                              "deeplab-worker", os.path.join(tmp, "worker.log"))
        self.processes.append(self.worker)
        if not self.worker.wait_lines(lambda s: any(x == "deeplab-worker: ready" for x in s), 120):
            raise RuntimeError("the worker did not start:\n" + self.worker.log_tail())
        self.worker_address = self.worker.value("grpc")

        self.gateway = Process([args.gateway, "--workers", self.worker_address,
                                "--status-interval", "200ms", "--http-port", "0"] + common,
                               "deeplab-gateway", os.path.join(tmp, "gateway.log"))
        self.processes.append(self.gateway)
        started = self.gateway.wait_lines(
            lambda s: any(x.startswith("deeplab-gateway: grpc ") for x in s)
            and any(x.startswith("deeplab-gateway: http ") for x in s), 60)
        if not self.check(started, "the gateway prints `deeplab-gateway: http HOST:PORT`",
                          f"printed {self.gateway.seen}"):
            raise RuntimeError("the gateway did not start:\n" + self.gateway.log_tail())
        self.grpc_address = self.gateway.value("grpc")
        self.http_address = self.gateway.value("http")
        self.check(self.http_address.startswith("127.0.0.1:") and
                   int(self.http_address.rsplit(":", 1)[1]) > 0,
                   f"the REST port is on --host with a picked port ({self.http_address})")
        self.channel = grpc.insecure_channel(self.grpc_address, options=[
            ("grpc.max_receive_message_length", 256 << 20),
            ("grpc.max_send_message_length", 256 << 20)])
        self.stub = self.pb_grpc.GRPCInferenceServiceStub(self.channel)

    def wait_ready(self):
        pb = self.pb
        live = self.stub.ServerLive(pb.ServerLiveRequest(), timeout=10)
        self.check(live.live, "gRPC ServerLive: live")
        deadline = time.time() + 60
        ready = False
        while time.time() < deadline:
            try:
                ready = (self.stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
                         and all(self.stub.ModelReady(pb.ModelReadyRequest(name=m),
                                                      timeout=5).ready
                                 for m in ("colour", "demo")))
            except grpc.RpcError:
                ready = False
            if ready:
                break
            time.sleep(0.1)
        if not self.check(ready, "gRPC ServerReady and ModelReady turn true once the worker "
                                 "is polled"):
            raise RuntimeError("the models never became ready")

    # ---- gRPC ----

    def grpc_health_and_metadata(self):
        pb, stub = self.pb, self.stub
        self.check(stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready,
                   "gRPC ServerReady: ready")
        for version in ("", "1"):
            r = stub.ModelReady(pb.ModelReadyRequest(name="colour", version=version), timeout=10)
            self.check(r.ready, f"gRPC ModelReady colour version {version!r}: ready")
        r = stub.ModelReady(pb.ModelReadyRequest(name="missing"), timeout=10)
        self.check(not r.ready, "gRPC ModelReady of a weight set no worker could load: false")
        self.expect_error(lambda: stub.ModelReady(pb.ModelReadyRequest(name="no_such_model"),
                                                  timeout=10),
                          grpc.StatusCode.NOT_FOUND, "gRPC ModelReady of an unknown model: NOT_FOUND")
        self.expect_error(lambda: stub.ModelReady(pb.ModelReadyRequest(name="colour", version="2"),
                                                  timeout=10),
                          grpc.StatusCode.NOT_FOUND, "gRPC ModelReady of version 2: NOT_FOUND")

        m = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
        self.check(m.name == "deeplab-serve" and m.version, f"gRPC ServerMetadata name and version "
                   f"({m.name} {m.version})")
        self.check("binary_tensor_data" in m.extensions,
                   f"gRPC ServerMetadata lists binary_tensor_data ({list(m.extensions)})")

        for model, classes in (("colour", COLOUR_CLASSES), ("demo", DEMO_CLASSES)):
            for version in ("", "1"):
                md = stub.ModelMetadata(pb.ModelMetadataRequest(name=model, version=version),
                                        timeout=10)
                self.check(md.name == model and list(md.versions) == ["1"]
                           and md.platform == "deeplab-serve_libtorch",
                           f"gRPC ModelMetadata {model} v{version!r}: name, versions [1], platform",
                           f"{md.name} {list(md.versions)} {md.platform}")
            self.check(len(md.inputs) == 1 and md.inputs[0].name == "image"
                       and md.inputs[0].datatype == "BYTES" and len(md.inputs[0].shape) == 1,
                       f"gRPC ModelMetadata {model}: one input, image BYTES [N]", str(md.inputs))
            got = {o.name: (o.datatype, len(o.shape)) for o in md.outputs}
            want = {"labels": ("UINT8", 3), "probabilities": ("UINT8", 4),
                    "class_stats": ("FP32", 2), "label_png": ("BYTES", 1),
                    "overlay_png": ("BYTES", 1)}
            self.check(got == want, f"gRPC ModelMetadata {model}: the five outputs, datatypes "
                       "and ranks", str(got))
            p = md.parameters
            self.check(set(p) >= {"description", "backbone", "num_classes", "class_names",
                                  "input_height", "input_width", "tile_stride",
                                  "max_batch_size"},
                       f"gRPC ModelMetadata {model}: the documented parameters", str(sorted(p)))
            self.check(p["class_names"].string_param == ",".join(classes)
                       and p["num_classes"].int64_param == len(classes),
                       f"gRPC ModelMetadata {model}: class_names {','.join(classes)} and "
                       f"num_classes {len(classes)}", str(p.get("class_names")))
            if model == "demo":
                self.check(p["input_height"].int64_param == 128
                           and p["input_width"].int64_param == 128
                           and p["max_batch_size"].int64_param == 32,
                           "gRPC ModelMetadata demo: input 128x128, max_batch_size 32 (its config)")
        self.expect_error(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"),
                                                     timeout=10),
                          grpc.StatusCode.NOT_FOUND, "gRPC ModelMetadata of an unknown model: "
                          "NOT_FOUND, naming the models there are",
                          prefix="unknown model 'nope'; available: colour, demo, missing")
        self.expect_error(lambda: stub.ModelMetadata(
            pb.ModelMetadataRequest(name="colour", version="7"), timeout=10),
            grpc.StatusCode.NOT_FOUND, "gRPC ModelMetadata of version 7: NOT_FOUND")

    def grpc_infer_colour(self):
        h, w = 30, 40
        red, blue = png_encode(image(h, w, RED)), png_encode(image(h, w, BLUE))
        all_outputs = list(OUTPUTS)

        # BYTES [2] in contents.bytes_contents, every output.
        r = self.infer("colour", [self.input("BYTES", [2], bytes_contents=[red, blue])],
                       outputs=all_outputs, id_="oip-1")
        self.check(r.model_name == "colour" and r.model_version == "1" and r.id == "oip-1",
                   "gRPC ModelInfer answers model name, version 1 and the request id",
                   f"{r.model_name} {r.model_version} {r.id}")
        self.check([o.name for o in r.outputs] == all_outputs
                   and len(r.raw_output_contents) == len(all_outputs)
                   and all(not o.HasField("contents") for o in r.outputs),
                   "gRPC ModelInfer: the outputs asked for, in order, all in raw_output_contents")
        out = self.outputs_of(r)
        self.check(all(out[n][0] == OUTPUTS[n] for n in all_outputs),
                   "gRPC ModelInfer: output datatypes as documented",
                   str({n: out[n][0] for n in out}))
        dt, shape, labels = out["labels"]
        self.check(shape == [2, h, w], f"labels shape [N, H, W] = [2, {h}, {w}]", str(shape))
        self.check((labels[0] == 0).all() and (labels[1] == 2).all(),
                   "labels: the red image is all class 0 (red), the blue one all class 2 (blue)",
                   str([np.unique(x).tolist() for x in labels]))
        _, shape, probs = out["probabilities"]
        self.check(shape == [2, 3, h, w], "probabilities shape [N, C, H, W]", str(shape))
        sums = probs.astype(int).sum(axis=1)
        self.check((np.abs(sums - 255) <= 3).all(),
                   "probabilities: q / 255 sum to 1 at every pixel (within rounding)",
                   f"{sums.min()}..{sums.max()}")
        self.check((probs.argmax(axis=1) == labels).all(),
                   "probabilities: the most probable class is the label at every pixel")
        _, shape, stats = out["class_stats"]
        self.check(shape == [2, 3] and np.allclose(stats, [[1, 0, 0], [0, 0, 1]], atol=1e-6),
                   "class_stats [N, C]: red image [1, 0, 0], blue image [0, 0, 1]",
                   f"{shape} {stats.tolist()}")
        _, shape, pngs = out["label_png"]
        self.check(shape == [2] and len(pngs) == 2 and all(p.startswith(b"\x89PNG") for p in pngs),
                   "label_png: BYTES [N] of PNGs")
        self.check(all((png_decode(pngs[i]) == labels[i]).all() for i in range(2)),
                   "label_png: the grey PNG's pixels are the labels")
        _, shape, overlays = out["overlay_png"]
        self.check(shape == [2] and all(p.startswith(b"\x89PNG") and image_size(p) == (h, w)
                                        for p in overlays),
                   "overlay_png: BYTES [N] of PNGs at the original size")

        # BYTES in raw_input_contents (4-byte little-endian lengths); no outputs listed.
        split = png_encode(split_image(h, w, RED, GREEN))
        r = self.infer("colour", [self.input("BYTES", [2])], raw=[bytes_raw([split, blue])])
        out = self.outputs_of(r)
        self.check(list(out) == ["labels", "class_stats"],
                   "no outputs listed: labels and class_stats", str(list(out)))
        labels = out["labels"][2]
        self.check(out["labels"][1] == [2, h, w], "raw_input_contents BYTES: labels [2, H, W]")
        self.check((labels[0, :h // 2 - 2] == 0).all() and (labels[0, h // 2 + 2:] == 1).all()
                   and (labels[1] == 2).all(),
                   "raw_input_contents BYTES: red top labelled 0, green bottom 1, blue image 2")
        stats = out["class_stats"][2]
        self.check(abs(stats[0][0] - 0.5) < 0.1 and abs(stats[0][1] - 0.5) < 0.1
                   and abs(stats.sum(axis=1) - 1).max() < 1e-5,
                   "class_stats of the half-red half-green image: about [0.5, 0.5, 0], sum 1",
                   str(stats.tolist()))

        # UINT8 [H, W, 3] raw: N left out of every shape.
        pixels = split_image(h, w, GREEN, BLUE)
        r = self.infer("colour", [self.input("UINT8", [h, w, 3])], raw=[pixels.tobytes()],
                       outputs=["labels", "probabilities", "class_stats", "label_png"])
        out = self.outputs_of(r)
        self.check(out["labels"][1] == [h, w] and out["probabilities"][1] == [3, h, w]
                   and out["class_stats"][1] == [3] and out["label_png"][1] == [1],
                   "UINT8 [H, W, 3]: shapes without N ([H, W], [C, H, W], [C], [])",
                   str({n: v[1] for n, v in out.items()}))
        labels = out["labels"][2]
        self.check((labels[:h // 2 - 2] == 1).all() and (labels[h // 2 + 2:] == 2).all(),
                   "UINT8 [H, W, 3]: green top labelled 1, blue bottom 2")

        # UINT8 [N, H, W, 3] in contents.uint_contents.
        batch = np.stack([image(6, 8, GREEN), image(6, 8, RED), image(6, 8, (10, 20, 200))])
        r = self.infer("colour", [self.input("UINT8", [3, 6, 8, 3],
                                             uint_contents=batch.reshape(-1).tolist())],
                       outputs=["labels"])
        _, shape, labels = self.outputs_of(r)["labels"]
        self.check(shape == [3, 6, 8] and (labels[0] == 1).all() and (labels[1] == 0).all()
                   and (labels[2] == 2).all(),
                   "UINT8 [N, H, W, 3] in contents.uint_contents: labels 1, 0, 2", str(shape))

        # Request parameters: priority and overlay_alpha.
        outs = []
        for alpha in (0.2, 1.0):
            r = self.infer("colour", [self.input("BYTES", [1], bytes_contents=[red])],
                           outputs=["overlay_png"], params={"priority": 1, "overlay_alpha": alpha})
            outs.append(self.outputs_of(r)["overlay_png"][2][0])
        a, b = png_decode(outs[0]), png_decode(outs[1])
        self.check(a.shape[:2] == (h, w) and not np.array_equal(a, b),
                   "parameters priority and overlay_alpha are taken (alpha changes the overlay)")

    def grpc_errors(self):
        good = png_encode(image(16, 16, RED))
        other = png_encode(image(20, 16, RED))
        S = grpc.StatusCode
        bytes_in = lambda n, data: self.input("BYTES", [n], bytes_contents=data)  # noqa: E731
        self.expect_error(lambda: self.infer("no_such_model", [bytes_in(1, [good])]),
                          S.NOT_FOUND, "gRPC ModelInfer of an unknown model: NOT_FOUND")
        self.expect_error(lambda: self.infer("colour", [bytes_in(1, [good])], version="2"),
                          S.NOT_FOUND, "gRPC ModelInfer of version 2: NOT_FOUND")
        self.check(self.outputs_of(self.infer("colour", [bytes_in(1, [good])], version="1"))
                   ["labels"][1] == [1, 16, 16], "gRPC ModelInfer of version 1: answered")
        self.expect_error(lambda: self.infer("colour", [bytes_in(1, [b"not an image at all"])]),
                          S.INVALID_ARGUMENT, "garbage image: INVALID_ARGUMENT, 'image 0: ...'",
                          prefix="image 0: ")
        self.expect_error(lambda: self.infer("colour", [bytes_in(2, [good, b"\x89PNG garbage"])]),
                          S.INVALID_ARGUMENT, "garbage second image of a batch: INVALID_ARGUMENT, "
                          "'image 1: ...'", prefix="image 1: ")
        self.expect_error(lambda: self.infer("colour", [bytes_in(1, [good[:len(good) // 2]])]),
                          S.INVALID_ARGUMENT, "truncated image: INVALID_ARGUMENT, 'image 0: ...'",
                          prefix="image 0: ")
        self.expect_error(lambda: self.infer("colour", [self.input("FP32", [1, 2, 2, 3],
                                                                   fp32_contents=[0.0] * 12)]),
                          S.INVALID_ARGUMENT, "datatype FP32: INVALID_ARGUMENT")
        self.expect_error(lambda: self.infer("colour", [self.input("INT32", [2, 2, 3],
                                                                   int_contents=[0] * 12)]),
                          S.INVALID_ARGUMENT, "datatype INT32: INVALID_ARGUMENT")
        self.expect_error(lambda: self.infer("colour", [bytes_in(2, [good])]),
                          S.INVALID_ARGUMENT, "BYTES shape [2] with one element: INVALID_ARGUMENT")
        self.expect_error(lambda: self.infer("colour", [self.input("BYTES", [1, 1],
                                                                   bytes_contents=[good])]),
                          S.INVALID_ARGUMENT, "BYTES shape [1, 1]: INVALID_ARGUMENT")
        self.expect_error(lambda: self.infer("colour", [self.input("BYTES", [2])],
                                             raw=[struct.pack("<I", 100) + good[:10]]),
                          S.INVALID_ARGUMENT, "raw BYTES whose length prefix overruns: "
                          "INVALID_ARGUMENT")
        self.expect_error(lambda: self.infer("colour", [self.input("UINT8", [4, 4, 3])],
                                             raw=[b"\0" * 47]),
                          S.INVALID_ARGUMENT, "UINT8 [4, 4, 3] with 47 bytes: INVALID_ARGUMENT")
        self.expect_error(lambda: self.infer("colour", [self.input("UINT8", [4, 12])],
                                             raw=[b"\0" * 48]),
                          S.INVALID_ARGUMENT, "UINT8 shape [4, 12]: INVALID_ARGUMENT")
        self.expect_error(lambda: self.infer("colour", [self.input("UINT8", [4, 4, 2])],
                                             raw=[b"\0" * 32]),
                          S.INVALID_ARGUMENT, "UINT8 with 2 channels: INVALID_ARGUMENT")
        self.expect_error(lambda: self.infer("colour", [bytes_in(1, [good]), bytes_in(1, [good])]),
                          S.INVALID_ARGUMENT, "two input tensors: INVALID_ARGUMENT")
        self.expect_error(lambda: self.infer("colour", [], outputs=["labels"]),
                          S.INVALID_ARGUMENT, "no input tensor: INVALID_ARGUMENT")
        self.expect_error(lambda: self.infer("colour", [bytes_in(1, [good])],
                                             outputs=["labels", "segmentation"]),
                          S.INVALID_ARGUMENT, "unknown output name: INVALID_ARGUMENT")
        self.expect_error(lambda: self.infer("colour", [bytes_in(2, [good, other])],
                                             outputs=["labels"]),
                          S.INVALID_ARGUMENT, "labels of images of different sizes: "
                          "INVALID_ARGUMENT")
        self.expect_error(lambda: self.infer("colour", [bytes_in(2, [good, other])],
                                             outputs=["probabilities"]),
                          S.INVALID_ARGUMENT, "probabilities of images of different sizes: "
                          "INVALID_ARGUMENT")
        r = self.infer("colour", [bytes_in(2, [good, other])], outputs=["label_png", "class_stats"])
        pngs = self.outputs_of(r)["label_png"][2]
        self.check([image_size(p) for p in pngs] == [(16, 16), (20, 16)],
                   "label_png of images of different sizes: each at its own size")
        self.expect_error(lambda: self.infer("missing", [bytes_in(1, [good])]),
                          S.UNAVAILABLE, "ModelInfer of a weight set no worker has ready: "
                          "UNAVAILABLE")

    def grpc_demo_and_photos(self):
        samples_dir = os.path.join(self.args.source, "models/demo/samples")
        names = sorted(n for n in os.listdir(os.path.join(samples_dir, "images"))
                       if n.endswith(".png"))
        encoded = [open(os.path.join(samples_dir, "images", n), "rb").read() for n in names]
        truth = np.stack([png_decode(open(os.path.join(samples_dir, "labels", n), "rb").read())
                          for n in names])
        pixels = np.stack([png_decode(e)[:, :, :3] for e in encoded])
        n = len(names)
        r = self.infer("demo", [self.input("BYTES", [n], bytes_contents=encoded)],
                       outputs=["labels", "class_stats"])
        out = self.outputs_of(r)
        labels = out["labels"][2]
        self.check(out["labels"][1] == [n, 128, 128], f"demo samples as BYTES [{n}]: labels "
                   f"[{n}, 128, 128]", str(out["labels"][1]))
        accuracy = (labels == truth).mean(axis=(1, 2))
        self.check(accuracy.min() >= 0.85, "demo samples: labels match the true label maps "
                   f"(pixel accuracy {', '.join(f'{a:.3f}' for a in accuracy)})")
        stats = out["class_stats"][2]
        hist = np.stack([np.bincount(x.reshape(-1), minlength=5) / x.size for x in labels])
        self.check(np.allclose(stats, hist, atol=1e-4), "demo samples: class_stats are the "
                   "labels' class shares")
        self.demo_labels = labels
        self.demo_pixels = pixels
        self.demo_encoded = encoded

        r = self.infer("demo", [self.input("UINT8", list(pixels.shape))], raw=[pixels.tobytes()],
                       outputs=["labels"])
        same = self.outputs_of(r)["labels"][2]
        self.check(same.shape == labels.shape and (same == labels).mean() > 0.999,
                   "demo samples as UINT8 [N, 128, 128, 3] pixels: the same labels as the PNGs",
                   f"agree on {(same == labels).mean() if same.shape == labels.shape else 0:.5f}")

        # Real photos: JPEGs, and an RGBA PNG.
        for name, model in (("image1.jpg", "colour"), ("baptist400.jpg", "demo"),
                            ("rgba.png", "colour")):
            data = open(os.path.join(self.args.photos, name), "rb").read()
            h, w = image_size(data)
            r = self.infer(model, [self.input("BYTES", [1])], raw=[bytes_raw([data])],
                           outputs=["labels", "class_stats", "label_png", "overlay_png"])
            out = self.outputs_of(r)
            shape, labels = out["labels"][1], out["labels"][2]
            self.check(shape == [1, h, w], f"photo {name} ({model}): labels at the original size "
                       f"[1, {h}, {w}]", str(shape))
            classes = 3 if model == "colour" else 5
            hist = np.bincount(labels.reshape(-1), minlength=classes) / labels.size
            self.check(labels.max() < classes and len(hist) == classes
                       and np.allclose(out["class_stats"][2][0], hist, atol=1e-4)
                       and abs(out["class_stats"][2][0].sum() - 1) < 1e-4,
                       f"photo {name}: class_stats are the labels' class shares and sum to 1",
                       str(out["class_stats"][2].tolist()))
            if name != "rgba.png":  # 1024x768: too slow for the pure-Python PNG decoder
                self.check((png_decode(out["label_png"][2][0]) == labels[0]).all(),
                           f"photo {name}: label_png holds the labels")
            self.check(image_size(out["overlay_png"][2][0]) == (h, w),
                       f"photo {name}: overlay_png at the original size")
            if name == "image1.jpg":
                self.photo_labels = labels

    # ---- REST ----

    def rest_health_and_metadata(self):
        status, _, body = self.http_json("GET", "/v2")
        self.check(status == 200 and body.get("name") == "deeplab-serve" and body.get("version")
                   and "binary_tensor_data" in body.get("extensions", []),
                   "GET /v2: name deeplab-serve, version, extensions [binary_tensor_data]",
                   f"{status} {body}")
        status, _, body = self.http_json("GET", "/v2/health/live")
        self.check(status == 200 and body == {"live": True}, "GET /v2/health/live: 200 "
                   '{"live": true}', f"{status} {body}")
        status, _, body = self.http_json("GET", "/v2/health/ready")
        self.check(status == 200 and body == {"ready": True}, "GET /v2/health/ready: 200 "
                   '{"ready": true}', f"{status} {body}")
        for path in ("/v2/models/colour/ready", "/v2/models/colour/versions/1/ready"):
            status, _, body = self.http_json("GET", path)
            self.check(status == 200 and body == {"name": "colour", "ready": True},
                       f"GET {path}: 200 {{\"name\": \"colour\", \"ready\": true}}",
                       f"{status} {body}")
        status, _, body = self.http_json("GET", "/v2/models/missing/ready")
        self.check(status == 400 and body.get("ready") is False and body.get("name") == "missing",
                   'GET /v2/models/missing/ready (not loaded): 400 with "ready": false',
                   f"{status} {body}")
        for path in ("/v2/models/colour", "/v2/models/colour/versions/1"):
            status, _, md = self.http_json("GET", path)
            self.check(status == 200 and md.get("name") == "colour" and md.get("versions") == ["1"]
                       and md.get("platform") == "deeplab-serve_libtorch",
                       f"GET {path}: 200, name, versions [\"1\"], platform", f"{status} {md}")
        inputs, outputs = md.get("inputs", []), md.get("outputs", [])
        self.check(len(inputs) == 1 and inputs[0].get("name") == "image"
                   and inputs[0].get("datatype") == "BYTES",
                   "REST model metadata: input image BYTES", str(inputs))
        self.check({o.get("name"): o.get("datatype") for o in outputs} == OUTPUTS,
                   "REST model metadata: the five outputs and their datatypes", str(outputs))
        # The protocol's REST form: shapes are lists of numbers, parameters plain JSON values.
        shapes = [t.get("shape") for t in inputs + outputs]
        self.check(all(isinstance(s, list) and s and all(isinstance(d, int) for d in s)
                       for s in shapes),
                   "REST model metadata: tensor shapes are JSON numbers (e.g. [-1])", str(shapes))
        params = md.get("parameters", {})
        self.check(params.get("class_names") == "red,green,blue" and params.get("num_classes") == 3,
                   'REST model metadata: parameters as plain JSON values ("class_names": '
                   '"red,green,blue", "num_classes": 3)',
                   str({k: params.get(k) for k in ("class_names", "num_classes")}))

        # Errors: {"error": "..."} with the documented statuses.
        for path in ("/v2/models/no_such_model", "/v2/models/no_such_model/ready",
                     "/v2/models/colour/versions/2", "/v2/models/colour/versions/2/ready"):
            self.expect_http_error("GET", path, 404, f"GET {path}: 404 {{\"error\": ...}}")
        for path in ("/v3", "/", "/v2/models/colour/explain", "/v2/health/sleepy",
                     "/v2/models/colour/versions/1/ready/more"):
            self.expect_http_error("GET", path, 404, f"GET {path} (unknown path): 404")
        self.expect_http_error("POST", "/v2/health/live", 405, "POST /v2/health/live: 405",
                               obj={})
        self.expect_http_error("DELETE", "/v2/models/colour", 405, "DELETE /v2/models/colour: 405")
        self.expect_http_error("GET", "/v2/models/colour/infer", 405,
                               "GET /v2/models/colour/infer: 405")
        self.expect_http_error("PUT", "/v2", 405, "PUT /v2: 405", obj={})
        # The "timeout" parameter (microseconds): 1 us passes before any batch forms.
        self.expect_http_error(
            "POST", "/v2/models/colour/infer", 504, "timeout parameter of 1 us: 504",
            obj={"parameters": {"timeout": 1}, "inputs": [
                {"name": "x", "datatype": "UINT8", "shape": [2, 2, 3], "data": [0] * 12}]},
            prefix="image 0: ")

    def rest_infer(self):
        path = "/v2/models/colour/infer"
        # UINT8 nested arrays, [N, H, W, 3].
        batch = np.stack([image(4, 6, GREEN), image(4, 6, RED)])
        req = {"id": "rest-1", "inputs": [{"name": "pixels", "datatype": "UINT8",
                                          "shape": list(batch.shape), "data": batch.tolist()}],
               "outputs": [{"name": "labels"}, {"name": "class_stats"}]}
        status, headers, body = self.http("POST", path, json.dumps(req).encode(),
                                          {"Content-Type": "application/json"})
        if self.check(status == 200, "REST infer, UINT8 nested JSON data [2, 4, 6, 3]: 200",
                      f"{status} {body[:300]!r}"):
            answer, out = self.rest_outputs(headers, body)
            self.check(answer.get("model_name") == "colour" and answer.get("model_version") == "1"
                       and answer.get("id") == "rest-1",
                       "REST infer answers model_name, model_version \"1\" and the id",
                       str({k: answer.get(k) for k in ("model_name", "model_version", "id")}))
            self.check("Inference-Header-Content-Length" not in headers
                       and headers.get("Content-Type", "").startswith("application/json"),
                       "REST infer without binary outputs: plain JSON")
            self.check([o["name"] for o in answer["outputs"]] == ["labels", "class_stats"]
                       and all("data" in o for o in answer["outputs"]),
                       "REST infer: outputs in order, with JSON data")
            dt, shape, labels, _ = out["labels"]
            self.check(dt == "UINT8" and shape == [2, 4, 6] and (labels[0] == 1).all()
                       and (labels[1] == 0).all(),
                       "REST labels UINT8 [2, 4, 6]: green image 1, red image 0",
                       f"{dt} {shape} {labels.tolist()}")
            dt, shape, stats, _ = out["class_stats"]
            self.check(dt == "FP32" and shape == [2, 3]
                       and np.allclose(stats, [[0, 1, 0], [1, 0, 0]], atol=1e-6),
                       "REST class_stats FP32 [2, 3] as JSON numbers", f"{shape} {stats.tolist()}")

        # UINT8 flat data, [H, W, 3]: N left out; default outputs.
        one = split_image(8, 5, BLUE, BLUE)
        req = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [8, 5, 3],
                           "data": one.reshape(-1).tolist()}]}
        status, headers, body = self.http("POST", path, json.dumps(req).encode(),
                                          {"Content-Type": "application/json"})
        if self.check(status == 200, "REST infer, UINT8 flat JSON data [8, 5, 3]: 200",
                      f"{status} {body[:300]!r}"):
            answer, out = self.rest_outputs(headers, body)
            self.check(list(out) == ["labels", "class_stats"] and out["labels"][1] == [8, 5]
                       and out["class_stats"][1] == [3] and (out["labels"][2] == 2).all(),
                       "REST [H, W, 3]: default outputs labels [H, W] (all blue, 2) and "
                       "class_stats [C]", str({k: v[1] for k, v in out.items()}))

        # BYTES as base64 JSON strings; a BYTES output comes back base64, marked so.
        red, blue = png_encode(image(10, 12, RED)), png_encode(image(10, 12, BLUE))
        req = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                           "parameters": {"content_type": "base64"},
                           "data": [base64.b64encode(red).decode(),
                                    base64.b64encode(blue).decode()]}],
               "parameters": {"priority": 1, "overlay_alpha": 0.5},
               "outputs": [{"name": "label_png"}, {"name": "labels"}]}
        status, headers, body = self.http("POST", "/v2/models/colour/versions/1/infer",
                                          json.dumps(req).encode(),
                                          {"Content-Type": "application/json"})
        if self.check(status == 200, "REST infer /versions/1, BYTES base64 [2]: 200",
                      f"{status} {body[:300]!r}"):
            answer, out = self.rest_outputs(headers, body)
            dt, shape, pngs, o = out["label_png"]
            self.check(dt == "BYTES" and shape == [2]
                       and (o.get("parameters") or {}).get("content_type") == "base64"
                       and all(p.startswith(b"\x89PNG") for p in pngs),
                       'REST label_png: BYTES [2], base64 strings marked "content_type": '
                       '"base64"', str({k: o.get(k) for k in ("datatype", "shape", "parameters")}))
            self.check((png_decode(pngs[0]) == 0).all() and (png_decode(pngs[1]) == 2).all()
                       and (out["labels"][2][0] == 0).all() and (out["labels"][2][1] == 2).all(),
                       "REST BYTES base64: red image labelled 0, blue 2")

        # The binary data extension both ways: a PNG and a JPEG in, labels binary out
        # (binary_data on one output), class_stats as JSON.
        photo = open(os.path.join(self.args.photos, "image1.jpg"), "rb").read()
        sample = self.demo_encoded[0]
        blob = bytes_raw([photo])
        req = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                           "parameters": {"binary_data_size": len(blob)}}],
               "outputs": [{"name": "labels", "parameters": {"binary_data": True}},
                           {"name": "class_stats"}]}
        head = json.dumps(req).encode()
        status, headers, body = self.http("POST", path, head + blob, {
            "Inference-Header-Content-Length": str(len(head)),
            "Content-Type": "application/octet-stream"})
        if self.check(status == 200, "REST infer with a binary input (a JPEG photo): 200",
                      f"{status} {body[:300]!r}"):
            self.check(headers.get("Content-Type", "").startswith("application/octet-stream")
                       and headers.get("Inference-Header-Content-Length") is not None,
                       "REST binary output: Content-Type application/octet-stream and "
                       "Inference-Header-Content-Length",
                       f"{headers.get('Content-Type')} {headers.get('Inference-Header-Content-Length')}")
            answer, out = self.rest_outputs(headers, body)
            dt, shape, labels, o = out["labels"]
            self.check("data" not in o and o["parameters"].get("binary_data_size") == labels.size
                       and shape == list(self.photo_labels.shape),
                       "REST labels as binary data: binary_data_size, no data",
                       str({k: o.get(k) for k in ("shape", "parameters")}))
            self.check((labels == self.photo_labels).all(),
                       "REST binary labels of the photo equal gRPC's")
            self.check("data" in out["class_stats"][3]
                       and abs(out["class_stats"][2].sum() - 1) < 1e-4,
                       "REST class_stats (not binary) as JSON data beside a binary output")

        # binary_data_output: every output binary, BYTES with 4-byte lengths; UINT8 pixels in.
        pixels = self.demo_pixels
        req = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": list(pixels.shape),
                           "parameters": {"binary_data_size": pixels.size}}],
               "parameters": {"binary_data_output": True},
               "outputs": [{"name": "labels"}, {"name": "label_png"}, {"name": "class_stats"}]}
        head = json.dumps(req).encode()
        status, headers, body = self.http("POST", "/v2/models/demo/versions/1/infer",
                                          head + pixels.tobytes(),
                                          {"Inference-Header-Content-Length": str(len(head))})
        if self.check(status == 200, "REST infer, demo samples as binary UINT8 pixels, "
                      "binary_data_output: 200", f"{status} {body[:300]!r}"):
            answer, out = self.rest_outputs(headers, body)
            self.check(all("data" not in v[3] and "binary_data_size" in v[3].get("parameters", {})
                           for v in out.values()),
                       "binary_data_output: every output is binary data")
            labels = out["labels"][2]
            self.check(labels.shape == self.demo_labels.shape
                       and (labels == self.demo_labels).mean() > 0.999,
                       "REST binary demo labels equal gRPC's")
            pngs = out["label_png"][2]
            self.check(len(pngs) == len(pixels)
                       and all((png_decode(p) == labels[i]).all() for i, p in enumerate(pngs)),
                       "binary label_png: 4-byte length-prefixed PNGs holding the labels")
            self.check(out["class_stats"][1] == [len(pixels), 5]
                       and np.allclose(out["class_stats"][2].sum(axis=1), 1, atol=1e-4),
                       "binary class_stats FP32 [N, 5], rows sum to 1")

        # The curl example of docs/api.md, as its bytes: a sample PNG with a 4-byte length.
        blob = struct.pack("<I", len(sample)) + sample
        head = ('{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"parameters":'
                '{"binary_data_size":' + str(len(blob)) + '}}],"outputs":[{"name":"class_stats"}]}'
                ).encode()
        status, headers, body = self.http("POST", "/v2/models/demo/infer", head + blob,
                                          {"Inference-Header-Content-Length": str(len(head))})
        ok = status == 200
        if ok:
            answer, out = self.rest_outputs(headers, body)
            stats = out["class_stats"][2]
            ok = out["class_stats"][1] == [1, 5] and abs(stats.sum() - 1) < 1e-4
        self.check(ok, "the docs' binary example (sample PNG to demo, class_stats as JSON)",
                   f"{status} {body[:300]!r}")

    def rest_errors(self):
        path = "/v2/models/colour/infer"
        good = png_encode(image(8, 8, RED))
        b64 = lambda d: base64.b64encode(d).decode()  # noqa: E731

        def bytes_req(elements, **extra):
            r = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(elements)],
                             "parameters": {"content_type": "base64"},
                             "data": [b64(e) for e in elements]}]}
            r.update(extra)
            return r
        self.expect_http_error("POST", "/v2/models/no_such_model/infer", 404,
                               "REST infer of an unknown model: 404", obj=bytes_req([good]))
        self.expect_http_error("POST", "/v2/models/colour/versions/2/infer", 404,
                               "REST infer of version 2: 404", obj=bytes_req([good]))
        self.expect_http_error("POST", path, 400, "REST infer of a garbage image: 400 "
                               "'image 0: ...'", obj=bytes_req([b"garbage!"]), prefix="image 0: ")
        self.expect_http_error("POST", path, 400, "REST infer, garbage second image: 400 "
                               "'image 1: ...'", obj=bytes_req([good, b"garbage!"]),
                               prefix="image 1: ")
        self.expect_http_error("POST", path, 400, "REST infer, unknown output: 400",
                               obj=bytes_req([good], outputs=[{"name": "logits"}]))
        self.expect_http_error("POST", path, 400, "REST infer, UINT8 value 300: 400",
                               obj={"inputs": [{"name": "i", "datatype": "UINT8",
                                                "shape": [1, 1, 3], "data": [300, 0, 0]}]})
        self.expect_http_error("POST", path, 400, "REST infer, UINT8 data that does not fill "
                               "its shape: 400",
                               obj={"inputs": [{"name": "i", "datatype": "UINT8",
                                                "shape": [2, 2, 3], "data": [1, 2, 3]}]})
        self.expect_http_error("POST", path, 400, "REST infer, datatype FP32: 400",
                               obj={"inputs": [{"name": "i", "datatype": "FP32",
                                                "shape": [1, 1, 3], "data": [0.5, 0, 0]}]})
        self.expect_http_error("POST", path, 400, "REST infer, not JSON: 400",
                               body=b"{this is not json", headers={"Content-Type":
                                                                    "application/json"})
        self.expect_http_error("POST", path, 400, "REST infer, no inputs: 400", obj={"outputs": []})
        self.expect_http_error("POST", path, 400, "REST infer, base64 that is not: 400",
                               obj={"inputs": [{"name": "i", "datatype": "BYTES", "shape": [1],
                                                "parameters": {"content_type": "base64"},
                                                "data": ["***not base64***"]}]})
        head = json.dumps({"inputs": [{"name": "i", "datatype": "BYTES", "shape": [1],
                                       "parameters": {"binary_data_size": 1000}}]}).encode()
        self.expect_http_error("POST", path, 400, "REST infer, binary_data_size beyond the body: "
                               "400", body=head + bytes_raw([good]),
                               headers={"Inference-Header-Content-Length": str(len(head))})
        self.expect_http_error("POST", path, 400, "REST infer, Inference-Header-Content-Length "
                               "beyond the body: 400", body=head,
                               headers={"Inference-Header-Content-Length": str(len(head) + 10)})
        self.expect_http_error("POST", "/v2/models/missing/infer", 503,
                               "REST infer of a weight set no worker has ready: 503",
                               obj=bytes_req([good]))
        self.expect_http_error("POST", path, 400, "REST infer, labels of images of different "
                               "sizes: 400", obj=bytes_req([good, png_encode(image(9, 8, RED))],
                                                           outputs=[{"name": "labels"}]))

        # A JSON part over 16 MiB: 413.
        n = (17 << 20) // 2
        big = (b'{"inputs":[{"name":"i","datatype":"UINT8","shape":[1,' + str(n // 3).encode()
               + b',3],"data":[' + b"0," * (n // 3 * 3 - 1) + b"0]}]}")
        try:
            self.expect_http_error("POST", path, 413, "REST infer with a 17 MiB JSON part: 413",
                                   body=big, headers={"Content-Type": "application/json"})
        except OSError as e:
            self.check(False, "REST infer with a 17 MiB JSON part: 413", f"raised {e}")

        # No Content-Length (HTTP/1.1, no chunked encoding): 411.
        status, text = self.raw_http(
            self.http_address,
            b"POST /v2/models/colour/infer HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n\r\n")
        self.check(status == 411 and '"error"' in text, "REST infer without Content-Length: 411",
                   f"got {status} {text[:200]!r}")

    def raw_http(self, address, request, close_write=True):
        """(status, text) of one raw HTTP/1.1 exchange: the answer's head and its
        Content-Length bytes (the server may keep the connection open after them)."""
        host, port = address.rsplit(":", 1)
        data = b""
        with socket.create_connection((host, int(port)), timeout=20) as s:
            s.sendall(request)
            if close_write:
                s.shutdown(socket.SHUT_WR)
            try:
                while True:
                    end = data.find(b"\r\n\r\n")
                    if end >= 0:
                        length = 0
                        for line in data[:end].decode("latin-1").split("\r\n")[1:]:
                            key, _, value = line.partition(":")
                            if key.strip().lower() == "content-length":
                                length = int(value)
                        if len(data) >= end + 4 + length:
                            break
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except (socket.timeout, ConnectionResetError):
                pass
        text = data.decode("latin-1")
        try:
            return int(text.split(" ", 2)[1]), text
        except (IndexError, ValueError):
            return None, text

    def other_gateways(self):
        """--http-port -1 serves no REST port; a body over --max-image-bytes + 1 MiB is 413."""
        common = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
                  "--workers", self.worker_address, "--status-interval", "200ms"]
        off = Process([self.args.gateway, "--http-port", "-1"] + common, "deeplab-gateway",
                      os.path.join(self.tmp, "gateway-off.log"))
        self.processes.append(off)
        started = off.wait_lines(lambda s: any(x.startswith("deeplab-gateway: grpc ") for x in s)
                                 and any(x.startswith("deeplab-gateway: metrics ") for x in s),
                                 60)
        time.sleep(0.5)
        off.stop()
        printed = off.seen + off.rest_of_output()
        self.check(started and not any(x.startswith("deeplab-gateway: http") for x in printed),
                   "--http-port -1: no REST port", str(printed))

        small = Process([self.args.gateway, "--http-port", "0", "--max-image-bytes", "100000"]
                        + common, "deeplab-gateway", os.path.join(self.tmp, "gateway-small.log"))
        self.processes.append(small)
        if not small.wait_lines(lambda s: any(x.startswith("deeplab-gateway: http ") for x in s),
                                60):
            self.check(False, "a gateway with --max-image-bytes 100000 starts", str(small.seen))
            return
        address = small.value("http")
        status, text = self.raw_http(
            address, b"POST /v2/models/colour/infer HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: 1200000\r\nInference-Header-Content-Length: 10\r\n"
                     b"Connection: close\r\n\r\n" + b"x" * 1000, close_write=False)
        self.check(status == 413 and '"error"' in text,
                   "a body over --max-image-bytes + 1 MiB (declared 1200000 bytes): 413",
                   f"got {status} {text[:200]!r}")
        small.stop()

    def rest_idle_connections(self):
        """Idle connections hold a REST thread for --http-request-timeout, not a minute; a
        body that arrives slowly but steadily is still read; bad values exit 2."""
        common = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
                  "--workers", self.worker_address, "--status-interval", "200ms"]
        gw = Process([self.args.gateway, "--http-port", "0", "--http-threads", "2",
                      "--http-request-timeout", "1s"] + common, "deeplab-gateway",
                     os.path.join(self.tmp, "gateway-timeout.log"))
        self.processes.append(gw)
        if not gw.wait_lines(lambda s: any(x.startswith("deeplab-gateway: http ") for x in s), 60):
            self.check(False, "a gateway with --http-request-timeout 1s starts", str(gw.seen))
            return
        address = gw.value("http")
        host, port = address.rsplit(":", 1)
        # As many connections as threads, opened and left silent. Before, each held its thread
        # for 60 s, and with them every other REST client.
        idle = [socket.create_connection((host, int(port))) for _ in range(2)]
        try:
            time.sleep(0.3)
            start = time.time()
            status, text = self.raw_http(address, b"GET /v2/health/live HTTP/1.1\r\n"
                                                  b"Host: localhost\r\nConnection: close\r\n\r\n")
            waited = time.time() - start
            self.check(status == 200 and waited < 8,
                       "2 idle connections on 2 REST threads, timeout 1s: a request is answered",
                       f"status {status} after {waited:.1f} s: {text[:200]!r}")
        finally:
            for s in idle:
                s.close()
        # A slow upload is not cut: pauses of 0.4 s, 2.4 s in all, against the 1 s timeout.
        body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [8, 5, 3],
                                       "data": image(8, 5, RED).reshape(-1).tolist()}]}).encode()
        head = (b"POST /v2/models/colour/infer HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        with socket.create_connection((host, int(port)), timeout=20) as s:
            s.sendall(head)
            step = len(body) // 6 + 1
            for i in range(0, len(body), step):
                time.sleep(0.4)
                s.sendall(body[i:i + step])
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        self.check(data.startswith(b"HTTP/1.1 200"),
                   "a body sent in 6 pieces 0.4 s apart, timeout 1s: answered 200",
                   repr(data[:300]))
        gw.stop()
        for bad in (["--http-request-timeout", "0s"], ["--http-request-timeout", "2h"],
                    ["--http-threads", "0"]):
            run = subprocess.run([self.args.gateway, "--http-port", "0"] + bad + common,
                                 capture_output=True, text=True, timeout=60)
            self.check(run.returncode == 2 and "--http-request-timeout 1ms..1h" in run.stderr,
                       f"{' '.join(bad)}: exit 2 with the valid ranges",
                       f"exit {run.returncode}: {run.stderr[-300:]!r}")

    def run(self):
        try:
            self.start()
            self.wait_ready()
            self.section("gRPC health and metadata", self.grpc_health_and_metadata)
            self.section("gRPC infer (colour)", self.grpc_infer_colour)
            self.section("gRPC errors", self.grpc_errors)
            self.section("gRPC demo and photos", self.grpc_demo_and_photos)
            self.section("REST health and metadata", self.rest_health_and_metadata)
            self.section("REST infer", self.rest_infer)
            self.section("REST errors", self.rest_errors)
            self.section("other gateways", self.other_gateways)
            self.section("REST idle connections", self.rest_idle_connections)
            alive = self.gateway.proc.poll() is None and self.worker.proc.poll() is None
            self.check(alive, "the gateway and worker are still running")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            self.check(False, f"setup: {e}")
        finally:
            for p in reversed(getattr(self, "processes", [])):
                p.stop()
        if self.failed:
            for p in getattr(self, "processes", []):
                print(f"--- {p.log_path} (last lines)\n{p.log_tail()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    for flag in ("--worker", "--gateway", "--source", "--photos"):
        ap.add_argument(flag, required=True)
    args = ap.parse_args()
    started = time.time()
    tmp = tempfile.mkdtemp(prefix="deeplab_oip_")
    test = Test(args, tmp)
    try:
        test.run()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{test.passed} passed, {test.failed} failed ({time.time() - started:.1f} s)")
    return 0 if test.failed == 0 and test.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
