#!/usr/bin/env python3
"""Calls the gateway from Python, with stubs generated from our protos at test time.

Shows that another language can use deeplab-serve: it starts a real worker and gateway on
loopback ports they pick, then uses Segment, SegmentStream and ListModels through
python3-grpcio, and checks answers and error codes.

Usage: python_client_test.py --worker BIN --gateway BIN --source DIR --photos DIR
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc


class Server:
    """A server process whose gRPC address is read from its first output line."""

    def __init__(self, argv, name, ready_line):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.address = None
        deadline = time.time() + 300
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{name} exited before it was ready")
            if line.startswith(f"{name}: grpc "):
                self.address = line.split()[-1]
            if self.address and (ready_line is None or line.startswith(f"{name}: {ready_line}")):
                return
        raise RuntimeError(f"{name} did not start in time")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def generate_stubs(source, out):
    os.makedirs(out, exist_ok=True)
    rc = protoc.main(["protoc", f"-I{source}/protos", f"--python_out={out}",
                      f"--grpc_python_out={out}", "deeplab/v1/common.proto",
                      "deeplab/v1/segmentation.proto"])
    if rc != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, out)


def write_colour_repository(source, repo):
    """A model repository with "colour": a TorchScript model labelling each pixel by its
    dominant colour channel (red, green, blue), so every answer is known."""
    os.makedirs(os.path.join(repo, "colour"))
    subprocess.run([sys.executable, os.path.join(source, "tests/tools/make_torchscript.py"),
                    "--out-dir", os.path.join(repo, "colour")], check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(repo, "colour", "config.pbtxt"), "w") as f:
        f.write('name: "colour"\narchitecture { num_classes: 3 }\n'
                'input { height: 64 width: 64 normalization: NORMALIZATION_NONE }\n'
                'class_names: ["red", "green", "blue"]\n'
                'weights { file: "colour_argmax.pt" format: WEIGHTS_FORMAT_TORCHSCRIPT }\n')


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--photos", required=True)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="deeplab_python_client_")
    generate_stubs(args.source, os.path.join(tmp, "stubs"))
    from deeplab.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc  # noqa: E402

    repo = os.path.join(tmp, "models")
    write_colour_repository(args.source, repo)

    common = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]
    worker = Server([args.worker, "--models", repo, "--threads", "1"] + common,
                    "deeplab-worker", "ready")
    gateway = None
    checks = {"passed": 0, "failed": 0}

    def check(condition, what):
        checks["passed" if condition else "failed"] += 1
        print(("ok   " if condition else "FAIL ") + what, flush=True)

    try:
        gateway = Server([args.gateway, "--workers", worker.address, "--status-interval", "200ms",
                          "--http-port", "0"]
                         + common, "deeplab-gateway", None)
        channel = grpc.insecure_channel(gateway.address, options=[
            ("grpc.max_receive_message_length", 256 << 20),
            ("grpc.max_send_message_length", 256 << 20)])
        stub = segmentation_pb2_grpc.SegmentationStub(channel)

        deadline = time.time() + 30
        models = stub.ListModels(segmentation_pb2.ListModelsRequest())
        while not any(m.ready for m in models.models) and time.time() < deadline:
            time.sleep(0.1)
            models = stub.ListModels(segmentation_pb2.ListModelsRequest())
        check([m.name for m in models.models] == ["colour"], "ListModels lists the weight set")
        check(list(models.models[0].class_names) == ["red", "green", "blue"], "class names")

        with open(os.path.join(args.photos, "image1.jpg"), "rb") as f:
            photo = f.read()
        request = segmentation_pb2.SegmentRequest(
            model="colour", image=common_pb2.Image(encoded=photo), request_id="py-1",
            outputs=common_pb2.OutputOptions(label_png=True, overlay_png=True, class_stats=True))
        response = stub.Segment(request, timeout=60)
        check(response.request_id == "py-1", "request id echoed")
        check(response.result.height > 0 and response.result.width > 0, "original size reported")
        check(response.result.label_png.startswith(b"\x89PNG"), "label map is a PNG")
        check(response.result.overlay_png.startswith(b"\x89PNG"), "overlay is a PNG")
        check(abs(sum(c.fraction for c in response.result.class_stats) - 1.0) < 1e-6,
              "class fractions sum to 1")
        check(response.timing.total_seconds >= response.timing.compute_seconds > 0,
              "timing breakdown")

        try:
            stub.Segment(segmentation_pb2.SegmentRequest(
                model="no_such_model", image=common_pb2.Image(encoded=photo)), timeout=60)
            check(False, "unknown weight set is refused")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.NOT_FOUND, "unknown weight set is NOT_FOUND")
        try:
            stub.Segment(segmentation_pb2.SegmentRequest(
                model="colour", image=common_pb2.Image(encoded=b"not an image")), timeout=60)
            check(False, "garbage is refused")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "garbage is INVALID_ARGUMENT")

        def requests():
            for i in range(5):
                yield segmentation_pb2.SegmentRequest(
                    model="colour", image=common_pb2.Image(encoded=photo), request_id=f"s{i}")
        answers = {r.request_id: r for r in stub.SegmentStream(requests(), timeout=120)}
        check(sorted(answers) == [f"s{i}" for i in range(5)], "stream answers every request")
        check(all(r.code == 0 for r in answers.values()), "stream answers are OK")
    finally:
        if gateway is not None:
            gateway.stop()
        worker.stop()

    print(f"{checks['passed']} passed, {checks['failed']} failed")
    return 0 if checks["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
