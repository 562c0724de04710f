#!/usr/bin/env python3
"""A naive Python segmentation server: what a user writes instead of deeplab-serve.

The baseline of scripts/benchmark.sh's side-by-side table (docs/BENCHMARKS.md). It serves
deeplab.v1.Segmentation (Segment and ListModels, so deeplab-bench drives it exactly as it
drives the gateway) from a grpcio thread pool, one request at a time per thread: PIL decodes
the image (EXIF orientation applied), it is letterboxed to the weight set's input, run through
the same network (scripts/bench/eager_deeplab.py, loaded from the weight set's .dlck and
exported to TorchScript with torch.jit.trace), fp32, batch 1; the scores are resized back to
the original size with torch's bilinear interpolation, the argmax taken and the class areas
counted; label_png is PNG-encoded by PIL when asked for. No batching, no tuning: the
defaults a first version would have.

  naive_server.py --weights models/demo/demo.dlck --name demo --size 128x128 [--port 0]
                  [--threads 4] [--normalization minus_one_to_one|zero_centered|none]

Prints "naive-server: grpc HOST:PORT", then "naive-server: ready"; stops on SIGTERM/SIGINT.
Needs /usr/bin/python3 with python3-torch, python3-grpcio, python3-grpc-tools, python3-pil.
"""

import argparse
import io
import os
import signal
import sys
import tempfile
import threading
import warnings
from concurrent import futures

import grpc
import torch
import torch.nn.functional as F
from grpc_tools import protoc
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import eager_deeplab  # noqa: E402  pylint: disable=wrong-import-position


def stubs():
    out = tempfile.mkdtemp(prefix="naive_server_pb_")
    protos = os.path.join(HERE, "..", "..", "protos")
    if protoc.main(["protoc", f"-I{protos}", f"--python_out={out}", f"--grpc_python_out={out}",
                    "deeplab/v1/common.proto", "deeplab/v1/segmentation.proto"]) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)
    from deeplab.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc  # noqa: E402
    return common_pb2, segmentation_pb2, segmentation_pb2_grpc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="the weight set's .dlck")
    ap.add_argument("--name", required=True, help="the model name clients ask for")
    ap.add_argument("--size", required=True, help="network input HxW, e.g. 128x128")
    ap.add_argument("--normalization", default="minus_one_to_one",
                    choices=["minus_one_to_one", "zero_centered", "none"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--threads", type=int, default=4, help="gRPC thread pool size")
    args = ap.parse_args()
    height, width = eager_deeplab.parse_size(args.size)
    common_pb2, segmentation_pb2, segmentation_pb2_grpc = stubs()

    kwargs, tensors = eager_deeplab.read_checkpoint(args.weights)
    model = eager_deeplab.DeepLabV3Plus(**kwargs).eval()
    eager_deeplab.load_checkpoint(model, tensors)
    with torch.inference_mode(), warnings.catch_warnings():
        # The tracer warns that shape checks become constants: right, the input size is fixed.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model = torch.jit.trace(model, torch.zeros(1, 3, height, width))
    num_classes = kwargs["num_classes"]

    def normalize(x):
        if args.normalization == "minus_one_to_one":
            return x / 127.5 - 1.0
        if args.normalization == "zero_centered":
            return (x - 128.0) / 128.0
        return x

    class Servicer(segmentation_pb2_grpc.SegmentationServicer):
        def Segment(self, request, context):
            if request.model != args.name:
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model!r}")
            try:
                image = ImageOps.exif_transpose(
                    Image.open(io.BytesIO(request.image.encoded))).convert("RGB")
            except Exception as e:  # noqa: BLE001  pylint: disable=broad-except
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an image: {e}")
            w0, h0 = image.size
            ratio = min(height / h0, width / w0)
            ch, cw = max(1, int(h0 * ratio)), max(1, int(w0 * ratio))
            canvas = torch.zeros(1, 3, height, width)
            pixels = torch.frombuffer(bytearray(image.resize((cw, ch), Image.BILINEAR).tobytes()),
                                      dtype=torch.uint8).reshape(ch, cw, 3)
            canvas[0, :, :ch, :cw] = normalize(pixels.permute(2, 0, 1).float())
            with torch.inference_mode():
                scores = model(canvas)[:, :, :ch, :cw]
                scores = F.interpolate(scores, size=(h0, w0), mode="bilinear",
                                       align_corners=False)
                labels = scores.argmax(1)[0].to(torch.uint8)
            reply = segmentation_pb2.SegmentResponse(request_id=request.request_id,
                                                     model=args.name)
            result = reply.result
            result.height, result.width = h0, w0
            counts = torch.bincount(labels.flatten().long(), minlength=num_classes).tolist()
            for c, n in enumerate(counts):
                if n:
                    result.class_stats.add(class_id=c, pixels=n, fraction=n / (h0 * w0))
            if request.outputs.label_png:
                buf = io.BytesIO()
                Image.fromarray(labels.numpy()).save(buf, format="PNG")
                result.label_png = buf.getvalue()
            return reply

        def ListModels(self, request, context):
            return segmentation_pb2.ListModelsResponse(
                models=[segmentation_pb2.ModelInfo(name=args.name, num_classes=num_classes,
                                                   input_height=height, input_width=width,
                                                   ready=True, max_batch_size=1)],
                workers=1, healthy_workers=1)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.threads))
    segmentation_pb2_grpc.add_SegmentationServicer_to_server(Servicer(), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    print(f"naive-server: grpc {args.host}:{port}", flush=True)
    print("naive-server: ready", flush=True)
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    stop.wait()
    server.stop(5).wait()


if __name__ == "__main__":
    main()
