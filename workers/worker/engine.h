// WorkerEngine: hosts the weight sets of one worker process and runs Infer batches through
// decode -> preprocess -> forward -> postprocess -> encode.
//
// Concurrency: decode/preprocess and postprocess/encode run per item on a thread pool;
// forward passes run on `instances` dedicated threads, one pass each at a time (the
// intra-op threads of LibTorch parallelise each one). So the next batch decodes while the
// current one is in the forward pass. The engine is independent of gRPC: Infer reports completion through a callback.
//
// Thread-safe. Load* must finish before Infer is called for the weight sets it loads.
// The destructor waits for in-flight batches.
#ifndef DEEPLAB_WORKERS_WORKER_ENGINE_H_
#define DEEPLAB_WORKERS_WORKER_ENGINE_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/image_codec.h"
#include "common/thread_pool.h"
#include "deeplab/v1/worker.pb.h"
#include "workers/weights/segmentation_model.h"
#include "workers/worker/pipeline.h"
#include "workers/worker/worker_metrics.h"

namespace deeplab {

struct WorkerOptions {
  ImageLimits limits;
  RuntimeOptions runtime;
  // Forward passes that may run at once, each on its own thread (Triton's instance count),
  // each with LibTorch's intra-op threads. See DefaultInstances.
  int instances = 1;
  // Batches in flight at once (`instances` in forward passes, the others decoding or
  // encoding); Status reports the free ones so the gateway sends no more than that. At
  // least instances + 1, so that a decoded batch always waits for the next free instance.
  int batch_slots = 2;
  // Batches accepted beyond the free slots are queued up to this many, then refused with
  // RESOURCE_EXHAUSTED (a gateway that respects free slots never gets there).
  int max_queued_batches = 8;
  // Largest forward pass in network inputs; bigger batches run in several passes.
  int max_forward_batch = 32;
  // Threads for decode, preprocess, postprocess and encode.
  int pipeline_threads = 2;
  // Run one forward pass at load so the first request does not pay for lazy initialisation.
  bool warm_up = true;
};

// The instance count to use: `requested` when positive, else 2 on a CPU and 1 on CUDA
// (measured on the demo weight set: one forward pass of a small input keeps a CPU's cores
// busy about half the time, two at once fill them; docs/BENCHMARKS.md).
int DefaultInstances(int requested, const std::string& device);

class WorkerEngine {
 public:
  // metrics may be null (tests that do not look at them).
  WorkerEngine(WorkerOptions options, WorkerMetrics* metrics);
  ~WorkerEngine();
  WorkerEngine(const WorkerEngine&) = delete;
  WorkerEngine& operator=(const WorkerEngine&) = delete;

  // Loads every weight set of the repository (only those named in `only`, if not empty).
  // A weight set that cannot load is kept as not ready, with the reason; the others serve.
  // NOT_FOUND only when the repository itself is missing, or a name in `only` is not there.
  absl::Status LoadRepository(const std::string& repository, const std::vector<std::string>& only);

  // Adds one weight set from a config in code (tests, tools); same rules as the repository.
  void LoadWeightSet(const v1::ModelConfig& config, const std::string& weights_path);

  using DoneCallback = std::function<void(absl::Status)>;
  // Runs one batch. request and response must stay valid until done is called (exactly
  // once, from some engine thread or inline). The status is not OK only when the batch as a
  // whole cannot run (NOT_FOUND, UNAVAILABLE, INVALID_ARGUMENT, RESOURCE_EXHAUSTED); item
  // errors are in the response. `cancelled`, if given, is polled before the forward pass.
  void Infer(const v1::InferRequest& request, v1::InferResponse* response, DoneCallback done,
             std::function<bool()> cancelled = nullptr);

  v1::StatusResponse Status() const;
  bool AnyReady() const;

  // Refuses new batches with UNAVAILABLE from now on; in-flight ones finish.
  void StartDrain();
  // Waits until no batch is in flight; false on timeout.
  bool WaitIdle(absl::Duration timeout) const;

 private:
  struct WeightSet;
  struct Job;

  int FreeSlotsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishSlotsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a weight set that cannot serve, with the reason Status and the logs give.
  void AddNotReady(const std::string& name, const v1::ModelConfig* config,
                   const absl::Status& why);
  void DecodeItem(const std::shared_ptr<Job>& job, int index);
  void RunForward(const std::shared_ptr<Job>& job);
  void FinishItem(const std::shared_ptr<Job>& job, int index);
  void FinishJob(const std::shared_ptr<Job>& job);
  void ForwardLoop();

  const WorkerOptions options_;
  WorkerMetrics* const metrics_;
  std::string device_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<WeightSet>> weight_sets_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::shared_ptr<Job>> forward_queue_ ABSL_GUARDED_BY(mu_);

  // Declared last: destroyed first, so their threads stop before the state above goes.
  std::unique_ptr<ThreadPool> pool_;
  std::vector<std::thread> forward_threads_;
};

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_WORKER_ENGINE_H_
