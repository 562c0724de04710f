// deeplab-bench: a load generator for a deeplab gateway (in the spirit of Triton's
// perf_analyzer), or for one worker directly (the gateway's overhead is the difference), and
// the in-process ceiling of one worker.
//   deeplab-bench --server 127.0.0.1:8000 --model demo --images photos/ --concurrency 1,2,4,8
//   deeplab-bench --server 127.0.0.1:8000 --model demo --image cat.jpg --rate 5,10,20
//   deeplab-bench --target worker --server 127.0.0.1:8001 --model demo --images photos/ --rate 5
//   deeplab-bench --in-process --models models/ --model demo --image cat.jpg --batch-sizes 1,4
// Exit codes: 0 the run completed (errors, if any, are in the report), 2 bad arguments,
// 3 the gateway or worker is unreachable or the weight set unknown or not ready (or,
// in-process, not in the repository or not loading).
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/server_main.h"
#include "services/bench/bench_inputs.h"
#include "services/bench/bench_report.h"
#include "services/bench/in_process_bench.h"
#include "services/bench/load_generator.h"

ABSL_FLAG(std::string, server, "", "Gateway address host:port (a worker's with --target worker)");
ABSL_FLAG(std::string, target, "gateway",
          "What --server is: gateway (Segment calls) or worker (one-image Worker/Infer calls "
          "straight to it, to measure the gateway's overhead against a gateway run; unary "
          "only)");
ABSL_FLAG(std::string, model, "", "Weight set to benchmark (see ListModels)");
ABSL_FLAG(std::string, image, "", "An image file to send (its encoded bytes)");
ABSL_FLAG(std::string, images, "", "A folder: every image in it is sent, round-robin");
ABSL_FLAG(std::vector<std::string>, concurrency, {},
          "Closed loop: clients, one request in flight each; a list runs one step per value");
ABSL_FLAG(std::vector<std::string>, rate, {},
          "Open loop: requests per second; a list runs one step per value");
ABSL_FLAG(std::string, arrivals, "constant",
          "Open-loop arrivals: constant (evenly spaced) or poisson");
ABSL_FLAG(int, max_in_flight, 1024,
          "Open loop: outstanding requests at most; arrivals beyond are dropped by the client");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "Measured time per step");
ABSL_FLAG(int64_t, requests, 0,
          "Measured requests per step instead of --duration (images per batch size "
          "in-process); 0: use --duration");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(2), "Unmeasured warm-up before each step");
ABSL_FLAG(std::string, mode, "unary", "unary (Segment) or stream (SegmentStream)");
ABSL_FLAG(int, streams, 1, "Open loop in stream mode: streams the requests are spread over");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30),
          "Deadline of each unary call; for streams, how long answers may stop coming at the "
          "end of a step before the rest count as DEADLINE_EXCEEDED");
ABSL_FLAG(absl::Duration, wait_ready, absl::ZeroDuration(),
          "How long to wait for the weight set to be ready on the gateway or worker (a cluster "
          "just started); 0: it must be ready at once");
ABSL_FLAG(std::vector<std::string>, outputs, {"class_stats"},
          "Outputs to ask for: label_png,label_raw,probabilities,overlay_png,class_stats");
ABSL_FLAG(bool, json, false, "Print one JSON document with every step instead of a table");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the Poisson arrivals");
ABSL_FLAG(bool, in_process, false,
          "Run the worker's engine in this process (no gRPC): the ceiling of one worker");
ABSL_FLAG(std::string, models, "models", "In-process: model repository folder");
ABSL_FLAG(std::vector<std::string>, batch_sizes, {},
          "In-process: batch sizes; default 1,2,4,... up to the weight set's max_batch_size");
ABSL_FLAG(int, threads, 0, "In-process: LibTorch intra-op threads; 0: one per usable core");
ABSL_FLAG(int, instances, 0,
          "In-process: forward passes at once, as deeplab-worker --instances (0: 2 on a CPU, 1 on CUDA)");
ABSL_FLAG(bool, share_threads, true,
          "In-process: forward passes at once share the intra-op threads, as deeplab-worker "
          "--share-threads");
ABSL_FLAG(int, pipeline_threads, 0, "In-process: decode/encode threads; 0: one per usable core");
ABSL_FLAG(int, batch_slots, 0,
          "In-process: batches in flight, as deeplab-worker --batch-slots (0: its default)");
ABSL_FLAG(std::string, device, "cpu", "In-process: cpu, cuda or cuda:K");
ABSL_FLAG(std::string, precision, "config",
          "In-process: config, auto, fp32, bf16 or fp16, as deeplab-worker --precision");
ABSL_FLAG(std::string, layout, "auto",
          "In-process: auto, nchw or channels_last, as deeplab-worker --layout");
ABSL_FLAG(bool, reduced_decode, true,
          "In-process: decode JPEGs at a reduced scale where the input allows, as "
          "deeplab-worker --reduced-decode");
ABSL_FLAG(int, decode_threads, 0,
          "In-process: threads for one large reduced JPEG with restart markers, as "
          "deeplab-worker --decode-threads (0: one per core, 1: one)");

namespace deeplab::bench {
namespace {

constexpr int kExitBadArguments = deeplab::kExitBadCommandLine;
constexpr int kExitUnusableTarget = 3;

int BadArguments(const std::string& message) {
  std::cerr << "deeplab-bench: " << message << "\n(see deeplab-bench --help)\n";
  return kExitBadArguments;
}

// The part of RunInfo every mode shares.
RunInfo CommonInfo(int images) {
  RunInfo info;
  info.model = absl::GetFlag(FLAGS_model);
  info.images = images;
  info.outputs = absl::GetFlag(FLAGS_outputs);
  info.warmup_seconds = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_warmup));
  info.requests = absl::GetFlag(FLAGS_requests);
  if (info.requests <= 0) {
    info.duration_seconds = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_duration));
  }
  return info;
}

int RunInProcessMode(const std::vector<BenchImage>& images, const v1::OutputOptions& outputs) {
  InProcessOptions options;
  options.models = absl::GetFlag(FLAGS_models);
  options.model = absl::GetFlag(FLAGS_model);
  options.images = images;
  options.outputs = outputs;
  auto sizes = ParsePositiveInts("batch-sizes", absl::GetFlag(FLAGS_batch_sizes));
  if (!sizes.ok()) return BadArguments(std::string(sizes.status().message()));
  options.batch_sizes = *sizes;
  options.warmup = absl::GetFlag(FLAGS_warmup);
  options.duration = absl::GetFlag(FLAGS_duration);
  options.requests = absl::GetFlag(FLAGS_requests);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.instances = absl::GetFlag(FLAGS_instances);
  options.share_threads = absl::GetFlag(FLAGS_share_threads);
  options.pipeline_threads = absl::GetFlag(FLAGS_pipeline_threads);
  options.batch_slots = absl::GetFlag(FLAGS_batch_slots);
  options.device = absl::GetFlag(FLAGS_device);
  options.precision = absl::GetFlag(FLAGS_precision);
  options.layout = absl::GetFlag(FLAGS_layout);
  options.reduced_decode = absl::GetFlag(FLAGS_reduced_decode);
  options.decode_threads = absl::GetFlag(FLAGS_decode_threads);
  if (absl::Status s = CheckInProcessOptions(options); !s.ok()) {
    return BadArguments(std::string(s.message()));
  }

  const bool json = absl::GetFlag(FLAGS_json);
  RunInfo info = CommonInfo(static_cast<int>(images.size()));
  info.target = "in-process";
  info.models = options.models;
  info.mode = "in-process";
  std::vector<BatchStepResult> steps;
  const absl::Status status = RunInProcess(
      options,
      [&](const InProcessInfo& started) {
        info.device = started.runtime;
        if (json) return;
        std::cout << "deeplab-bench: in-process, weight set " << options.model << " ("
                  << started.runtime << "), " << images.size() << " image(s), batch sizes "
                  << absl::StrJoin(started.batch_sizes, ",") << "\n"
                  << BatchTableHeader() << std::flush;
      },
      [&](const BatchStepResult& step) {
        steps.push_back(step);
        if (!json) std::cout << BatchTableRow(step) << std::flush;
      });
  if (!status.ok()) {
    std::cerr << "deeplab-bench: " << status.message() << "\n";
    return status.code() == absl::StatusCode::kInvalidArgument ? kExitBadArguments
                                                               : kExitUnusableTarget;
  }
  std::cout << (json ? BatchJson(info, steps) : BatchTableFooter(steps)) << std::flush;
  return 0;
}

int RunAgainstServer(const std::vector<BenchImage>& images, const v1::OutputOptions& outputs) {
  const std::string server = absl::GetFlag(FLAGS_server);
  const auto concurrency = ParsePositiveInts("concurrency", absl::GetFlag(FLAGS_concurrency));
  if (!concurrency.ok()) return BadArguments(std::string(concurrency.status().message()));
  const auto rates = ParsePositiveNumbers("rate", absl::GetFlag(FLAGS_rate));
  if (!rates.ok()) return BadArguments(std::string(rates.status().message()));
  if (concurrency->empty() == rates->empty()) {
    return BadArguments("give exactly one of --concurrency N[,N...] and --rate R[,R...]");
  }
  const std::string target = absl::GetFlag(FLAGS_target);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const std::string arrivals = absl::GetFlag(FLAGS_arrivals);
  if (mode != "unary" && mode != "stream") return BadArguments("--mode must be unary or stream");
  if (target == "worker" && mode == "stream") {
    return BadArguments(
        "--target worker takes unary calls only (a worker has no stream API): "
        "drop --mode stream");
  }
  if (arrivals != "constant" && arrivals != "poisson") {
    return BadArguments("--arrivals must be constant or poisson");
  }
  if (absl::GetFlag(FLAGS_max_in_flight) < 1 || absl::GetFlag(FLAGS_streams) < 1) {
    return BadArguments("--max-in-flight and --streams must be at least 1");
  }
  if (absl::GetFlag(FLAGS_timeout) <= absl::ZeroDuration()) {
    return BadArguments("--timeout must be positive");
  }

  LoadOptions options;
  options.model = absl::GetFlag(FLAGS_model);
  options.images = images;
  options.outputs = outputs;
  options.stream = mode == "stream";
  options.direct_to_worker = target == "worker";
  options.streams = absl::GetFlag(FLAGS_streams);
  options.warmup = absl::GetFlag(FLAGS_warmup);
  options.duration = absl::GetFlag(FLAGS_duration);
  options.requests = absl::GetFlag(FLAGS_requests);
  options.timeout = absl::GetFlag(FLAGS_timeout);
  options.poisson = arrivals == "poisson";
  options.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  options.seed = absl::GetFlag(FLAGS_seed);

  auto channel = MakeChannel(server);
  // At most 10 s to find the server: a typo should not hang for the whole --timeout.
  const absl::Duration connect_timeout = std::min(options.timeout, absl::Seconds(10));
  absl::StatusOr<v1::ModelInfo> model =
      options.direct_to_worker ? CheckWorkerModel(channel, server, options.model, connect_timeout,
                                                  absl::GetFlag(FLAGS_wait_ready))
                               : CheckModel(channel, server, options.model, connect_timeout,
                                            absl::GetFlag(FLAGS_wait_ready));
  if (!model.ok()) {
    std::cerr << "deeplab-bench: " << model.status().message() << "\n";
    return kExitUnusableTarget;
  }

  const bool json = absl::GetFlag(FLAGS_json);
  const std::string load = concurrency->empty() ? "rate" : "concurrency";
  RunInfo info = CommonInfo(static_cast<int>(images.size()));
  info.target = target;
  info.server = server;
  info.mode = mode;
  if (load == "rate") info.arrivals = arrivals;
  if (!json) {
    std::cout << "deeplab-bench: " << target << " " << server << ", weight set " << options.model
              << " (" << model->num_classes() << " classes, input " << model->input_height() << "x"
              << model->input_width() << ", max batch " << model->max_batch_size() << "), " << mode
              << ", " << images.size() << " image(s), outputs " << absl::StrJoin(info.outputs, ",")
              << "\n"
              << "warm-up " << absl::FormatDuration(options.warmup) << ", then "
              << (options.requests > 0 ? absl::StrCat(options.requests, " requests")
                                       : absl::FormatDuration(options.duration))
              << " per step" << (load == "rate" ? absl::StrCat(", ", arrivals, " arrivals") : "")
              << "\n"
              << LoadTableHeader(load) << std::flush;
  }
  LoadGenerator generator(channel, options);
  std::vector<StepResult> steps;
  auto report = [&](StepResult step) {
    if (!json) std::cout << LoadTableRow(step) << std::flush;
    steps.push_back(std::move(step));
  };
  for (int clients : *concurrency) report(generator.RunConcurrency(clients));
  for (double rate : *rates) report(generator.RunRate(rate));
  if (json) std::cout << LoadJson(info, steps) << std::flush;
  return 0;
}

int Run() {
  if (absl::GetFlag(FLAGS_model).empty()) return BadArguments("--model is required");
  if (absl::GetFlag(FLAGS_warmup) < absl::ZeroDuration() ||
      (absl::GetFlag(FLAGS_requests) <= 0 &&
       absl::GetFlag(FLAGS_duration) <= absl::ZeroDuration())) {
    return BadArguments(
        "--duration must be positive (or give --requests) and --warmup not negative");
  }
  absl::StatusOr<v1::OutputOptions> outputs = ParseOutputs(absl::GetFlag(FLAGS_outputs));
  if (!outputs.ok()) return BadArguments(std::string(outputs.status().message()));
  absl::StatusOr<std::vector<BenchImage>> images =
      LoadImages(absl::GetFlag(FLAGS_image), absl::GetFlag(FLAGS_images));
  if (!images.ok()) return BadArguments(std::string(images.status().message()));

  const std::string target = absl::GetFlag(FLAGS_target);
  if (target != "gateway" && target != "worker") {
    return BadArguments("--target must be gateway or worker");
  }
  if (absl::GetFlag(FLAGS_in_process)) {
    if (!absl::GetFlag(FLAGS_server).empty()) {
      return BadArguments("--in-process runs without a server: drop --server");
    }
    if (target != "gateway") {
      return BadArguments("--in-process runs the worker's engine itself: drop --target");
    }
    return RunInProcessMode(*images, *outputs);
  }
  if (absl::GetFlag(FLAGS_server).empty()) {
    return BadArguments("--server host:port is required (or --in-process --models DIR)");
  }
  return RunAgainstServer(*images, *outputs);
}

}  // namespace
}  // namespace deeplab::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Measures a deeplab gateway under load, one worker directly (--target worker: the\n"
      "gateway's overhead is the difference between the two runs), or one worker's ceiling\n"
      "in-process.\n"
      "Usage:\n"
      "  deeplab-bench --server ADDR --model NAME (--image FILE | --images DIR)\n"
      "                (--concurrency N[,N...] | --rate R[,R...] [--arrivals constant|poisson])\n"
      "                [--duration 10s | --requests K] [--warmup 2s] [--mode unary|stream]\n"
      "                [--timeout 30s] [--outputs class_stats,...] [--wait-ready 0s] [--json]\n"
      "  deeplab-bench --target worker --server WORKER_ADDR --model NAME ...\n"
      "                (the same options, unary only)\n"
      "  deeplab-bench --in-process --models DIR --model NAME (--image FILE | --images DIR)\n"
      "                [--batch-sizes 1,2,4,8] [--duration 10s] [--instances N] [--threads N] [--device cpu]\n"
      "                [--json]\n"
      "Exit codes: 0 completed, 2 bad arguments, 3 gateway or worker unreachable or weight set "
      "unknown or not ready.");
  // An unknown flag or a malformed value is exit code 2 there.
  const std::vector<char*> positional =
      deeplab::ParseCommandLineWithDashes(argc, argv, "services/bench/");
  if (positional.size() > 1) {
    return deeplab::bench::BadArguments(absl::StrCat("unexpected argument '", positional[1], "'"));
  }
  return deeplab::bench::Run();
}
