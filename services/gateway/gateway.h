// Gateway: the front door's logic, independent of the gRPC server types. Requests are
// validated, costed (a tiled image costs its patch count), queued in the batching
// scheduler, sent in batches to workers through the WorkerPool, and each answered exactly
// once: with its result, or with an explicit status.
//
// A batch whose worker fails (UNAVAILABLE, connection lost, draining) goes back to the front
// of its queue and runs elsewhere, up to max_attempts; the worker is taken out and polled
// again after a backoff. A worker that stops answering its Status polls (hung, SIGSTOPped,
// cut off) has its batches in flight cancelled, so they too run elsewhere: a late answer
// from it is dropped by gRPC, and every request is still answered exactly once.
//
// Thread-safe. Owns its scheduler thread and the worker pool.
#ifndef DEEPLAB_SERVICES_GATEWAY_GATEWAY_H_
#define DEEPLAB_SERVICES_GATEWAY_GATEWAY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "deeplab/v1/segmentation.pb.h"
#include "scheduler/load_estimator.h"
#include "scheduler/scheduler.h"
#include "services/gateway/gateway_metrics.h"
#include "services/gateway/worker_pool.h"

namespace deeplab {

struct GatewayOptions {
  WorkerPoolOptions pool;
  // Runs a request may take part in before it is answered UNAVAILABLE (see scheduler.h).
  int max_attempts = 3;
  // A batch on a worker that takes longer than attempt_timeout_factor times the weight set's
  // measured service time for its cost (at least min_attempt_timeout; before any batch of
  // the weight set finished, min_attempt_timeout per cost unit) is cancelled and runs
  // elsewhere: a worker that answers its health polls but not its Infer calls keeps no
  // request. Factor 0: no limit.
  double attempt_timeout_factor = 10;
  absl::Duration min_attempt_timeout = absl::Seconds(30);
  // What the workers_needed metric plans for (validated by main).
  scheduler::LoadEstimatorOptions autoscale;
  // Bytes of images that accepted, unanswered requests may hold together; a request that
  // would go over is refused RESOURCE_EXHAUSTED at once. 0: no bound.
  int64_t max_inflight_bytes = 0;
  // Largest image (encoded or raw bytes) accepted: INVALID_ARGUMENT beyond, as a worker
  // would answer. 0: no check here.
  int64_t max_image_bytes = 0;
};

// A client-supplied name (weight set, model, version) for an error message: at most 64
// bytes of it, and its length when longer.
std::string QuotedName(const std::string& name);

class Gateway {
 public:
  // metrics may be null.
  Gateway(GatewayOptions options, GatewayMetrics* metrics);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Polls the workers once, then starts the scheduler and pool threads.
  void Start();

  using DoneCallback = std::function<void(absl::Status)>;
  // Queues one request. request and response must stay valid until done runs (exactly
  // once, possibly inline). Returns an id for Cancel. The request's image is lent to the
  // batch that carries it to a worker (moved, not copied) and moved back if that batch is
  // re-sent: once done has run, request->image() may be empty. Its other fields are left
  // as they were.
  uint64_t Submit(v1::SegmentRequest* request, v1::SegmentResponse* response,
                  absl::Time deadline, DoneCallback done);
  // The caller gave up: a still-queued request is answered CANCELLED and never runs; one
  // already on a worker completes normally.
  void Cancel(uint64_t id);

  v1::ListModelsResponse ListModels() const;
  // ListModels for looking up one weight set (oip::FindModel): only that one when some worker
  // has it, else every one (for the error's list of names). The Open Inference Protocol
  // looks up its model on every call; building every weight set's info each time was waste.
  v1::ListModelsResponse ListModelsFor(const std::string& name) const;
  // True when some healthy worker has a ready weight set: the gateway's health.
  bool Serving() const;
  // Called (outside locks) whenever worker membership or readiness may have changed.
  void SetOnWorkersChanged(std::function<void()> callback);

  // Stops accepting (UNAVAILABLE from now on), waits up to `timeout` for every accepted
  // request to be answered; false on timeout. Then stops the threads.
  bool Drain(absl::Duration timeout);

 private:
  struct Pending;
  struct BatchCall;

  void Dispatch(scheduler::Batch batch);
  void Reject(const scheduler::Task& task, absl::Status status);
  void OnBatchDone(std::shared_ptr<BatchCall> call, grpc::Status status);
  // Cancels the batches in flight on `worker` (they come back CANCELLED and are re-queued).
  void CancelBatchesOn(const std::string& worker);
  // Moves the images of a batch that is to be re-sent back into their requests (those still
  // pending).
  void ReturnImages(BatchCall& call);
  void Complete(uint64_t id, absl::Status status);
  absl::StatusOr<int> Cost(const v1::SegmentRequest& request, const WorkerPool::ModelRoute& route);
  void Loop();
  void Kick();
  // Refreshes the sampled gauges: queue depth, queue age and the autoscaling signal.
  void UpdateLoadMetrics();
  std::string ModelLabel(const std::string& model) const;

  const GatewayOptions options_;
  GatewayMetrics* const metrics_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<scheduler::LoadEstimator> load_;
  // Batch slots per worker as last seen, for when no worker is healthy (loop thread only).
  double slots_per_worker_ = 0;

  mutable absl::Mutex mu_;
  std::map<uint64_t, std::shared_ptr<Pending>> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  int64_t inflight_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void()> on_workers_changed_ ABSL_GUARDED_BY(mu_);
  // Batches sent and not yet answered, by worker.
  std::multimap<std::string, std::shared_ptr<BatchCall>> in_flight_ ABSL_GUARDED_BY(mu_);
  std::thread loop_;
};

}  // namespace deeplab

#endif  // DEEPLAB_SERVICES_GATEWAY_GATEWAY_H_
