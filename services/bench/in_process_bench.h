// deeplab-bench --in-process: the ceiling of one worker, without gRPC or a gateway. Loads a
// weight set from a model repository with the worker's own engine (same loading, warm-up,
// BatchNorm folding and layout choices as deeplab-worker) and runs batches of the given
// images through decode -> preprocess -> forward -> postprocess -> encode at each batch size,
// with as many batches in flight as a worker's batch slots (so decoding overlaps the forward
// pass, as in the worker).
//
// The header is free of LibTorch so that the main program compiles without it.
#ifndef DEEPLAB_SERVICES_BENCH_IN_PROCESS_BENCH_H_
#define DEEPLAB_SERVICES_BENCH_IN_PROCESS_BENCH_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "deeplab/v1/common.pb.h"
#include "services/bench/bench_inputs.h"
#include "services/bench/bench_stats.h"

namespace deeplab::bench {

struct InProcessOptions {
  std::string models;  // model repository folder
  std::string model;   // weight set name
  std::vector<BenchImage> images;
  v1::OutputOptions outputs;
  // Empty: 1, 2, 4, ... up to the weight set's batching.max_batch_size (what the gateway
  // would send it).
  std::vector<int> batch_sizes;
  absl::Duration warmup = absl::Seconds(2);
  absl::Duration duration = absl::Seconds(10);
  // When positive, each batch size runs until this many images were measured instead.
  int64_t requests = 0;
  int threads = 0;           // LibTorch intra-op threads; 0: one per core
  int instances = 0;         // forward passes at once, as deeplab-worker --instances
  bool share_threads = true;  // as deeplab-worker --share-threads
  int pipeline_threads = 0;  // decode/encode threads; 0: one per core
  std::string device = "cpu";
  int batch_slots = 0;  // batches in flight, as deeplab-worker --batch-slots (0: its default)
  std::string precision = "config";  // as deeplab-worker --precision
  std::string layout = "auto";       // as deeplab-worker --layout
  bool reduced_decode = true;        // as deeplab-worker --reduced-decode
  int decode_threads = 0;            // as deeplab-worker --decode-threads
};

// Filled before the first batch size runs.
struct InProcessInfo {
  std::string runtime;  // e.g. "cpu fp32"
  std::vector<int> batch_sizes;
};

// INVALID_ARGUMENT for a precision or layout name deeplab-worker would refuse.
absl::Status CheckInProcessOptions(const InProcessOptions& options);

// Loads the weight set, then runs each batch size, calling `on_start` once loaded and
// `on_step` after each batch size. NOT_FOUND: no such repository or weight set (the message
// lists those there); FAILED_PRECONDITION: the weight set does not load (with the reason).
absl::Status RunInProcess(const InProcessOptions& options,
                          const std::function<void(const InProcessInfo&)>& on_start,
                          const std::function<void(const BatchStepResult&)>& on_step);

}  // namespace deeplab::bench

#endif  // DEEPLAB_SERVICES_BENCH_IN_PROCESS_BENCH_H_
