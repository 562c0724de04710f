#include "services/bench/in_process_bench.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/cpu_count.h"
#include "workers/model/onednn_cache.h"
#include "workers/repository/model_repository.h"
#include "workers/worker/engine.h"

namespace deeplab::bench {
namespace {

using Phase = MeasurementWindow::Phase;

int Cores() { return UsableCores().usable; }

// The weight set's config, with a NOT_FOUND that names what the repository has rather than
// the engine's "--load names ...".
absl::StatusOr<v1::ModelConfig> FindConfig(const std::string& models, const std::string& model) {
  absl::StatusOr<std::vector<RepositoryEntry>> entries = ScanModelRepository(models);
  if (!entries.ok()) return entries.status();
  std::vector<std::string> names;
  for (const RepositoryEntry& entry : *entries) {
    if (entry.name != model) {
      names.push_back(entry.name);
    } else if (!entry.config.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("weight set '", model, "' did not load: ", entry.config.status().message()));
    } else {
      return *entry.config;
    }
  }
  return absl::NotFoundError(
      absl::StrCat("the model repository ", models, " has no weight set '", model,
                   "'; it has: ", names.empty() ? "none" : absl::StrJoin(names, ", ")));
}

// Powers of two up to the largest batch the gateway would form for this weight set.
std::vector<int> DefaultBatchSizes(const v1::ModelConfig& config) {
  const int max_batch = config.batching().max_batch_size() > 0
                            ? config.batching().max_batch_size()
                            : 8;  // the config's documented default
  std::vector<int> sizes;
  for (int b = 1; b < max_batch; b *= 2) sizes.push_back(b);
  sizes.push_back(max_batch);
  return sizes;
}

// The batches of one step: `slots` requests of `batch_size` images each, so batches in
// flight never share a request or response.
struct Slot {
  v1::InferRequest request;
  v1::InferResponse response;
  Phase phase = Phase::kWarmUp;
  absl::Time submitted;
};

BatchStepResult RunBatchSize(WorkerEngine& engine, const InProcessOptions& options,
                             int batch_size) {
  const int slots = options.batch_slots > 0
                        ? options.batch_slots
                        : DefaultInstances(options.instances, options.device) + 1;
  std::vector<Slot> batches(slots);
  size_t next_image = 0;
  for (Slot& slot : batches) {
    slot.request.set_model(options.model);
    for (int i = 0; i < batch_size; ++i) {
      v1::InferItem* item = slot.request.add_items();
      item->set_id(absl::StrCat(i));
      item->mutable_image()->set_encoded(
          options.images[next_image++ % options.images.size()].encoded);
      *item->mutable_outputs() = options.outputs;
    }
  }

  const int64_t batches_wanted =
      options.requests > 0 ? (options.requests + batch_size - 1) / batch_size : 0;
  // At least one batch per slot, however slow: a step with no measurement says nothing.
  MeasurementWindow window(absl::Now(), options.warmup, options.duration, batches_wanted,
                           /*min_measured=*/slots);
  BatchStepStats stats(batch_size);
  absl::Mutex mu;
  std::vector<int> free_slots;
  for (int i = 0; i < slots; ++i) free_slots.push_back(i);

  auto on_done = [&](int index, absl::Status status) {
    Slot& slot = batches[index];
    const absl::Time done = absl::Now();
    std::vector<absl::StatusCode> codes;
    std::vector<StageSeconds> stages;
    if (slot.phase == Phase::kMeasured) {
      const int n = slot.request.items_size();
      const double forward = slot.response.forward_seconds() / n;
      for (int i = 0; i < n; ++i) {
        if (!status.ok() || i >= slot.response.items_size()) {
          codes.push_back(status.ok() ? absl::StatusCode::kInternal : status.code());
          continue;
        }
        const v1::ItemResult& item = slot.response.items(i);
        codes.push_back(static_cast<absl::StatusCode>(item.code()));
        const v1::StageTimings& t = item.result().timings();
        stages.push_back({t.decode_seconds(), t.preprocess_seconds(), forward,
                          t.postprocess_seconds(), t.encode_seconds()});
      }
    }
    absl::MutexLock lock(&mu);
    if (slot.phase == Phase::kMeasured) stats.AddBatch(slot.submitted, done, codes, stages);
    free_slots.push_back(index);
  };

  for (;;) {
    int index = 0;
    {
      absl::MutexLock lock(&mu);
      auto has_free = [&free_slots]() { return !free_slots.empty(); };
      mu.Await(absl::Condition(&has_free));
      index = free_slots.back();
      free_slots.pop_back();
    }
    Slot& slot = batches[index];
    slot.submitted = absl::Now();
    slot.phase = window.OnSend(slot.submitted);
    if (slot.phase == Phase::kDone) {
      absl::MutexLock lock(&mu);
      free_slots.push_back(index);
      break;
    }
    slot.response.Clear();
    engine.Infer(slot.request, &slot.response,
                 [&on_done, index](absl::Status status) { on_done(index, std::move(status)); });
  }
  absl::MutexLock lock(&mu);
  auto all_free = [&free_slots, slots]() { return static_cast<int>(free_slots.size()) == slots; };
  mu.Await(absl::Condition(&all_free));
  return stats.Finish();
}

}  // namespace

absl::Status CheckInProcessOptions(const InProcessOptions& options) {
  if (absl::Status s = ParseLayoutChoice(options.layout).status(); !s.ok()) return s;
  return ParsePrecisionOverride(options.precision).status();
}

absl::Status RunInProcess(const InProcessOptions& options,
                          const std::function<void(const InProcessInfo&)>& on_start,
                          const std::function<void(const BatchStepResult&)>& on_step) {
  absl::StatusOr<v1::ModelConfig> config = FindConfig(options.models, options.model);
  if (!config.ok()) return config.status();
  if (options.images.empty()) return absl::InvalidArgumentError("no images to send");
  const int instances = DefaultInstances(options.instances, options.device);
  at::set_num_threads(options.threads > 0 ? options.threads : Cores());
  // As the worker does (its steps take one batch size at a time, so they would not show the
  // difference; the served ones mix them).
  RequestPrimitiveCacheCapacity(kDefaultPrimitiveCacheCapacity);

  InProcessInfo info;
  info.batch_sizes = options.batch_sizes.empty() ? DefaultBatchSizes(*config) : options.batch_sizes;
  WorkerOptions worker;
  worker.runtime.device = options.device;
  absl::StatusOr<LayoutChoice> layout = ParseLayoutChoice(options.layout);
  if (!layout.ok()) return layout.status();
  absl::StatusOr<std::optional<Precision>> precision = ParsePrecisionOverride(options.precision);
  if (!precision.ok()) return precision.status();
  worker.layout = *layout;
  worker.precision = *precision;
  worker.instances = instances;
  worker.share_intra_op_threads = options.share_threads;
  worker.reduced_decode = options.reduced_decode;
  worker.decode_threads = options.decode_threads;
  worker.batch_slots = DefaultBatchSlots(options.batch_slots, instances, options.device);
  worker.pipeline_threads = options.pipeline_threads > 0 ? options.pipeline_threads : Cores();
  // The worker splits batches above --max-forward-batch (32); here every batch size should
  // be one forward pass, since that is what is being measured.
  worker.max_forward_batch =
      std::max(worker.max_forward_batch,
               *std::max_element(info.batch_sizes.begin(), info.batch_sizes.end()));
  WorkerEngine engine(worker, /*metrics=*/nullptr);
  if (absl::Status s = engine.LoadRepository(options.models, {options.model}); !s.ok()) return s;
  const v1::StatusResponse status = engine.Status();
  for (const v1::WeightSetStatus& ws : status.weight_sets()) {
    if (ws.name() != options.model) continue;
    if (!ws.ready()) {
      return absl::FailedPreconditionError(
          absl::StrCat("weight set '", options.model, "' did not load: ", ws.reason()));
    }
    info.runtime = ws.runtime();
  }
  on_start(info);
  for (int batch_size : info.batch_sizes) on_step(RunBatchSize(engine, options, batch_size));
  return absl::OkStatus();
}

}  // namespace deeplab::bench
