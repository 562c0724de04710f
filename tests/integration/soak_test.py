#!/usr/bin/env python3
"""Soak test: a few minutes of mixed traffic against a real gateway and two real workers,
while one worker is killed and restarted and the other is stopped and resumed.

The cluster serves the shipped demo weight set on loopback ports the processes pick. First,
on the quiet cluster, each good image (small real photos and the demo samples) is segmented
once to record its label map. Then client threads send, for TRAFFIC_S seconds:
  - good requests (one to four at once, deadline GOOD_DEADLINE_S);
  - hostile ones: a truncated JPEG, random bytes, a PNG header claiming 60000x60000, raw
    pixels that do not add up, an empty or missing image, overlay_alpha NaN or 1.5, an
    unknown or missing weight set name, an out-of-range priority;
  - requests the client gives up on: deadlines of 2 to 80 ms, or future.cancel() soon after
    sending.
Meanwhile worker A is SIGKILLed at KILL_AT_S and restarted on the same port, and once the
gateway lists it ready again worker B is SIGSTOPped for STOP_FOR_S and then SIGCONTed.

It checks that every call completes exactly once (one done-callback, never later than its
deadline plus HANG_MARGIN_S; the gateway's requests_total grows by the calls it got), that
good calls are OK with the request id echoed and the quiet cluster's label map at the
image's size, that hostile calls get their documented code (never OK, UNKNOWN or INTERNAL),
that cancelled calls end CANCELLED / DEADLINE_EXCEEDED or OK with the right labels, that the
VmRSS of every process stays under the bounds below, that no process exits unasked, and that
the gateway answers a last request. A summary (counts per category and status, max RSS,
wall time) is printed either way.

Usage: soak_test.py --worker BIN --gateway BIN --source DIR --photos DIR [--seed N]
"""

import argparse
import collections
import hashlib
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from python_client_test import Server as ClientTestServer, generate_stubs  # noqa: E402

# VmRSS bounds (MiB), checked on every one-second sample of every process. Measured on the
# project's 2-core VM (demo weight set, workers at --threads 1, this traffic; 5 runs, one of
# them with 420 s of traffic): the gateway peaked at 70-74 MiB, each worker (the restarted
# one included) at 260-290 MiB, flat after about 3 minutes. The bounds leave about 2x for the
# gateway and 1.5x for the workers (other machines, allocators, core counts); they catch a
# leak of the images or label maps (12,000 to 20,000 good requests a run), not one of a few KiB.
GATEWAY_RSS_LIMIT_MIB = 150
WORKER_RSS_LIMIT_MIB = 450

# The schedule, in seconds from the start of the traffic.
TRAFFIC_S = 90             # traffic runs this long (then in-flight calls finish)
KILL_AT_S = 15             # worker A gets SIGKILL
DEAD_FOR_S = 3             # and is restarted on the same port this long after it died
BOTH_UP_S = 12             # traffic on both workers again before B is stopped
STOP_FOR_S = 10            # worker B stays SIGSTOPped this long
REJOIN_TIMEOUT_S = 30      # a restarted or resumed worker must be listed ready again within

GOOD_DEADLINE_S = 20.0     # generous: B stopped for 10 s must not fail a good request
HOSTILE_DEADLINE_S = 20.0
HANG_MARGIN_S = 5.0        # a call not done by its deadline plus this has hung
GOOD_THREADS = 3
PHOTOS = ["baptist400.jpg", "image1.jpg", "image2.jpg", "image3.jpg"]
SAMPLES = ["000000.png", "000001.png", "000002.png", "000003.png"]

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT


class Server(ClientTestServer):
    """A server process. Its stdout is read to the end by a thread (so the pipe never fills);
    the gRPC and metrics addresses come from its first lines; stderr goes to a log file.
    Only stop() is python_client_test's."""

    def __init__(self, name, label, argv, log_dir):  # pylint: disable=super-init-not-called
        self.name, self.label = name, label
        self.log_path = os.path.join(log_dir, f"{label}.log")
        self.address = self.metrics = None
        self.expected_exit = False
        self._lines = []
        self._changed = threading.Condition()
        self._eof = False
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                if line.startswith(f"{self.name}: grpc "):
                    self.address = line.split()[-1]
                if line.startswith(f"{self.name}: metrics "):
                    self.metrics = line.split()[-1]
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_started(self, ready_line, timeout):
        """Waits for both addresses and, when given, the line '<name>: <ready_line>'."""
        def started():
            return self.address and self.metrics and (
                ready_line is None or f"{self.name}: {ready_line}" in self._lines)
        with self._changed:
            if not self._changed.wait_for(lambda: started() or self._eof, timeout):
                raise RuntimeError(f"{self.label} did not start within {timeout} s\n{self.tail()}")
            if not started():
                raise RuntimeError(f"{self.label} exited ({self.proc.wait()}) before it was "
                                   f"ready\n{self.tail()}")
        return self

    def tail(self, n=15):
        with open(self.log_path, errors="replace") as f:
            lines = f.read().splitlines()[-n:]
        return "\n".join(f"    {self.label}| {line}" for line in lines)

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        """SIGCONT (it may be stopped), then python_client_test's SIGTERM (the servers drain)
        and SIGKILL after 60 s; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            super().stop()
        return self.proc.wait()


def image_size(data):
    """(height, width) from a PNG's IHDR or a JPEG's SOF marker."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return struct.unpack(">HH", data[i + 5:i + 9])
        i += 2 + length
    raise ValueError("no image size found")


def png_chunk(kind, payload):
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def giant_png_header(width, height):
    """A well-formed PNG claiming width x height pixels that holds almost none of them."""
    return (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + png_chunk(b"IEND", b""))


class Call:
    """One Segment call and how it ended."""

    def __init__(self, category, kind, request_id, image, timeout):
        self.category, self.kind, self.request_id = category, kind, request_id
        self.image, self.timeout = image, timeout
        self.start = time.monotonic()
        self.end = None
        self.callbacks = 0
        self.cancel_accepted = None
        self.code = None
        self.details = ""
        self.response = None
        self.problem = None  # what was wrong with it, for the failure report

    def done(self, _future):
        self.callbacks += 1
        if self.end is None:
            self.end = time.monotonic()


class Soak:
    def __init__(self, args, pb):
        self.args = args
        self.common_pb2, self.segmentation_pb2, self.grpc_mod = pb
        self.tmp = tempfile.mkdtemp(prefix="deeplab_soak_")
        self.t0 = time.monotonic()
        self.traffic_start = None
        self.stop_traffic = threading.Event()
        self.lock = threading.Lock()
        self.calls = []
        self.failures = []           # process-level problems, said in full
        self.rss_max = {}            # label -> max VmRSS in KiB
        self.rss_first = {}
        self.rss_last = {}
        self.servers = {}            # label -> Server (the ones sampled)
        self.gateway_count = None    # what the gateway's requests_total said, for the summary
        self.restarted_at = None     # when the restarted worker-a was listed ready
        self.stop_window = None      # (SIGSTOP time, SIGCONT time) in monotonic seconds
        self.images = {}             # key -> bytes
        self.sizes = {}              # key -> (height, width)
        self.baseline = {}           # key -> (sha256 of label_raw, label_raw)

    # ---- setup ----

    def log(self, what):
        at = time.monotonic() - (self.traffic_start or self.t0)
        stamp = f"t={at:6.1f}s" if self.traffic_start else f"setup {at:5.1f}s"
        print(f"[{stamp}] {what}", flush=True)

    def load_images(self):
        for name in PHOTOS:
            with open(os.path.join(self.args.photos, name), "rb") as f:
                self.images[f"photo/{name}"] = f.read()
        for name in SAMPLES:
            path = os.path.join(self.args.source, "models/demo/samples/images", name)
            with open(path, "rb") as f:
                self.images[f"sample/{name}"] = f.read()
        self.sizes = {key: image_size(data) for key, data in self.images.items()}

    def start_worker(self, label, port="0"):
        argv = [self.args.worker, "--models", os.path.join(self.args.source, "models"),
                "--load", "demo", "--threads", "1", "--pipeline-threads", "2",
                "--host", "127.0.0.1", "--port", port, "--metrics-port", "0"]
        return Server("deeplab-worker", label, argv, self.tmp)

    def start_cluster(self):
        a = self.start_worker("worker-a")
        b = self.start_worker("worker-b")
        self.servers = {"worker-a": a, "worker-b": b}
        a.wait_started("ready", 300)
        b.wait_started("ready", 300)
        gateway = Server("deeplab-gateway", "gateway", [
            self.args.gateway, "--http-port", "0", "--workers", f"{a.address},{b.address}",
            "--status-interval",
            "200ms", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"], self.tmp)
        self.servers["gateway"] = gateway.wait_started(None, 60)
        self.channel = grpc.insecure_channel(gateway.address, options=[
            ("grpc.max_receive_message_length", 256 << 20),
            ("grpc.max_send_message_length", 256 << 20)])
        self.stub = self.grpc_mod.SegmentationStub(self.channel)
        self.wait_listed_ready(a.address, 60)
        self.wait_listed_ready(b.address, 60)
        self.log(f"cluster up: gateway {gateway.address}, worker-a {a.address}, "
                 f"worker-b {b.address}")

    def ready_workers(self):
        try:
            models = self.stub.ListModels(self.segmentation_pb2.ListModelsRequest(), timeout=5)
        except grpc.RpcError:
            return []
        return [w for m in models.models if m.name == "demo" for w in m.ready_workers]

    def wait_listed_ready(self, address, timeout):
        """Seconds until the gateway lists the worker at address ready for demo."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if address in self.ready_workers():
                return time.monotonic() - start
            time.sleep(0.1)
        raise RuntimeError(f"the gateway did not list {address} ready for demo within "
                           f"{timeout} s (it lists {self.ready_workers()})")

    def good_request(self, key, request_id):
        return self.segmentation_pb2.SegmentRequest(
            model="demo", image=self.common_pb2.Image(encoded=self.images[key]),
            request_id=request_id, outputs=self.common_pb2.OutputOptions(label_raw=True))

    def record_baseline(self):
        """Each good image's label map on the quiet cluster, sent alone (a batch of one)."""
        for key in sorted(self.images):
            r = self.stub.Segment(self.good_request(key, "baseline"), timeout=60)
            height, width = self.sizes[key]
            if (r.result.height, r.result.width) != (height, width) or \
                    len(r.result.label_raw) != height * width:
                raise RuntimeError(f"baseline {key}: {r.result.width}x{r.result.height} and "
                                   f"{len(r.result.label_raw)} label bytes for a "
                                   f"{width}x{height} image")
            self.baseline[key] = (hashlib.sha256(r.result.label_raw).hexdigest(),
                                  r.result.label_raw)
        self.log(f"baseline label maps of {len(self.baseline)} images recorded")

    # ---- traffic ----

    def issue(self, category, kind, request, timeout, image=None, cancel_after=None):
        call = Call(category, kind, request.request_id, image, timeout)
        with self.lock:
            self.calls.append(call)
        future = self.stub.Segment.future(request, timeout=timeout)
        call.future = future
        future.add_done_callback(call.done)
        if cancel_after is not None:
            time.sleep(cancel_after)
            call.cancel_accepted = future.cancel()
        return call

    def finish(self, call):
        """Waits for the call (at most its deadline plus HANG_MARGIN_S) and records its end."""
        left = call.start + call.timeout + HANG_MARGIN_S - time.monotonic()
        try:
            error = call.future.exception(timeout=max(left, 0))
        except grpc.FutureTimeoutError:
            call.code = "HUNG"
            call.problem = (f"no answer {call.timeout + HANG_MARGIN_S:.0f} s after it was sent "
                            f"(deadline {call.timeout:.3f} s)")
            call.future.cancel()
            return
        except grpc.FutureCancelledError:
            call.code = grpc.StatusCode.CANCELLED
            return
        if error is None:
            call.code = OK
            call.response = call.future.result()
        else:
            call.code = error.code()
            call.details = error.details() or ""

    def good_loop(self, index):
        rng = random.Random(self.args.seed * 100 + index)
        keys = sorted(self.images)
        n = 0
        while not self.stop_traffic.is_set():
            calls = []
            for _ in range(rng.randint(1, 4)):
                key = rng.choice(keys)
                n += 1
                calls.append(self.issue("good", key.split("/")[0], self.good_request(
                    key, f"good-{index}-{n}"), GOOD_DEADLINE_S, image=key))
            for call in calls:
                self.finish(call)
            time.sleep(rng.uniform(0, 0.05))

    def hostile_requests(self):
        """(kind, request, expected code)."""
        c, s = self.common_pb2, self.segmentation_pb2
        photo = self.images["photo/image1.jpg"]
        sample = self.images["sample/000000.png"]
        noise = random.Random(self.args.seed).randbytes(4096)

        def req(image=None, model="demo", **kw):
            return s.SegmentRequest(model=model, image=image, **kw)
        enc = lambda data: c.Image(encoded=data)  # noqa: E731
        raw = lambda h, w, ch, data: c.Image(raw=c.RawImage(  # noqa: E731
            height=h, width=w, channels=ch, data=data))
        return [
            ("truncated-jpeg", req(enc(photo[:len(photo) // 2])), INVALID),
            ("random-bytes", req(enc(noise)), INVALID),
            ("jpeg-marker-then-noise", req(enc(b"\xff\xd8\xff\xe0" + noise)), INVALID),
            ("png-60000x60000", req(enc(giant_png_header(60000, 60000))), INVALID),
            ("raw-60000x60000", req(raw(60000, 60000, 3, b"\0" * 300)), INVALID),
            ("raw-short-data", req(raw(64, 64, 3, b"\0" * 100)), INVALID),
            ("raw-2-channels", req(raw(8, 8, 2, b"\0" * 128)), INVALID),
            ("empty-image", req(enc(b"")), INVALID),
            ("no-image", req(None), INVALID),
            ("alpha-nan", req(enc(sample), outputs=c.OutputOptions(
                overlay_png=True, overlay_alpha=float("nan"))), INVALID),
            ("alpha-1.5", req(enc(sample), outputs=c.OutputOptions(
                overlay_png=True, overlay_alpha=1.5)), INVALID),
            ("unknown-model", req(enc(sample), model="no_such_weight_set"),
             grpc.StatusCode.NOT_FOUND),
            ("no-model", req(enc(sample), model=""), INVALID),
            ("priority-99", req(enc(sample), priority=99), INVALID),
        ]

    def hostile_loop(self):
        rng = random.Random(self.args.seed * 100 + 50)
        hostile = self.hostile_requests()
        n = 0
        while not self.stop_traffic.is_set():
            kind, request, _ = hostile[n % len(hostile)]
            n += 1
            r = self.segmentation_pb2.SegmentRequest()
            r.CopyFrom(request)
            r.request_id = f"hostile-{n}"
            self.finish(self.issue("hostile", kind, r, HOSTILE_DEADLINE_S))
            time.sleep(rng.uniform(0.02, 0.1))

    def cancel_loop(self):
        rng = random.Random(self.args.seed * 100 + 60)
        keys = sorted(self.images)
        n = 0
        while not self.stop_traffic.is_set():
            key = rng.choice(keys)
            n += 1
            request = self.good_request(key, f"cancel-{n}")
            if n % 2:
                call = self.issue("cancelled", "short-deadline", request,
                                  rng.choice([0.002, 0.01, 0.03, 0.08]), image=key)
            else:
                call = self.issue("cancelled", "client-cancel", request, GOOD_DEADLINE_S,
                                  image=key, cancel_after=rng.uniform(0, 0.05))
            self.finish(call)
            time.sleep(rng.uniform(0, 0.05))

    def sample_loop(self):
        """VmRSS of every process once a second; a process that exits unasked is a failure."""
        while not self.stop_sampling.wait(1.0):
            for label, server in list(self.servers.items()):
                rss = server.rss_kib()
                if rss is not None:
                    self.rss_first.setdefault(label, rss)
                    self.rss_last[label] = rss
                    self.rss_max[label] = max(self.rss_max.get(label, 0), rss)
                code = server.proc.poll()
                if code is not None and not server.expected_exit:
                    server.expected_exit = True  # said once
                    self.failures.append(f"{label} exited unasked with code {code} at "
                                         f"t={time.monotonic() - self.traffic_start:.1f}s\n"
                                         f"{server.tail()}")
                    self.log(f"FAIL: {label} exited unasked ({code})")

    def sleep_until(self, at):
        time.sleep(max(0, self.traffic_start + at - time.monotonic()))

    def faults(self):
        a, b = self.servers["worker-a"], self.servers["worker-b"]
        self.sleep_until(KILL_AT_S)
        a.expected_exit = True
        a.signal(signal.SIGKILL)
        a.proc.wait()
        self.log(f"worker-a SIGKILLed (pid {a.proc.pid})")
        time.sleep(DEAD_FOR_S)
        port = a.address.rsplit(":", 1)[1]
        a2 = self.start_worker("worker-a-restarted", port)
        self.servers["worker-a-restarted"] = a2
        a2.wait_started("ready", 120)
        if a2.address != a.address:
            raise RuntimeError(f"the restarted worker listens on {a2.address}, not {a.address}")
        self.log(f"worker-a restarted on {a2.address} (pid {a2.proc.pid})")
        self.log(f"gateway lists worker-a ready again after "
                 f"{self.wait_listed_ready(a2.address, REJOIN_TIMEOUT_S):.1f} s")
        self.restarted_at = time.monotonic()
        time.sleep(BOTH_UP_S)
        b.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        self.log(f"worker-b SIGSTOPped (pid {b.proc.pid})")
        time.sleep(STOP_FOR_S)
        b.signal(signal.SIGCONT)
        self.stop_window = (stopped, time.monotonic())
        self.log("worker-b SIGCONTed")
        self.log(f"gateway lists worker-b ready again after "
                 f"{self.wait_listed_ready(b.address, REJOIN_TIMEOUT_S):.1f} s")
        if time.monotonic() - self.traffic_start > TRAFFIC_S - 10:
            self.failures.append("the fault schedule ran late: less than 10 s of traffic "
                                 "followed worker-b's SIGCONT (the machine is too slow?)")

    def run_traffic(self):
        self.stop_sampling = threading.Event()
        self.traffic_start = time.monotonic()
        self.metrics_before = self.requests_total()
        self.expected_codes = {kind: code for kind, _, code in self.hostile_requests()}
        threads = [threading.Thread(target=self.good_loop, args=(i,)) for i in range(GOOD_THREADS)]
        threads += [threading.Thread(target=self.hostile_loop),
                    threading.Thread(target=self.cancel_loop)]
        sampler = threading.Thread(target=self.sample_loop)
        for t in threads + [sampler]:
            t.start()
        self.log(f"traffic started: {GOOD_THREADS} good, 1 hostile, 1 cancelling client threads")
        try:
            self.faults()
            self.sleep_until(TRAFFIC_S)
        except Exception as e:  # noqa: BLE001 - the calls made so far are judged all the same
            self.failures.append(f"the fault schedule stopped: {type(e).__name__}: {e}")
            self.log("FAIL: the fault schedule stopped; stopping the traffic")
        finally:
            self.stop_traffic.set()
            for t in threads:
                t.join()
            self.log("traffic stopped; every call has ended")
            self.stop_sampling.set()
            sampler.join()

    def requests_total(self):
        """Sum of deeplab_gateway_requests_total over weight sets and codes."""
        url = f"http://{self.servers['gateway'].metrics}"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("deeplab_gateway_requests_total{"))

    # ---- verdicts ----

    def judge(self, call):
        """None when the call ended as it should, else what was wrong."""
        if call.problem:
            return call.problem
        if call.callbacks != 1:
            return f"done-callback ran {call.callbacks} times"
        took = call.end - call.start
        if took > call.timeout + HANG_MARGIN_S:
            return f"answered after {took:.1f} s, past its {call.timeout:.3f} s deadline + margin"
        if call.category == "hostile":
            want = self.expected_codes[call.kind]
            if call.code != want:
                return f"expected {want.name}, got {name(call.code)}: {call.details}"
            return None
        if call.code == OK:
            return self.check_labels(call)
        if call.category == "cancelled":
            allowed = (grpc.StatusCode.DEADLINE_EXCEEDED if call.kind == "short-deadline"
                       else grpc.StatusCode.CANCELLED)
            if call.code == allowed and (call.kind == "short-deadline" or call.cancel_accepted):
                return None
            return (f"expected {allowed.name} or OK, got {name(call.code)} (cancel() returned "
                    f"{call.cancel_accepted}): {call.details}")
        return f"expected OK, got {name(call.code)} after {took:.1f} s: {call.details}"

    def check_labels(self, call):
        r = call.response
        height, width = self.sizes[call.image]
        if r.request_id != call.request_id:
            return f"request_id {r.request_id!r} echoed for {call.request_id!r}"
        if (r.result.height, r.result.width) != (height, width):
            return f"label map is {r.result.width}x{r.result.height}, the image {width}x{height}"
        sha, labels = self.baseline[call.image]
        if hashlib.sha256(r.result.label_raw).hexdigest() != sha:
            return (f"label map differs from the quiet cluster's: {len(r.result.label_raw)} bytes,"
                    f" {differing(labels, r.result.label_raw)} pixels differ (worker "
                    f"{r.timing.worker}, batch of {r.timing.batch_size})")
        return None

    def in_stop_window(self, call):
        return (self.stop_window is not None and call.start < self.stop_window[1]
                and call.end is not None and call.end > self.stop_window[0])

    def verdicts(self):
        # A future's done-callbacks run just after its waiters wake: give them time to run
        # (and any second run time to show) before counting them.
        settle = time.monotonic() + 5
        while time.monotonic() < settle and any(
                c.callbacks == 0 and c.code != "HUNG" for c in self.calls):
            time.sleep(0.05)
        time.sleep(0.5)
        problems = collections.defaultdict(list)  # (category, kind) -> [(call, what)]
        for call in self.calls:
            what = self.judge(call)
            if what is not None:
                problems[(call.category, call.kind)].append((call, what))
        return problems

    def summary(self, problems, wall):
        counts = collections.defaultdict(collections.Counter)
        for call in self.calls:
            counts[(call.category, call.kind)][name(call.code)] += 1
        print("\n==== soak summary ====")
        print(f"wall time {wall:.1f} s (traffic {TRAFFIC_S} s), seed {self.args.seed}, "
              f"{len(self.calls)} calls")
        for category in ("good", "hostile", "cancelled"):
            total = collections.Counter()
            for (cat, _), c in counts.items():
                if cat == category:
                    total.update(c)
            print(f"  {category:9s} {sum(total.values()):6d}  {fmt(total)}")
            for (cat, kind), c in sorted(counts.items()):
                if cat == category:
                    print(f"      {kind:24s} {fmt(c)}")
        ok = [c for c in self.calls if c.code == OK]
        retried = sum(1 for c in ok if c.response.timing.attempts > 1)
        batches = collections.Counter(c.response.timing.batch_size for c in ok)
        by_worker = collections.Counter(c.response.timing.worker for c in ok)
        print(f"  OK answers by worker: {dict(by_worker)}; re-sent (attempts > 1): {retried}; "
              f"batch sizes: {dict(sorted(batches.items()))}")
        stop_deadlines = sum(1 for c in self.calls if c.category == "good"
                             and c.code == grpc.StatusCode.DEADLINE_EXCEEDED
                             and self.in_stop_window(c))
        print(f"  good calls DEADLINE_EXCEEDED while worker-b was stopped: {stop_deadlines}")
        if self.gateway_count:
            print(f"  {self.gateway_count}")
        slowest = max((c.end - c.start for c in self.calls if c.category == "good" and c.end),
                      default=0)
        print(f"  slowest good call: {slowest:.2f} s")
        print("  VmRSS per process (MiB): max, first and last sample, bound")
        for label in sorted(self.rss_max):
            limit = GATEWAY_RSS_LIMIT_MIB if label == "gateway" else WORKER_RSS_LIMIT_MIB
            print(f"      {label:20s} {self.rss_max[label] / 1024:7.1f} "
                  f"{self.rss_first[label] / 1024:7.1f} {self.rss_last[label] / 1024:7.1f}"
                  f"  {limit}")
        for (category, kind), items in sorted(problems.items()):
            print(f"  FAIL {category}/{kind}: {len(items)} calls, e.g.:")
            for call, what in items[:5]:
                at = call.start - self.traffic_start
                print(f"      {call.request_id} at t={at:.1f}s ({call.image or kind}): {what}")

    def final_checks(self):
        for label, server in self.servers.items():
            if server.proc.poll() is not None and not server.expected_exit:
                self.failures.append(f"{label} is not running at the end "
                                     f"(exit {server.proc.returncode})\n{server.tail()}")
        for label, kib in self.rss_max.items():
            limit = GATEWAY_RSS_LIMIT_MIB if label == "gateway" else WORKER_RSS_LIMIT_MIB
            if kib > limit * 1024:
                self.failures.append(f"{label} VmRSS reached {kib / 1024:.1f} MiB, over the "
                                     f"{limit} MiB bound")
        # The faults were exercised: each worker served after its fault, some batch was re-sent.
        ok = [c for c in self.calls if c.code == OK]
        if self.restarted_at is not None and not any(
                c.response.timing.worker == self.servers["worker-a-restarted"].address
                and c.start > self.restarted_at for c in ok):
            self.failures.append("the restarted worker-a answered no request")
        if self.stop_window is not None and not any(
                c.response.timing.worker == self.servers["worker-b"].address
                and c.start > self.stop_window[1] for c in ok):
            self.failures.append("worker-b answered no request after SIGCONT")
        if self.stop_window is not None and not any(c.response.timing.attempts > 1 for c in ok):
            self.failures.append("no answer took more than one attempt: neither fault caught a "
                                 "batch in flight, so re-sending went untested")
        # Exactly one answer, as the gateway counts: every call it got is counted once. Calls
        # the client gave up on within milliseconds may never have reached it.
        sent = len(self.calls)
        maybe_unsent = sum(1 for c in self.calls if c.category == "cancelled" and c.code != OK)
        counted = None
        for _ in range(50):
            try:
                counted = self.requests_total() - self.metrics_before
            except OSError as e:
                self.failures.append(f"the gateway's /metrics cannot be read: {e}")
                return
            if sent - maybe_unsent <= counted <= sent:
                break
            time.sleep(0.2)
        self.gateway_count = (f"gateway requests_total grew by {counted:.0f} for {sent} calls "
                              f"({maybe_unsent} given up on by the client)")
        if not sent - maybe_unsent <= counted <= sent:
            self.failures.append(f"the gateway counted {counted:.0f} answered requests for {sent} "
                                 f"calls sent ({maybe_unsent} given up on by the client): "
                                 f"some were answered twice or never")
        # The gateway still answers.
        key = "photo/image2.jpg"
        try:
            r = self.stub.Segment(self.good_request(key, "final"), timeout=30)
            last = Call("final", "final", "final", key, 30)
            last.response = r
            what = self.check_labels(last)
            if what:
                self.failures.append(f"the final request's answer is wrong: {what}")
        except grpc.RpcError as e:
            self.failures.append(f"the final request failed: {name(e.code())}: {e.details()}")

    def shutdown(self):
        """The gateway first, then the workers; each must exit 0 (drained)."""
        for label, server in sorted(self.servers.items(), key=lambda item: item[0] != "gateway"):
            if label == "worker-a":
                continue
            code = server.stop()
            if code != 0 and not server.expected_exit:
                self.failures.append(f"{label} exited {code} on SIGTERM (not 0)\n{server.tail()}")


def name(code):
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


def fmt(counter):
    return ", ".join(f"{k} {v}" for k, v in counter.most_common())


def differing(a, b):
    if len(a) != len(b):
        return "all"
    return sum(1 for x, y in zip(a, b) if x != y)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--photos", required=True)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    start = time.monotonic()

    stubs = tempfile.mkdtemp(prefix="deeplab_soak_stubs_")
    generate_stubs(args.source, stubs)
    from deeplab.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc  # noqa: E402

    soak = Soak(args, (common_pb2, segmentation_pb2, segmentation_pb2_grpc))
    soak.load_images()
    problems = {}
    try:
        soak.start_cluster()
        soak.record_baseline()
        soak.run_traffic()
        problems = soak.verdicts()
        soak.final_checks()
    except Exception as e:  # noqa: BLE001 - reported with the logs, then the cluster stops
        soak.failures.append(f"{type(e).__name__}: {e}")
        for server in soak.servers.values():
            soak.failures[-1] += "\n" + server.tail(8)
    finally:
        soak.shutdown()
    wall = time.monotonic() - start
    if soak.traffic_start is not None:
        soak.summary(problems, wall)
    for failure in soak.failures:
        print(f"FAIL {failure}")
    failed = bool(problems) or bool(soak.failures)
    if failed:
        print(f"soak test FAILED in {wall:.1f} s; the servers' logs are in {soak.tmp}")
        return 1
    shutil.rmtree(soak.tmp, ignore_errors=True)
    shutil.rmtree(stubs, ignore_errors=True)
    print(f"soak test passed in {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
