// LoadEstimator: how many workers the gateway's load needs, the signal that scales workers
// on Kubernetes (deploy/k8s: HorizontalPodAutoscaler or KEDA on workers_needed).
//
// It sees what the gateway sees: requests arriving per weight set (in cost units: a tiled
// image counts its patches) and batches finishing (their cost and how long the worker call
// took). Per weight set it keeps, over an exponentially decaying window:
//   arrival rate   lambda = decayed arrivals / window  (cost units per second);
//   work per unit  w = decayed batch seconds / decayed batch cost  (slot-seconds per unit),
//                  which reflects the batch sizes actually formed;
//   slot demand    lambda * w + queued * w / queue_target: the batch slots that arrivals keep
//                  busy (Little's law), plus those that would drain what already waits within
//                  the queue-time target.
// Worker demand = sum of slot demands / (batch slots per worker * utilization): fractional,
// with no floor, so that the demands of several gateways sharing one pool of workers add up
// (the autoscaler sums them and rounds up once). Workers needed = ceil(worker demand), and at
// least min_workers: the answer for a gateway that is alone. Offered load counts, not only served load: requests refused because a
// queue was full or no worker was ready are arrivals too, so a saturated or empty pool still
// asks for more workers.
//
// A weight set whose batches have never finished has no w yet: it adds no slot demand, and
// min_workers (1) is what brings its first worker.
//
// Time comes from the injected Clock, so tests run on simulated time. Thread-safe.
#ifndef DEEPLAB_SCHEDULER_LOAD_ESTIMATOR_H_
#define DEEPLAB_SCHEDULER_LOAD_ESTIMATOR_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"

namespace deeplab::scheduler {

struct LoadEstimatorOptions {
  // Time constant of the decaying averages: longer is steadier, shorter follows bursts.
  absl::Duration window = absl::Seconds(30);
  // The queue time that workers_needed plans for: the backlog must drain within it.
  absl::Duration queue_target = absl::Seconds(1);
  // Share of each worker's batch slots planned busy; headroom absorbs bursts and the time a
  // new worker takes to load its weights.
  double utilization = 0.8;
  // Never ask for fewer workers than this.
  int min_workers = 1;

  // INVALID_ARGUMENT naming the field when a value is out of range.
  absl::Status Validate() const;
};

struct ModelLoad {
  double arrival_rate = 0;      // cost units per second
  double seconds_per_unit = 0;  // slot-seconds per cost unit; 0 until a batch has finished
  double slot_demand = 0;       // batch slots needed, see the file comment
};

class LoadEstimator {
 public:
  // INVALID_ARGUMENT for bad options; clock must outlive the estimator.
  static absl::StatusOr<std::unique_ptr<LoadEstimator>> Create(LoadEstimatorOptions options,
                                                               Clock* clock);

  // A request for the weight set arrived (whatever became of it), costing `cost` units.
  void RecordArrival(const std::string& model, int cost);
  // A batch of `cost` units of the weight set ran on a worker in `seconds`.
  void RecordBatch(const std::string& model, int cost, absl::Duration seconds);

  // The weight set's load now, given the cost units waiting in its queue.
  ModelLoad Load(const std::string& model, int queued_cost) const;
  // Workers these loads keep busy at the planned utilization when each worker has
  // `slots_per_worker` batch slots (unknown, 0: 1), as a fraction; capped at 1e6.
  double WorkerDemand(const std::vector<ModelLoad>& loads, double slots_per_worker) const;
  // A WorkerDemand rounded up, and at least min_workers.
  int WorkersNeeded(double worker_demand) const;

  const LoadEstimatorOptions& options() const { return options_; }

 private:
  // Decayed sums of one weight set, as of `updated`.
  struct Sums {
    double arrivals = 0;
    double batch_seconds = 0;
    double batch_cost = 0;
    absl::Time updated;
  };

  LoadEstimator(LoadEstimatorOptions options, Clock* clock);
  // The sums decayed from s.updated to now (s itself is not changed).
  Sums DecayedTo(const Sums& s, absl::Time now) const;
  Sums& Current(const std::string& model, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const LoadEstimatorOptions options_;
  Clock* const clock_;
  const absl::Time start_;

  mutable absl::Mutex mu_;
  std::map<std::string, Sums> sums_ ABSL_GUARDED_BY(mu_);
};

}  // namespace deeplab::scheduler

#endif  // DEEPLAB_SCHEDULER_LOAD_ESTIMATOR_H_
