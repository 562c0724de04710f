#!/usr/bin/env python3
"""TLS, mutual TLS and bearer tokens end to end, with certificates made by openssl here.

A worker serves TLS and requires client certificates from our CA; the gateway reaches it with
its own client certificate, serves TLS to clients (also requiring a client certificate) and
requires a bearer token from --tokens-file, one of them limited to another weight set. Then,
from Python (grpcio), the deeplab CLI and the C++ example:
  - plaintext, a client without certificate, and one whose certificate another CA signed get
    no answer (handshake refused); so does a direct call to the worker without our client
    certificate: nobody gets past the gateway to a worker;
  - no token or an unknown token: UNAUTHENTICATED; a token for another weight set:
    PERMISSION_DENIED, and ListModels shows it only its own weight sets;
  - the right certificate and token: the image is segmented;
  - the token appears in neither the gateway's logs nor its metrics;
  - ListModels' not-ready reasons name no server path;
  - bad TLS files stop a server at start with exit 2 and a message naming the file;
  - a rotated certificate is served without a restart;
  - the Open Inference Protocol needs the same tokens for its model calls (gRPC and REST;
    health stays open), and the REST port, which has no TLS, stays off beside a TLS gRPC port
    unless --http-insecure.

Usage: security_test.py --worker BIN --gateway BIN --cli BIN --example BIN --source DIR
"""

import argparse
import base64
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import grpc
from grpc_tools import protoc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from python_client_test import Server as ClientTestServer  # noqa: E402
from python_client_test import write_colour_repository  # noqa: E402

TOKEN = "s3cret-token-for-the-colour-set-4f1c"
OTHER_TOKEN = "token-limited-to-another-weight-set-9d2e"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}", cwd=d)


def make_cert(d, ca, name, san):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
            cwd=d)


class Server:
    """A server process; its gRPC and metrics addresses come from its first output lines."""

    def __init__(self, argv, name, ready_line, log_path):
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.address = self.metrics = None
        self.lines = []
        deadline = time.time() + 300
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{name} exited before it was ready")
            self.lines.append(line)
            if line.startswith(f"{name}: grpc "):
                self.address = line.split()[-1]
            if line.startswith(f"{name}: metrics "):
                self.metrics = line.split()[-1]
            if self.address and self.metrics and (
                    ready_line is None or line.startswith(f"{name}: {ready_line}")):
                return
        raise RuntimeError(f"{name} did not start in time")

    def stop(self):
        ClientTestServer.stop(self)
        self.log.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    for flag in ("--worker", "--gateway", "--cli", "--example", "--source"):
        ap.add_argument(flag, required=True)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="deeplab_security_")
    stubs = os.path.join(tmp, "stubs")
    os.makedirs(stubs)
    if protoc.main(["protoc", f"-I{args.source}/protos", f"--python_out={stubs}",
                    f"--grpc_python_out={stubs}", "deeplab/v1/common.proto",
                    "deeplab/v1/segmentation.proto", "deeplab/v1/worker.proto",
                    "deeplab/v1/model_config.proto", "inference/grpc_predict_v2.proto"]) != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, stubs)
    from deeplab.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc  # noqa: E402
    from deeplab.v1 import worker_pb2, worker_pb2_grpc  # noqa: E402
    from inference import grpc_predict_v2_pb2 as oip, grpc_predict_v2_pb2_grpc as oip_grpc  # noqa: E402

    pki = os.path.join(tmp, "pki")
    os.makedirs(pki)
    make_ca(pki, "ca")
    make_ca(pki, "rogue-ca")
    make_cert(pki, "ca", "server", "DNS:localhost,IP:127.0.0.1")
    make_cert(pki, "ca", "server-renewed", "DNS:localhost,IP:127.0.0.1")
    make_cert(pki, "ca", "client", "DNS:deeplab-client")
    make_cert(pki, "rogue-ca", "rogue", "DNS:deeplab-client")
    p = lambda name: os.path.join(pki, name)  # noqa: E731

    repo = os.path.join(tmp, "models")
    write_colour_repository(args.source, repo)
    # A weight set whose weights file is missing: its not-ready reason must not show `repo`.
    os.makedirs(os.path.join(repo, "missing"))
    with open(os.path.join(repo, "missing", "config.pbtxt"), "w") as f:
        f.write('name: "missing"\narchitecture { num_classes: 2 }\n'
                'input { height: 64 width: 64 normalization: NORMALIZATION_NONE }\n'
                'class_names: ["a", "b"]\n'
                'weights { file: "gone.pt" format: WEIGHTS_FORMAT_TORCHSCRIPT }\n')

    tokens = os.path.join(tmp, "tokens.pbtxt")
    with open(tokens, "w") as f:
        f.write(f'token {{ name: "colour-user" sha256: "{hashlib.sha256(TOKEN.encode()).hexdigest()}" '
                'weight_sets: "colour" }\n'
                f'token {{ name: "other-user" sha256: "{hashlib.sha256(OTHER_TOKEN.encode()).hexdigest()}" '
                'weight_sets: "missing" }\n')
    token_file = os.path.join(tmp, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")

    checks = {"passed": 0, "failed": 0}

    def check(condition, what):
        checks["passed" if condition else "failed"] += 1
        print(("ok   " if condition else "FAIL ") + what, flush=True)

    common = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]
    server_tls = ["--tls-cert", p("server.crt"), "--tls-key", p("server.key"),
                  "--tls-client-ca", p("ca.crt"), "--tls-reload-interval", "1s"]

    def served_certificate_name(address):
        """The CN of the certificate a TLS port presents (with our client certificate)."""
        context = ssl.create_default_context(cafile=p("ca.crt"))
        context.load_cert_chain(p("client.crt"), p("client.key"))
        context.set_alpn_protocols(["h2"])
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                subject = dict(x[0] for x in tls.getpeercert()["subject"])
                return subject.get("commonName")

    # Bad TLS files: exit 2 at start, naming the problem.
    bad = subprocess.run([args.worker, "--models", repo, "--tls-cert", p("server.crt"),
                          "--tls-key", p("client.key")] + common,
                         capture_output=True, text=True, timeout=120)
    check(bad.returncode == 2 and "does not belong to certificate" in bad.stderr,
          f"a key that is not the certificate's: exit 2 ({bad.returncode}: {bad.stderr.strip()})")
    bad = subprocess.run([args.gateway, "--workers", "127.0.0.1:1", "--tls-cert",
                          p("server.crt")] + common, capture_output=True, text=True, timeout=60)
    check(bad.returncode == 2 and "--tls-key" in bad.stderr,
          f"a certificate without key: exit 2 ({bad.returncode}: {bad.stderr.strip()})")

    worker = Server([args.worker, "--models", repo, "--threads", "1"] + common + server_tls,
                    "deeplab-worker", "ready", os.path.join(tmp, "worker.log"))
    gateway = None
    try:
        gateway = Server([args.gateway, "--workers", worker.address, "--status-interval", "200ms",
                          "--http-port", "0",
                          "--worker-tls-ca", p("ca.crt"), "--worker-tls-cert", p("client.crt"),
                          "--worker-tls-key", p("client.key"), "--tokens-file", tokens,
                          "--metrics-host", "127.0.0.2"]
                         + common + server_tls, "deeplab-gateway", None,
                         os.path.join(tmp, "gateway.log"))
        ca = open(p("ca.crt"), "rb").read()
        client_cert = (open(p("client.key"), "rb").read(), open(p("client.crt"), "rb").read())

        def channel(target, key_cert=client_cert, root=ca):
            creds = grpc.ssl_channel_credentials(
                root_certificates=root, private_key=key_cert[0] if key_cert else None,
                certificate_chain=key_cert[1] if key_cert else None)
            return grpc.secure_channel(target, creds)

        stub = segmentation_pb2_grpc.SegmentationStub(channel(gateway.address))
        auth = [("authorization", f"Bearer {TOKEN}")]
        deadline = time.time() + 60
        ready = False
        while not ready and time.time() < deadline:
            try:
                models = stub.ListModels(segmentation_pb2.ListModelsRequest(), metadata=auth,
                                         timeout=5)
                ready = any(m.ready for m in models.models)
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        check(ready, "the gateway reached the worker over mutual TLS")
        check([m.name for m in models.models] == ["colour"],
              f"ListModels shows a token only its weight sets ({[m.name for m in models.models]})")

        photo = open(os.path.join(args.source, "models/demo/samples/images/000000.png"), "rb").read()
        request = segmentation_pb2.SegmentRequest(
            model="colour", image=common_pb2.Image(encoded=photo), request_id="sec-1",
            outputs=common_pb2.OutputOptions(label_png=True, class_stats=True))

        def code_of(call):
            try:
                call()
                return grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                return e.code(), e.details() or ""

        code, _ = code_of(lambda: stub.Segment(request, metadata=auth, timeout=60))
        check(code == grpc.StatusCode.OK, f"certificate and token: segmented ({code})")
        code, msg = code_of(lambda: stub.Segment(request, timeout=30))
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"no token: UNAUTHENTICATED ({code}: {msg})")
        code, msg = code_of(lambda: stub.Segment(
            request, metadata=[("authorization", "Bearer wrong")], timeout=30))
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"unknown token: UNAUTHENTICATED ({code})")
        other = [("authorization", f"Bearer {OTHER_TOKEN}")]
        code, msg = code_of(lambda: stub.Segment(request, metadata=other, timeout=30))
        check(code == grpc.StatusCode.PERMISSION_DENIED and OTHER_TOKEN not in msg,
              f"a token for another weight set: PERMISSION_DENIED ({code}: {msg})")
        code, _ = code_of(lambda: stub.ListModels(segmentation_pb2.ListModelsRequest(), timeout=30))
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"ListModels without token ({code})")
        replies = list(stub.SegmentStream(iter([request, request]), metadata=other, timeout=60))
        check(len(replies) == 2 and all(r.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
                                        for r in replies),
              "SegmentStream: each image of another weight set PERMISSION_DENIED")

        # Without the right certificate, nothing gets an answer.
        for what, ch in (
                ("plaintext", grpc.insecure_channel(gateway.address)),
                ("TLS without a client certificate", channel(gateway.address, key_cert=None)),
                ("a client certificate from another CA",
                 channel(gateway.address, key_cert=(open(p("rogue.key"), "rb").read(),
                                                    open(p("rogue.crt"), "rb").read())))):
            code, _ = code_of(lambda: segmentation_pb2_grpc.SegmentationStub(ch).Segment(
                request, metadata=auth, timeout=10))
            check(code == grpc.StatusCode.UNAVAILABLE, f"gateway, {what}: refused ({code})")
        infer = worker_pb2.InferRequest(model="colour", items=[worker_pb2.InferItem(
            id="1", image=common_pb2.Image(encoded=photo))])
        for what, ch in (("plaintext", grpc.insecure_channel(worker.address)),
                         ("TLS without a client certificate", channel(worker.address, key_cert=None))):
            code, _ = code_of(lambda: worker_pb2_grpc.WorkerStub(ch).Infer(infer, timeout=10))
            check(code == grpc.StatusCode.UNAVAILABLE, f"worker, {what}: refused ({code})")
        code, _ = code_of(lambda: worker_pb2_grpc.WorkerStub(channel(worker.address)).Infer(
            infer, timeout=30))
        check(code == grpc.StatusCode.OK, f"worker, our client certificate: served ({code})")

        # ListModels' reasons name files relative to the repository, not where the server is.
        models = segmentation_pb2_grpc.SegmentationStub(channel(gateway.address)).ListModels(
            segmentation_pb2.ListModelsRequest(),
            metadata=[("authorization", f"Bearer {OTHER_TOKEN}")], timeout=10)
        reasons = [r for m in models.models for r in m.not_ready_reasons]
        check(reasons and not any(tmp in r for r in reasons) and any("gone.pt" in r for r in reasons),
              f"not-ready reasons without server paths ({reasons})")

        # The CLI and the C++ example with the same options.
        cli = [args.cli, "models", "--server", gateway.address, "--ca", p("ca.crt"),
               "--cert", p("client.crt"), "--key", p("client.key")]
        r = subprocess.run(cli + ["--token-file", token_file], capture_output=True, text=True,
                           timeout=60)
        check(r.returncode == 0 and "colour" in r.stdout, f"deeplab models with TLS and token ({r.returncode}: {r.stderr.strip()})")
        # --server-name: the name the certificate must carry, when not the address's host.
        r = subprocess.run(cli + ["--token-file", token_file, "--server-name", "localhost"],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, f"deeplab models --server-name localhost ({r.returncode})")
        r = subprocess.run(cli + ["--token-file", token_file, "--server-name", "elsewhere.example"],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 3, f"a certificate without the --server-name: exit 3 ({r.returncode})")
        env = dict(os.environ)
        env.pop("DEEPLAB_TOKEN", None)
        r = subprocess.run(cli, capture_output=True, text=True, timeout=60, env=env)
        check(r.returncode == 5 and "UNAUTHENTICATED" in r.stderr,
              f"deeplab models without token: exit 5 ({r.returncode}: {r.stderr.strip()})")
        env["DEEPLAB_TOKEN"] = TOKEN
        out_dir = os.path.join(tmp, "out")
        r = subprocess.run([args.cli, "segment", "--server", gateway.address, "--ca", p("ca.crt"),
                            "--cert", p("client.crt"), "--key", p("client.key"), "--model",
                            "colour", "--out", out_dir, "--quiet",
                            os.path.join(args.source, "models/demo/samples/images/000000.png")],
                           capture_output=True, text=True, timeout=120, env=env)
        check(r.returncode == 0 and os.path.exists(os.path.join(out_dir, "000000_label.png")),
              f"deeplab segment with DEEPLAB_TOKEN ({r.returncode}: {r.stderr.strip()})")
        labels = os.path.join(tmp, "example_labels.png")
        r = subprocess.run([args.example, gateway.address, "colour",
                            os.path.join(args.source, "models/demo/samples/images/000000.png"),
                            labels, "--ca", p("ca.crt"), "--cert", p("client.crt"), "--key",
                            p("client.key"), "--token-file", token_file],
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 0 and os.path.exists(labels),
              f"C++ example with TLS and token ({r.returncode}: {r.stderr.strip()})")

        # Rotation: new files in place are served within the reload interval, no restart.
        check(served_certificate_name(gateway.address) == "server", "the first certificate")
        for ext in ("crt", "key"):
            shutil.copy(p(f"server-renewed.{ext}"), p(f"server.{ext}.new"))
            os.replace(p(f"server.{ext}.new"), p(f"server.{ext}"))
        renewed = None
        deadline = time.time() + 15
        while renewed != "server-renewed" and time.time() < deadline:
            time.sleep(0.5)
            renewed = served_certificate_name(gateway.address)
        check(renewed == "server-renewed", f"a rotated certificate served without restart ({renewed})")
        code, _ = code_of(lambda: segmentation_pb2_grpc.SegmentationStub(
            channel(gateway.address)).Segment(request, metadata=auth, timeout=60))
        check(code == grpc.StatusCode.OK, f"served after the rotation ({code})")

        # The Open Inference Protocol: the same tokens; health and server metadata open.
        check(any("REST port off" in line for line in gateway.lines),
              "with --tls-cert the plaintext REST port stays off")
        inference = oip_grpc.GRPCInferenceServiceStub(channel(gateway.address))
        infer = oip.ModelInferRequest(model_name="colour", inputs=[
            oip.ModelInferRequest.InferInputTensor(
                name="image", datatype="BYTES", shape=[1],
                contents=oip.InferTensorContents(bytes_contents=[photo]))])
        code, _ = code_of(lambda: inference.ServerLive(oip.ServerLiveRequest(), timeout=10))
        check(code == grpc.StatusCode.OK, f"OIP ServerLive needs no token ({code})")
        code, _ = code_of(lambda: inference.ModelInfer(infer, timeout=30))
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"OIP ModelInfer without token ({code})")
        code, _ = code_of(lambda: inference.ModelMetadata(
            oip.ModelMetadataRequest(name="colour"), metadata=other, timeout=30))
        check(code == grpc.StatusCode.PERMISSION_DENIED,
              f"OIP ModelMetadata with another weight set's token ({code})")
        code, _ = code_of(lambda: inference.ModelInfer(infer, metadata=auth, timeout=60))
        check(code == grpc.StatusCode.OK, f"OIP ModelInfer with certificate and token ({code})")

        # REST beside TLS only with --http-insecure (behind a TLS-terminating proxy); tokens.
        rest_gateway = Server([args.gateway, "--workers", worker.address, "--http-port", "0",
                               "--http-insecure", "--worker-tls-ca", p("ca.crt"),
                               "--worker-tls-cert", p("client.crt"), "--worker-tls-key",
                               p("client.key"), "--tokens-file", tokens]
                              + common + server_tls, "deeplab-gateway", "http",
                              os.path.join(tmp, "rest-gateway.log"))
        try:
            http = next(line.split()[-1] for line in rest_gateway.lines
                        if line.startswith("deeplab-gateway: http "))

            def rest(path, token=None, body=None):
                request = urllib.request.Request(f"http://{http}{path}", data=body)
                if token:
                    request.add_header("Authorization", f"Bearer {token}")
                try:
                    with urllib.request.urlopen(request, timeout=60) as r:
                        return r.status, r.read()
                except urllib.error.HTTPError as e:
                    return e.code, e.read()

            body = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                           "parameters": {"content_type": "base64"},
                                           "data": [base64.b64encode(photo).decode()]}]}).encode()
            deadline = time.time() + 30
            while rest("/v2/health/ready")[0] != 200 and time.time() < deadline:
                time.sleep(0.2)
            check(rest("/v2/health/ready")[0] == 200, "REST health needs no token")
            check(rest("/v2/models/colour")[0] == 401, "REST metadata without token: 401")
            check(rest("/v2/models/colour", "wrong")[0] == 401, "REST unknown token: 401")
            status, _ = rest("/v2/models/colour/infer", OTHER_TOKEN, body)
            check(status == 403, f"REST infer with another weight set's token: 403 ({status})")
            status, answer = rest("/v2/models/colour/infer", TOKEN, body)
            check(status == 200 and json.loads(answer)["outputs"][0]["name"] == "labels",
                  f"REST infer with the token ({status})")
        finally:
            rest_gateway.stop()

        # Tokens in no log and no metric; metrics on their own address (--metrics-host).
        check(gateway.metrics.startswith("127.0.0.2:"),
              f"metrics listen on --metrics-host ({gateway.metrics})")
        metrics = urllib.request.urlopen(f"http://{gateway.metrics}", timeout=10).read().decode()
        gateway.stop()
        logs = (open(os.path.join(tmp, "gateway.log")).read() + "".join(gateway.lines) +
                open(os.path.join(tmp, "rest-gateway.log")).read())
        check(TOKEN not in logs and OTHER_TOKEN not in logs and TOKEN not in metrics,
              "tokens appear in neither logs nor metrics")
        gateway = None
    finally:
        if gateway is not None:
            gateway.stop()
        worker.stop()

    print(f"{checks['passed']} passed, {checks['failed']} failed")
    sys.exit(1 if checks["failed"] else 0)


if __name__ == "__main__":
    main()
