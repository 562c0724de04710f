#include "services/bench/bench_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/percentile.h"

namespace deeplab::bench {
namespace {

double Milliseconds(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

double Seconds(absl::Time first, absl::Time last) {
  return first < last ? absl::ToDoubleSeconds(last - first) : 0.0;
}

std::string CodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

}  // namespace

MeasurementWindow::MeasurementWindow(absl::Time start, absl::Duration warmup,
                                     absl::Duration duration, int64_t requests,
                                     int64_t min_measured)
    : measure_start_(start + warmup),
      duration_(duration),
      requests_(requests),
      min_measured_(min_measured) {}

MeasurementWindow::Phase MeasurementWindow::OnSend(absl::Time now) {
  if (done_) return Phase::kDone;
  if (now < measure_start_) return Phase::kWarmUp;
  // Once done, always done: a late sender must not reopen a window that another closed.
  const bool enough = requests_ > 0
                          ? measured_ >= requests_
                          : now >= measure_start_ + duration_ && measured_ >= min_measured_;
  if (enough) {
    done_ = true;
    return Phase::kDone;
  }
  ++measured_;
  return Phase::kMeasured;
}

double Percentile(const std::vector<double>& sorted, double p) {
  return sorted[NearestRankIndex(sorted.size(), p)];
}

LatencySummary Summarize(std::vector<double> values_ms) {
  LatencySummary s;
  if (values_ms.empty()) return s;
  std::sort(values_ms.begin(), values_ms.end());
  s.count = static_cast<int64_t>(values_ms.size());
  s.mean_ms = std::accumulate(values_ms.begin(), values_ms.end(), 0.0) / values_ms.size();
  s.p50_ms = Percentile(values_ms, 50);
  s.p90_ms = Percentile(values_ms, 90);
  s.p99_ms = Percentile(values_ms, 99);
  s.max_ms = values_ms.back();
  return s;
}

int64_t StepResult::error_count() const {
  int64_t n = 0;
  for (const auto& [code, count] : errors) n += count;
  return n;
}

void StepStats::Cover(absl::Time t) {
  first_ = std::min(first_, t);
  last_ = std::max(last_, t);
}

void StepStats::Add(const Sample& sample) {
  Cover(sample.sent);
  Cover(sample.answered);
  if (sample.code != absl::StatusCode::kOk) {
    ++errors_[CodeName(sample.code)];
    return;
  }
  latencies_ms_.push_back(Milliseconds(sample.answered - sample.sent));
  batch_size_sum_ += sample.batch_size;
  queue_seconds_sum_ += sample.queue_seconds;
  compute_seconds_sum_ += sample.compute_seconds;
}

void StepStats::AddDropped(absl::Time at) {
  Cover(at);
  ++dropped_;
}

StepResult StepStats::Finish() const {
  StepResult r;
  r.load = load_;
  r.level = level_;
  r.ok = static_cast<int64_t>(latencies_ms_.size());
  r.errors = errors_;
  r.dropped = dropped_;
  r.seconds = Seconds(first_, last_);
  r.throughput = r.seconds > 0 ? r.ok / r.seconds : 0.0;
  r.latency = Summarize(latencies_ms_);
  if (r.ok > 0) {
    r.mean_batch_size = batch_size_sum_ / r.ok;
    r.mean_queue_ms = 1000.0 * queue_seconds_sum_ / r.ok;
    r.mean_compute_ms = 1000.0 * compute_seconds_sum_ / r.ok;
  }
  return r;
}

void BatchStepStats::AddBatch(absl::Time submitted, absl::Time done,
                              const std::vector<absl::StatusCode>& codes,
                              const std::vector<StageSeconds>& stages) {
  first_ = std::min(first_, submitted);
  last_ = std::max(last_, done);
  latencies_ms_.push_back(Milliseconds(done - submitted));
  for (size_t i = 0; i < codes.size(); ++i) {
    if (codes[i] != absl::StatusCode::kOk) {
      ++errors_[CodeName(codes[i])];
      continue;
    }
    ++images_ok_;
    if (i < stages.size()) {
      stage_sums_.decode += stages[i].decode;
      stage_sums_.preprocess += stages[i].preprocess;
      stage_sums_.forward += stages[i].forward;
      stage_sums_.postprocess += stages[i].postprocess;
      stage_sums_.encode += stages[i].encode;
    }
  }
}

BatchStepResult BatchStepStats::Finish() const {
  BatchStepResult r;
  r.batch_size = batch_size_;
  r.batches = static_cast<int64_t>(latencies_ms_.size());
  r.images_ok = images_ok_;
  r.errors = errors_;
  r.seconds = Seconds(first_, last_);
  r.throughput = r.seconds > 0 ? images_ok_ / r.seconds : 0.0;
  r.batch_latency = Summarize(latencies_ms_);
  if (images_ok_ > 0) {
    const double to_ms = 1000.0 / images_ok_;
    r.mean_stage = {stage_sums_.decode * to_ms, stage_sums_.preprocess * to_ms,
                    stage_sums_.forward * to_ms, stage_sums_.postprocess * to_ms,
                    stage_sums_.encode * to_ms};
  }
  return r;
}

int BestBatchStep(const std::vector<BatchStepResult>& steps) {
  int best = -1;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].throughput <= 0) continue;
    if (best < 0 || steps[i].throughput > steps[best].throughput) best = static_cast<int>(i);
  }
  return best;
}

}  // namespace deeplab::bench
