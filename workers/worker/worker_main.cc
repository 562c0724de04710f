// deeplab-worker: hosts the weight sets of a model repository and serves deeplab.v1.Worker.
//   deeplab-worker --models models/ --port 8001 --metrics-port 9101 [--device cpu|cuda[:K]]
//                  [--load NAME,...] [--threads N]
#include <ATen/Parallel.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/cpu_count.h"
#include "common/nvml.h"
#include "common/process_metrics.h"
#include "common/server_flags.h"
#include "common/server_main.h"
#include "workers/model/onednn_cache.h"
#include "workers/worker/engine.h"
#include "workers/worker/worker_service.h"

ABSL_FLAG(std::string, models, "models", "Model repository folder");
ABSL_FLAG(int, port, 8001, "gRPC port; 0 picks a free one (printed at start)");
ABSL_FLAG(int, metrics_port, 9101, "Prometheus /metrics port; 0 picks a free one");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:K");
ABSL_FLAG(std::vector<std::string>, load, {},
          "Weight sets to load (comma-separated); default: all in the repository");
ABSL_FLAG(int, threads, 0,
          "LibTorch intra-op threads; 0: one per usable core (the affinity mask's CPUs, capped "
          "by a cgroup CPU quota)");
ABSL_FLAG(int, pipeline_threads, 0, "Decode/encode threads; 0: one per usable core");
ABSL_FLAG(int, instances, 0,
          "Forward passes run at once; 0: 2 on a CPU (one pass over a small input leaves "
          "cores idle, see docs/BENCHMARKS.md), 1 on CUDA");
ABSL_FLAG(bool, share_threads, true,
          "On a CPU, forward passes that run at once share the --threads (at least one "
          "each) and a pass alone takes them all; false: every pass takes them all");
ABSL_FLAG(int, batch_slots, 0,
          "Batches in flight at once (see Status.free_batch_slots); 0: instances + 1 on a "
          "CPU, 2 x instances + 1 on CUDA (each instance keeps two batches on the device)");
ABSL_FLAG(std::string, precision, "config",
          "Precision of every weight set: config (each config's own; the shipped ones say "
          "auto), auto, fp32, bf16 or fp16");
ABSL_FLAG(std::string, layout, "auto",
          "Network memory layout: auto (time NCHW and channels-last at warm-up, keep the "
          "faster), nchw or channels_last");
ABSL_FLAG(int, max_forward_batch, 32, "Largest forward pass, in network inputs");
ABSL_FLAG(int, primitive_cache_capacity, deeplab::kDefaultPrimitiveCacheCapacity,
          "oneDNN primitives kept built (one per convolution shape and batch size; oneDNN's "
          "own default of 1024 is too few for batch sizes 1 to 32 at once). The environment's "
          "ONEDNN_PRIMITIVE_CACHE_CAPACITY wins where set");
ABSL_FLAG(int64_t, max_image_bytes, 64 << 20, "Largest encoded image accepted, in bytes");
ABSL_FLAG(int64_t, max_image_pixels, 50'000'000, "Largest decoded image, in pixels");
ABSL_FLAG(bool, reduced_decode, true,
          "Decode a JPEG at 1/2, 1/4 or 1/8 scale when the network input is that much smaller "
          "(not for tiled weight sets; an overlay decodes the image whole as well); outputs stay "
          "at the original size. --reduced-decode=false decodes every image whole");
ABSL_FLAG(int, decode_threads, 0,
          "Threads one large reduced JPEG with restart markers (as phone cameras write them) is "
          "decoded on, in horizontal bands with the same pixels as one thread; 0: one per core "
          "(at most 8), 1: one thread");
ABSL_FLAG(int, max_message_mb, 512, "Largest gRPC message, in MiB (see deeplab-gateway)");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(60),
          "On SIGTERM, how long in-flight batches may take to finish");

namespace {

// The GPU behind --device cuda[:K], for deeplab_device_memory_*; nullptr on a CPU, or with
// a line saying why the metrics are off when NVML cannot be used (the worker runs anyway).
std::unique_ptr<deeplab::NvmlDevice> OpenGpuForMetrics(const std::string& device) {
  // Parsed as the model loader parses it, which reports a bad --device.
  c10::Device parsed(c10::kCPU);
  try {
    parsed = c10::Device(device);
  } catch (const c10::Error&) {
    return nullptr;
  }
  if (!parsed.is_cuda()) return nullptr;
  absl::StatusOr<deeplab::NvmlDeviceRef> which = deeplab::ResolveNvmlDevice(
      parsed.has_index() ? parsed.index() : 0, std::getenv("CUDA_VISIBLE_DEVICES"));
  absl::StatusOr<std::unique_ptr<deeplab::NvmlDevice>> gpu =
      which.ok() ? deeplab::NvmlDevice::Open(*which) : which.status();
  if (!gpu.ok()) {
    std::cerr << "deeplab-worker: device memory metrics off: " << gpu.status().message()
              << std::endl;
    return nullptr;
  }
  return *std::move(gpu);
}

int Run() {
  deeplab::BlockStopSignals();
  // Before loading anything: a bad certificate is a bad command line.
  absl::StatusOr<deeplab::ServerOptions> server_options = deeplab::ServerOptionsFromFlags(
      absl::GetFlag(FLAGS_port), absl::GetFlag(FLAGS_metrics_port));
  if (!server_options.ok()) {
    std::cerr << "deeplab-worker: " << server_options.status().message() << "\n";
    return 2;
  }
  const deeplab::ServerTlsOptions& tls = server_options->tls;
  // Its affinity mask and cgroup CPU quota, not the machine's CPUs (a container limited to
  // 2 CPUs on a large node would otherwise run dozens of threads on them).
  const int cores = deeplab::UsableCores().usable;
  const int threads = absl::GetFlag(FLAGS_threads) > 0 ? absl::GetFlag(FLAGS_threads) : cores;
  at::set_num_threads(threads);
  // Before the first convolution (loading warms every weight set up): oneDNN reads it once.
  if (absl::GetFlag(FLAGS_primitive_cache_capacity) < 0) {
    std::cerr << "deeplab-worker: --primitive-cache-capacity must be 0 (no cache) or more, got "
              << absl::GetFlag(FLAGS_primitive_cache_capacity) << "\n";
    return 2;
  }
  deeplab::RequestPrimitiveCacheCapacity(absl::GetFlag(FLAGS_primitive_cache_capacity));

  deeplab::WorkerOptions options;
  options.runtime.device = absl::GetFlag(FLAGS_device);
  absl::StatusOr<deeplab::LayoutChoice> layout =
      deeplab::ParseLayoutChoice(absl::GetFlag(FLAGS_layout));
  absl::StatusOr<std::optional<deeplab::Precision>> precision =
      deeplab::ParsePrecisionOverride(absl::GetFlag(FLAGS_precision));
  for (const absl::Status& s : {layout.status(), precision.status()}) {
    if (!s.ok()) {
      std::cerr << "deeplab-worker: --" << s.message() << "\n";
      return 2;
    }
  }
  options.layout = *layout;
  options.precision = *precision;
  options.limits.max_bytes = absl::GetFlag(FLAGS_max_image_bytes);
  options.limits.max_pixels = absl::GetFlag(FLAGS_max_image_pixels);
  options.reduced_decode = absl::GetFlag(FLAGS_reduced_decode);
  options.decode_threads = absl::GetFlag(FLAGS_decode_threads);
  if (options.decode_threads < 0) {
    std::cerr << "deeplab-worker: --decode-threads must be 0 (one per core) or more, got "
              << options.decode_threads << "\n";
    return 2;
  }
  const int instances =
      deeplab::DefaultInstances(absl::GetFlag(FLAGS_instances), options.runtime.device);
  options.instances = instances;
  options.share_intra_op_threads = absl::GetFlag(FLAGS_share_threads);
  options.batch_slots = deeplab::DefaultBatchSlots(absl::GetFlag(FLAGS_batch_slots), instances,
                                                   options.runtime.device);
  options.max_forward_batch = std::max(1, absl::GetFlag(FLAGS_max_forward_batch));
  options.pipeline_threads =
      absl::GetFlag(FLAGS_pipeline_threads) > 0 ? absl::GetFlag(FLAGS_pipeline_threads) : cores;

  auto registry = std::make_shared<prometheus::Registry>();
  deeplab::WorkerMetrics metrics(*registry);
  deeplab::WorkerEngine engine(options, &metrics);
  deeplab::WorkerService service(&engine);
  const std::vector<std::string> kHealthNames = {"deeplab.v1.Worker"};
  server_options->max_receive_bytes = server_options->max_send_bytes =
      absl::GetFlag(FLAGS_max_message_mb) << 20;
  const std::string& host = server_options->host;
  absl::StatusOr<deeplab::ServerEndpoints> endpoints =
      deeplab::StartServer(*server_options, {&service}, kHealthNames);
  if (!endpoints.ok()) {
    std::cerr << "deeplab-worker: " << endpoints.status().message() << "\n";
    return 1;
  }
  // The exposer holds collectables weakly: keep them alive for the life of the process.
  std::shared_ptr<deeplab::NvmlDevice> gpu = OpenGpuForMetrics(options.runtime.device);
  std::shared_ptr<prometheus::Collectable> process_metrics = deeplab::MakeProcessCollector(
      gpu == nullptr ? deeplab::DeviceMemoryReader() : deeplab::NvmlDevice::Reader(gpu));
  endpoints->exposer->RegisterCollectable(registry);
  endpoints->exposer->RegisterCollectable(process_metrics);
  grpc::Server& server = *endpoints->server;
  // Tests and launchers read these two lines to learn the ports.
  std::cout << "deeplab-worker: grpc " << host << ":" << endpoints->port << std::endl;
  std::cout << "deeplab-worker: metrics " << server_options->metrics_host << ":"
            << endpoints->metrics_port << "/metrics" << std::endl;
  if (tls.enabled()) {
    std::cout << "deeplab-worker: TLS on"
              << (tls.client_ca_file.empty() ? "" : ", client certificates required") << std::endl;
  }
  std::cout << "deeplab-worker: cores " << deeplab::UsableCores().Describe() << ", threads "
            << threads << ", pipeline threads " << options.pipeline_threads << ", instances "
            << instances;
  if (std::optional<int> capacity = deeplab::PrimitiveCacheCapacity(); capacity.has_value()) {
    std::cout << ", oneDNN primitive cache " << *capacity;
  }
  std::cout << std::endl;

  // Status answers while the weight sets load; health turns SERVING only after.
  if (absl::Status s = engine.LoadRepository(absl::GetFlag(FLAGS_models), absl::GetFlag(FLAGS_load));
      !s.ok()) {
    std::cerr << "deeplab-worker: " << s.message() << "\n";
    server.Shutdown();
    return 1;
  }
  const bool ready = engine.AnyReady();
  deeplab::SetHealth(server, kHealthNames, ready);
  std::cout << "deeplab-worker: " << (ready ? "ready" : "no weight set is ready (see Status)")
            << std::endl;

  const int signal_number = deeplab::WaitForStopSignal();
  // Refuse new batches before saying so: launchers and tests take the line to mean that
  // draining has begun.
  engine.StartDrain();
  deeplab::SetHealth(server, kHealthNames, false);
  std::cout << "deeplab-worker: signal " << signal_number << ", draining" << std::endl;
  const bool drained = engine.WaitIdle(absl::GetFlag(FLAGS_drain_timeout));
  server.Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  std::cout << "deeplab-worker: " << (drained ? "drained, stopped" : "drain timed out, stopped")
            << std::endl;
  return drained ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serves the weight sets of a model repository over gRPC (deeplab.v1.Worker).\n"
      "Usage: deeplab-worker --models DIR --port N --metrics-port N [--device cpu|cuda[:K]] "
      "[--load NAME,...] [--threads N]");
  deeplab::ParseCommandLineWithDashes(argc, argv, "workers/");
  return Run();
}
