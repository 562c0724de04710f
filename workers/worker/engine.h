// WorkerEngine: hosts the weight sets of one worker process and runs Infer batches through
// decode -> preprocess -> batch path (workers/batch: upload, normalize, forward, restore
// labels, on the model's device) -> encode.
//
// Concurrency: decode/preprocess and encode run per item on a thread pool; batches go
// through the batch path on `instances` dedicated threads (the intra-op threads of LibTorch
// parallelise each pass). On a CPU each thread runs one batch at a time, and the labels of
// its items are restored on the pool; a pass that runs alone takes all the intra-op
// threads, passes that run at once share them (intra_op_threads.h). On CUDA each thread
// keeps two batches in flight on two streams: it enqueues the next batch (upload, forward,
// restore, copy back) while the device computes the current one, and waits only for the
// older one's outputs. So the next batch decodes while the current one is in the forward
// pass. The engine is independent of
// gRPC: Infer reports completion through a callback.
//
// Thread-safe. Load* must finish before Infer is called for the weight sets it loads.
// The destructor waits for in-flight batches.
#ifndef DEEPLAB_WORKERS_WORKER_ENGINE_H_
#define DEEPLAB_WORKERS_WORKER_ENGINE_H_

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/image_codec.h"
#include "common/thread_pool.h"
#include "deeplab/v1/worker.pb.h"
#include "workers/weights/segmentation_model.h"
#include "workers/worker/pipeline.h"
#include "workers/worker/worker_metrics.h"

namespace deeplab {

// The network's memory layout: chosen by timing both at warm-up, or fixed.
enum class LayoutChoice { kAuto, kNchw, kChannelsLast };

struct WorkerOptions {
  ImageLimits limits;
  // Device and the like; the precision comes from each weight set's config unless
  // `precision` overrides it for all.
  RuntimeOptions runtime;
  std::optional<Precision> precision;
  LayoutChoice layout = LayoutChoice::kAuto;
  // Forward passes that may run at once, each on its own thread (Triton's instance count),
  // each with LibTorch's intra-op threads. See DefaultInstances.
  int instances = 1;
  // On a CPU: a forward pass that runs alone takes all of LibTorch's intra-op threads
  // (at::get_num_threads() when the engine is made), passes that run at once share them out
  // (intra_op_threads.h). false: every pass takes them all.
  bool share_intra_op_threads = true;
  // Batches in flight at once (in the batch path, decoding or encoding); Status reports the
  // free ones so the gateway sends no more than that. See DefaultBatchSlots.
  int batch_slots = 2;
  // Batches accepted beyond the free slots are queued up to this many, then refused with
  // RESOURCE_EXHAUSTED (a gateway that respects free slots never gets there).
  int max_queued_batches = 8;
  // Largest forward pass in network inputs; bigger batches run in several passes.
  int max_forward_batch = 32;
  // Threads for decode, preprocess, postprocess and encode.
  int pipeline_threads = 2;
  // At load, run every padded batch size once (and time the layouts, with kAuto) so the
  // first request pays for no lazy initialisation.
  bool warm_up = true;
  // Decode JPEGs at a reduced scale (1/2, 1/4, 1/8; libjpeg's DCT scaling) when the
  // network input is that much smaller than the image; the outputs still come back at the
  // original size (an overlay from a second, whole decode). Not for tiled weight sets.
  bool reduced_decode = true;
  // Threads one reduced JPEG with restart markers is decoded on, in bands (common/jpeg_bands.h;
  // images of 2 megapixels and more); 0: one per core, at most 8; 1: never in bands.
  int decode_threads = 0;
  // Batch sizes forward passes are padded to; empty: DefaultPaddedBatchSizes (CUDA: powers
  // of two up to max_forward_batch; CPU: none).
  std::vector<int> padded_batch_sizes;
};

// Command-line names: "auto", "nchw", "channels_last"; INVALID_ARGUMENT otherwise.
absl::StatusOr<LayoutChoice> ParseLayoutChoice(const std::string& name);
// "config" (each weight set's own: nullopt), "auto", "fp32", "bf16", "fp16".
absl::StatusOr<std::optional<Precision>> ParsePrecisionOverride(const std::string& name);

// The instance count to use: `requested` when positive, else 2 on a CPU and 1 on CUDA
// (measured on the demo weight set: one forward pass of a small input keeps a CPU's cores
// busy about half the time, two at once fill them; docs/BENCHMARKS.md).
int DefaultInstances(int requested, const std::string& device);

// The batch slot count to use: `requested` when positive, else enough for every instance's
// batches in the batch path (one per instance on a CPU, two on CUDA) plus one decoding.
int DefaultBatchSlots(int requested, int instances, const std::string& device);

// Bytes each batch moves to the model's device and back (the metrics' direction label).
inline constexpr char kToDevice[] = "to_device";
inline constexpr char kToHost[] = "to_host";

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
  // samples_dir: images of the kind the weights were trained on, if any (the repository's
  // <name>/samples/images), for precision auto's check; else a procedural scene is used.
  void LoadWeightSet(const v1::ModelConfig& config, const std::string& weights_path,
                     const std::string& samples_dir = "");

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
  // Precision auto's check input: up to 4 of the sample images, preprocessed and
  // normalized as requests are, or a procedural scene at the input size.
  torch::Tensor PrecisionCheckInput(const v1::ModelConfig& config, const PipelineConfig& pipeline,
                                    const std::string& samples_dir) const;
  void DecodeItem(const std::shared_ptr<Job>& job, int index);
  // Submits the batch (on `stream` on CUDA); false when nothing was submitted (the job is
  // then finished).
  bool SubmitBatch(const std::shared_ptr<Job>& job, std::optional<c10::Stream> stream);
  // Waits for a submitted batch's outputs and hands its items to the pool.
  void CollectBatch(const std::shared_ptr<Job>& job);
  // index: the item in the request; position: its place in the batch path's run.
  void FinishItem(const std::shared_ptr<Job>& job, int index, int position);
  void FinishJob(const std::shared_ptr<Job>& job);
  void ForwardLoop();

  const WorkerOptions options_;
  WorkerMetrics* const metrics_;
  std::string device_;
  // The model repository's path, as given and resolved, with a trailing '/': cut from the
  // reasons Status reports.
  std::vector<std::string> repository_prefixes_ ABSL_GUARDED_BY(mu_);
  // A huge image was answered: Status() releases free memory (common/release_memory.h).
  mutable std::atomic<bool> release_memory_{false};

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<WeightSet>> weight_sets_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::shared_ptr<Job>> forward_queue_ ABSL_GUARDED_BY(mu_);
  // Forward passes running now, for sharing the intra-op threads.
  int forwards_running_ ABSL_GUARDED_BY(mu_) = 0;
  // LibTorch's intra-op threads when the engine was made: what a lone pass takes.
  const int intra_op_threads_;

  // Declared last: destroyed first, so their threads stop before the state above goes.
  std::unique_ptr<ThreadPool> pool_;
  std::vector<std::thread> forward_threads_;
};

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_WORKER_ENGINE_H_
