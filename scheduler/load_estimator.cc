#include "scheduler/load_estimator.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "scheduler/annotated_mutex_lock.h"

namespace deeplab::scheduler {

absl::Status LoadEstimatorOptions::Validate() const {
  if (window < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("autoscale window must be at least 1s, got ", absl::FormatDuration(window)));
  }
  if (queue_target <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("autoscale queue target must be positive, got ",
                                                   absl::FormatDuration(queue_target)));
  }
  if (!(utilization > 0 && utilization <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("autoscale utilization must be in (0, 1], got ", utilization));
  }
  if (min_workers < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("autoscale min_workers must not be negative, got ", min_workers));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LoadEstimator>> LoadEstimator::Create(
    LoadEstimatorOptions options, Clock* clock) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (clock == nullptr) return absl::InvalidArgumentError("LoadEstimator needs a clock");
  return std::unique_ptr<LoadEstimator>(new LoadEstimator(std::move(options), clock));
}

LoadEstimator::LoadEstimator(LoadEstimatorOptions options, Clock* clock)
    : options_(std::move(options)), clock_(clock), start_(clock->Now()) {}

LoadEstimator::Sums LoadEstimator::DecayedTo(const Sums& s, absl::Time now) const {
  Sums d = s;
  const double dt = absl::ToDoubleSeconds(now - s.updated);
  if (dt > 0) {
    const double f = std::exp(-dt / absl::ToDoubleSeconds(options_.window));
    d.arrivals *= f;
    d.batch_seconds *= f;
    d.batch_cost *= f;
    d.updated = now;
  }
  return d;
}

LoadEstimator::Sums& LoadEstimator::Current(const std::string& model, absl::Time now) {
  auto [it, inserted] = sums_.try_emplace(model);
  if (inserted) it->second.updated = now;
  it->second = DecayedTo(it->second, now);
  return it->second;
}

void LoadEstimator::RecordArrival(const std::string& model, int cost) {
  const absl::Time now = clock_->Now();
  AnnotatedMutexLock lock(&mu_);
  Current(model, now).arrivals += std::max(cost, 0);
}

void LoadEstimator::RecordBatch(const std::string& model, int cost, absl::Duration seconds) {
  if (cost <= 0 || seconds < absl::ZeroDuration()) return;
  const absl::Time now = clock_->Now();
  AnnotatedMutexLock lock(&mu_);
  Sums& s = Current(model, now);
  s.batch_seconds += absl::ToDoubleSeconds(seconds);
  s.batch_cost += cost;
}

ModelLoad LoadEstimator::Load(const std::string& model, int queued_cost) const {
  const absl::Time now = clock_->Now();
  Sums s;
  {
    AnnotatedMutexLock lock(&mu_);
    auto it = sums_.find(model);
    if (it != sums_.end()) s = DecayedTo(it->second, now);
  }
  const double window = absl::ToDoubleSeconds(options_.window);
  // A decaying count over a process younger than the window sees only part of it: divide
  // by the part seen (at least one second, so the first arrival is not a huge rate).
  const double elapsed = std::max(1.0, absl::ToDoubleSeconds(now - start_));
  const double seen = window * (1 - std::exp(-elapsed / window));
  ModelLoad load;
  load.arrival_rate = s.arrivals / seen;
  if (s.batch_cost > 0) load.seconds_per_unit = s.batch_seconds / s.batch_cost;
  load.slot_demand =
      load.seconds_per_unit * (load.arrival_rate + std::max(queued_cost, 0) /
                                                       absl::ToDoubleSeconds(options_.queue_target));
  return load;
}

double LoadEstimator::WorkerDemand(const std::vector<ModelLoad>& loads,
                                   double slots_per_worker) const {
  double demand = 0;
  for (const ModelLoad& load : loads) demand += load.slot_demand;
  const double per_worker = std::max(slots_per_worker, 1.0) * options_.utilization;
  return std::min(demand / per_worker, 1e6);
}

int LoadEstimator::WorkersNeeded(double worker_demand) const {
  // The epsilon keeps float noise in an exact multiple (2.0000000001) from adding a worker;
  // the cap keeps the conversion to int defined.
  const double needed = std::ceil(std::min(worker_demand, 1e6) - 1e-9);
  return std::max(options_.min_workers, static_cast<int>(needed));
}

}  // namespace deeplab::scheduler
