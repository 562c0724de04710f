// deeplab-bench's statistics: which requests of a step count (warm-up, then a window of
// time or a number of requests), latency percentiles, throughput, errors by status code, and
// the gateway's batching figures. Pure computations on timestamps that the caller supplies,
// so they are tested without clocks or sleeps.
//
// Not thread-safe: the load generator guards each object with its own mutex.
#ifndef DEEPLAB_SERVICES_BENCH_BENCH_STATS_H_
#define DEEPLAB_SERVICES_BENCH_BENCH_STATS_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace deeplab::bench {

// Which requests of a step are measured. Requests sent during the warm-up are not counted
// (they fill the gateway's queues and the worker's caches); then either `requests` requests
// (when positive) or every request sent within `duration` are measured, but at least
// `min_measured` (so that a step whose requests each outlast the duration still measures
// some); after that the step sends nothing more.
class MeasurementWindow {
 public:
  enum class Phase { kWarmUp, kMeasured, kDone };

  MeasurementWindow(absl::Time start, absl::Duration warmup, absl::Duration duration,
                    int64_t requests, int64_t min_measured = 0);

  // Classifies a request about to be sent at `now` (times must not go backwards by more
  // than the callers' own jitter; the window only compares them with its bounds).
  Phase OnSend(absl::Time now);

 private:
  const absl::Time measure_start_;
  const absl::Duration duration_;
  const int64_t requests_;
  const int64_t min_measured_;
  int64_t measured_ = 0;
  bool done_ = false;
};

// Milliseconds, nearest-rank percentiles (the smallest value with at least p% of the values
// at or below it: always an observed latency, never an interpolation).
struct LatencySummary {
  int64_t count = 0;
  double mean_ms = 0;
  double p50_ms = 0;
  double p90_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
};

// p in (0, 100]; `sorted` ascending and not empty.
double Percentile(const std::vector<double>& sorted, double p);
// Any order; all zero when empty.
LatencySummary Summarize(std::vector<double> values_ms);

// One answered request. The timing fields come from SegmentResponse.timing and are read for
// OK answers only.
struct Sample {
  absl::Time sent;
  absl::Time answered;
  absl::StatusCode code = absl::StatusCode::kOk;
  int batch_size = 0;
  double queue_seconds = 0;
  double compute_seconds = 0;
};

// What one step (one concurrency level or one rate) measured.
struct StepResult {
  std::string load;  // "concurrency" or "rate"
  double level = 0;  // clients, or requests per second
  int64_t ok = 0;
  // Failed requests by gRPC status code name ("UNAVAILABLE"), and arrivals the client did
  // not send because --max-in-flight requests were already outstanding (rate mode).
  std::map<std::string, int64_t> errors;
  int64_t dropped = 0;
  // From the first measured request's send to the last measured answer.
  double seconds = 0;
  double throughput = 0;   // OK answers per second over `seconds`
  LatencySummary latency;  // of OK answers: refusals return at once and would flatter it
  double mean_batch_size = 0;
  double mean_queue_ms = 0;
  double mean_compute_ms = 0;

  int64_t error_count() const;
};

// Accumulates the measured requests of one step.
class StepStats {
 public:
  StepStats(std::string load, double level) : load_(std::move(load)), level_(level) {}

  void Add(const Sample& sample);
  void AddDropped(absl::Time at);
  StepResult Finish() const;

 private:
  // Extends [first_, last_] to cover `t`.
  void Cover(absl::Time t);

  const std::string load_;
  const double level_;
  std::vector<double> latencies_ms_;
  std::map<std::string, int64_t> errors_;
  int64_t dropped_ = 0;
  double batch_size_sum_ = 0;
  double queue_seconds_sum_ = 0;
  double compute_seconds_sum_ = 0;
  absl::Time first_ = absl::InfiniteFuture();
  absl::Time last_ = absl::InfinitePast();
};

// Seconds one image spent in each stage of the worker's pipeline; forward is the batch's
// forward pass divided among its images.
struct StageSeconds {
  double decode = 0;
  double preprocess = 0;
  double forward = 0;
  double postprocess = 0;
  double encode = 0;
};

// What one batch size of the in-process benchmark measured.
struct BatchStepResult {
  int batch_size = 0;
  int64_t batches = 0;
  int64_t images_ok = 0;
  std::map<std::string, int64_t> errors;  // failed images by status code name
  double seconds = 0;
  double throughput = 0;         // OK images per second
  LatencySummary batch_latency;  // of whole batches, submission to completion
  StageSeconds mean_stage;       // per OK image, milliseconds
};

class BatchStepStats {
 public:
  explicit BatchStepStats(int batch_size) : batch_size_(batch_size) {}

  // One finished batch: when it was submitted and done, and each image's code and stages.
  void AddBatch(absl::Time submitted, absl::Time done, const std::vector<absl::StatusCode>& codes,
                const std::vector<StageSeconds>& stages);
  BatchStepResult Finish() const;

 private:
  const int batch_size_;
  std::vector<double> latencies_ms_;
  int64_t images_ok_ = 0;
  std::map<std::string, int64_t> errors_;
  StageSeconds stage_sums_;
  absl::Time first_ = absl::InfiniteFuture();
  absl::Time last_ = absl::InfinitePast();
};

// The batch size with the highest throughput (the first on ties); -1 when none has any.
int BestBatchStep(const std::vector<BatchStepResult>& steps);

}  // namespace deeplab::bench

#endif  // DEEPLAB_SERVICES_BENCH_BENCH_STATS_H_
