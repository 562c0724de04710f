#include "workers/worker/engine.h"

#include <atomic>
#include <chrono>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "workers/repository/model_repository.h"

namespace deeplab {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

ModelSpec SpecFromConfig(const v1::ModelConfig& config) {
  return ModelSpecFromProto(config.architecture());
}

Precision PrecisionFromConfig(v1::Precision p) {
  switch (p) {
    case v1::PRECISION_BF16:
      return Precision::kBf16;
    case v1::PRECISION_FP16:
      return Precision::kFp16;
    default:
      return Precision::kFp32;
  }
}

WeightsFormat FormatFromConfig(v1::WeightsFormat f) {
  switch (f) {
    case v1::WEIGHTS_FORMAT_KERAS_H5:
      return WeightsFormat::kKerasH5;
    case v1::WEIGHTS_FORMAT_NATIVE:
      return WeightsFormat::kNative;
    case v1::WEIGHTS_FORMAT_TORCHSCRIPT:
      return WeightsFormat::kTorchScript;
    default:
      return WeightsFormat::kRandom;
  }
}

void Log(const std::string& line) { std::cerr << "deeplab-worker: " << line << std::endl; }

}  // namespace

struct WorkerEngine::WeightSet {
  std::string name;
  v1::ModelConfig config;
  PipelineConfig pipeline;
  std::unique_ptr<SegmentationModel> model;
  bool ready = false;
  std::string reason;
};

struct WorkerEngine::Job {
  const v1::InferRequest* request = nullptr;
  v1::InferResponse* response = nullptr;
  DoneCallback done;
  std::function<bool()> cancelled;
  std::shared_ptr<WeightSet> weight_set;
  std::vector<PreparedImage> prepared;
  std::vector<absl::Status> status;
  std::vector<torch::Tensor> scores;
  std::atomic<int> pending{0};
};

int DefaultInstances(int requested, const std::string& device) {
  if (requested > 0) return requested;
  return absl::StartsWith(device, "cuda") ? 1 : 2;
}

WorkerEngine::WorkerEngine(WorkerOptions options, WorkerMetrics* metrics)
    : options_(std::move(options)), metrics_(metrics), device_(options_.runtime.device) {
  pool_ = std::make_unique<ThreadPool>(options_.pipeline_threads);
  for (int i = 0; i < std::max(1, options_.instances); ++i) {
    forward_threads_.emplace_back([this] { ForwardLoop(); });
  }
  absl::MutexLock lock(&mu_);
  PublishSlotsLocked();
}

int WorkerEngine::FreeSlotsLocked() const {
  return draining_ ? 0 : std::max(0, options_.batch_slots - in_flight_);
}

void WorkerEngine::PublishSlotsLocked() const {
  if (metrics_ != nullptr) metrics_->SetBatchSlots(options_.batch_slots, FreeSlotsLocked());
}

WorkerEngine::~WorkerEngine() {
  WaitIdle(absl::InfiniteDuration());
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : forward_threads_) t.join();
}

absl::Status WorkerEngine::LoadRepository(const std::string& repository,
                                          const std::vector<std::string>& only) {
  absl::StatusOr<std::vector<RepositoryEntry>> entries = ScanModelRepository(repository);
  if (!entries.ok()) return entries.status();
  std::vector<std::string> unknown = only;
  std::vector<const RepositoryEntry*> selected;
  for (const RepositoryEntry& entry : *entries) {
    if (!only.empty()) {
      auto it = std::find(unknown.begin(), unknown.end(), entry.name);
      if (it == unknown.end()) continue;
      unknown.erase(it);
    }
    selected.push_back(&entry);
  }
  // Checked before loading anything: the worker exits on it, so loading would be wasted.
  if (!unknown.empty()) {
    return absl::NotFoundError(absl::StrCat("--load names weight sets not in ", repository, ": ",
                                            absl::StrJoin(unknown, ", ")));
  }
  // Every weight set is listed from the start, as loading: a gateway that polls Status
  // meanwhile answers "not ready" (UNAVAILABLE, retry) rather than "unknown" (NOT_FOUND).
  {
    absl::MutexLock lock(&mu_);
    for (const RepositoryEntry* entry : selected) {
      auto ws = std::make_shared<WeightSet>();
      ws->name = entry->name;
      if (entry->config.ok()) ws->config = *entry->config;
      ws->reason = "loading";
      weight_sets_[entry->name] = ws;
    }
  }
  for (const RepositoryEntry* e : selected) {
    const RepositoryEntry& entry = *e;
    if (!entry.config.ok()) {
      AddNotReady(entry.name, nullptr, entry.config.status());
    } else if (absl::Status s = CheckWeightsFile(entry); !s.ok()) {
      AddNotReady(entry.name, &*entry.config, s);
    } else {
      LoadWeightSet(*entry.config, entry.weights_path);
    }
  }
  return absl::OkStatus();
}

void WorkerEngine::AddNotReady(const std::string& name, const v1::ModelConfig* config,
                               const absl::Status& why) {
  auto ws = std::make_shared<WeightSet>();
  ws->name = name;
  if (config != nullptr) ws->config = *config;
  ws->reason = std::string(why.message());
  Log(absl::StrCat("weight set ", name, " not ready: ", ws->reason));
  if (metrics_ != nullptr) metrics_->SetReady(name, false);
  absl::MutexLock lock(&mu_);
  weight_sets_[name] = ws;
}

void WorkerEngine::LoadWeightSet(const v1::ModelConfig& config, const std::string& weights_path) {
  auto ws = std::make_shared<WeightSet>();
  ws->name = config.name();
  ws->config = config;
  ws->pipeline = MakePipelineConfig(config);
  RuntimeOptions runtime = options_.runtime;
  runtime.precision = PrecisionFromConfig(config.precision());
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<SegmentationModel>> model = LoadSegmentationModel(
      SpecFromConfig(config), FormatFromConfig(config.weights().format()), weights_path, runtime);
  if (!model.ok()) {
    ws->reason = std::string(model.status().message());
  } else {
    ws->model = *std::move(model);
    ws->ready = true;
    if (options_.warm_up) {
      // A batch of one at the input size: the first forward pass allocates and picks
      // convolution algorithms; better here than in a client's latency.
      auto warm = ws->model->Forward(
          torch::zeros({1, 3, config.input().height(), config.input().width()}));
      if (!warm.ok()) {
        ws->ready = false;
        ws->reason = absl::StrCat("warm-up failed: ", warm.status().message());
      }
    }
  }
  if (ws->ready) {
    Log(absl::StrCat("weight set ", ws->name, " ready (", ws->model->Describe(), ", ",
                     ws->model->runtime(), ") in ", SecondsSince(start), " s"));
  } else {
    Log(absl::StrCat("weight set ", ws->name, " not ready: ", ws->reason));
  }
  if (metrics_ != nullptr) metrics_->SetReady(ws->name, ws->ready);
  absl::MutexLock lock(&mu_);
  weight_sets_[ws->name] = ws;
}

void WorkerEngine::Infer(const v1::InferRequest& request, v1::InferResponse* response,
                         DoneCallback done, std::function<bool()> cancelled) {
  std::shared_ptr<WeightSet> ws;
  absl::Status refused;
  {
    absl::MutexLock lock(&mu_);
    auto it = weight_sets_.find(request.model());
    if (draining_) {
      refused = absl::UnavailableError(
          "worker is draining (shutting down); send the batch to another worker");
    } else if (request.items().empty()) {
      refused = absl::InvalidArgumentError("the batch has no items");
    } else if (it == weight_sets_.end()) {
      std::vector<std::string> names;
      for (const auto& [name, set] : weight_sets_) names.push_back(name);
      refused = absl::NotFoundError(absl::StrCat("weight set '", request.model(),
                                                 "' is not hosted by this worker; it hosts: ",
                                                 absl::StrJoin(names, ", ")));
    } else if (!it->second->ready) {
      refused = absl::UnavailableError(absl::StrCat("weight set '", request.model(),
                                                    "' is not ready: ", it->second->reason));
    } else if (in_flight_ >= options_.batch_slots + options_.max_queued_batches) {
      refused = absl::ResourceExhaustedError(
          absl::StrCat("worker overloaded: ", in_flight_, " batches in flight"));
    } else {
      ws = it->second;
      ++in_flight_;
      PublishSlotsLocked();
    }
  }
  if (!refused.ok()) {
    if (metrics_ != nullptr) {
      metrics_->CountBatch(request.model(), CodeName(static_cast<int>(refused.code())));
    }
    done(refused);
    return;
  }

  auto job = std::make_shared<Job>();
  job->request = &request;
  job->response = response;
  job->done = std::move(done);
  job->cancelled = std::move(cancelled);
  job->weight_set = std::move(ws);
  const int n = request.items_size();
  job->prepared.resize(n);
  job->status.resize(n);
  job->scores.resize(n);
  response->clear_items();
  for (int i = 0; i < n; ++i) response->add_items()->set_id(request.items(i).id());
  job->pending = n;
  for (int i = 0; i < n; ++i) pool_->Schedule([this, job, i] { DecodeItem(job, i); });
}

void WorkerEngine::DecodeItem(const std::shared_ptr<Job>& job, int index) {
  const WeightSet& ws = *job->weight_set;
  v1::StageTimings* timings = job->response->mutable_items(index)->mutable_result()->mutable_timings();
  try {
    auto start = std::chrono::steady_clock::now();
    absl::StatusOr<cv::Mat> rgb =
        DecodeImageMessage(job->request->items(index).image(), options_.limits);
    timings->set_decode_seconds(SecondsSince(start));
    if (!rgb.ok()) {
      job->status[index] = rgb.status();
    } else {
      start = std::chrono::steady_clock::now();
      job->prepared[index] = Preprocess(*rgb, ws.pipeline);
      timings->set_preprocess_seconds(SecondsSince(start));
    }
  } catch (const std::exception& e) {
    job->status[index] = absl::InternalError(absl::StrCat("preprocessing failed: ", e.what()));
  }
  if (metrics_ != nullptr) {
    metrics_->ObserveStage(ws.name, "decode", timings->decode_seconds());
    if (job->status[index].ok()) {
      metrics_->ObserveStage(ws.name, "preprocess", timings->preprocess_seconds());
    }
  }
  if (--job->pending == 0) {
    absl::MutexLock lock(&mu_);
    forward_queue_.push_back(job);
  }
}

void WorkerEngine::ForwardLoop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !forward_queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (forward_queue_.empty()) return;
      job = forward_queue_.front();
      forward_queue_.pop_front();
    }
    RunForward(job);
  }
}

void WorkerEngine::RunForward(const std::shared_ptr<Job>& job) {
  const WeightSet& ws = *job->weight_set;
  std::vector<int> ok_items;
  std::vector<torch::Tensor> inputs;
  for (size_t i = 0; i < job->prepared.size(); ++i) {
    if (!job->status[i].ok()) continue;
    ok_items.push_back(static_cast<int>(i));
    for (const torch::Tensor& t : job->prepared[i].inputs) inputs.push_back(t);
  }
  if (!ok_items.empty() && job->cancelled && job->cancelled()) {
    for (int i : ok_items) {
      job->status[i] = absl::CancelledError("the caller cancelled the batch before it ran");
    }
    ok_items.clear();
  }
  job->response->set_batch_cost(static_cast<int>(inputs.size()));
  if (!ok_items.empty()) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<torch::Tensor> outputs;
    absl::Status failed;
    // Several passes when a batch (tiled images count their patches) exceeds the limit.
    for (size_t begin = 0; begin < inputs.size() && failed.ok();
         begin += options_.max_forward_batch) {
      const size_t end = std::min(inputs.size(), begin + options_.max_forward_batch);
      // Stacking CHW views of the HWC inputs yields a contiguous NCHW batch: the one copy of
      // the pixels between preprocessing and the model (CUDA converts to channels-last there).
      std::vector<torch::Tensor> chunk;
      for (size_t k = begin; k < end; ++k) chunk.push_back(inputs[k].permute({2, 0, 1}));
      torch::Tensor batch = torch::stack(chunk);
      absl::StatusOr<torch::Tensor> out = ws.model->Forward(batch);
      if (!out.ok()) {
        failed = out.status();
      } else {
        outputs.push_back(*out);
      }
    }
    const double seconds = SecondsSince(start);
    job->response->set_forward_seconds(seconds);
    if (metrics_ != nullptr) {
      metrics_->ObserveStage(ws.name, "forward", seconds);
      metrics_->ObserveBatchCost(ws.name, static_cast<double>(inputs.size()));
    }
    if (!failed.ok()) {
      Log(absl::StrCat("forward pass of ", ws.name, " failed: ", failed.message()));
      for (int i : ok_items) job->status[i] = failed;
      ok_items.clear();
    } else {
      torch::Tensor all = outputs.size() == 1 ? outputs[0] : torch::cat(outputs, 0);
      int64_t offset = 0;
      for (int i : ok_items) {
        const int cost = job->prepared[i].cost();
        job->scores[i] = all.slice(0, offset, offset + cost);
        offset += cost;
        job->response->mutable_items(i)->mutable_result()->mutable_timings()->set_forward_seconds(
            seconds);
      }
    }
  }
  if (ok_items.empty()) {
    FinishJob(job);
    return;
  }
  job->pending = static_cast<int>(ok_items.size());
  for (int i : ok_items) pool_->Schedule([this, job, i] { FinishItem(job, i); });
}

void WorkerEngine::FinishItem(const std::shared_ptr<Job>& job, int index) {
  const WeightSet& ws = *job->weight_set;
  const v1::InferItem& item = job->request->items(index);
  v1::SegmentationResult* result = job->response->mutable_items(index)->mutable_result();
  try {
    auto start = std::chrono::steady_clock::now();
    ItemScores scores = ComputeLabels(job->prepared[index], job->scores[index], ws.pipeline,
                                      item.outputs().probabilities());
    result->mutable_timings()->set_postprocess_seconds(SecondsSince(start));
    start = std::chrono::steady_clock::now();
    EncodeOutputs(job->prepared[index], scores, ws.pipeline, item.outputs(), result);
    result->mutable_timings()->set_encode_seconds(SecondsSince(start));
  } catch (const std::exception& e) {
    job->status[index] = absl::InternalError(absl::StrCat("postprocessing failed: ", e.what()));
  }
  // Free the big buffers as soon as this item is done, not when the whole batch is.
  job->prepared[index] = PreparedImage();
  job->scores[index] = torch::Tensor();
  if (metrics_ != nullptr && job->status[index].ok()) {
    metrics_->ObserveStage(ws.name, "postprocess", result->timings().postprocess_seconds());
    metrics_->ObserveStage(ws.name, "encode", result->timings().encode_seconds());
  }
  if (--job->pending == 0) FinishJob(job);
}

void WorkerEngine::FinishJob(const std::shared_ptr<Job>& job) {
  const std::string& model = job->weight_set->name;
  for (size_t i = 0; i < job->status.size(); ++i) {
    v1::ItemResult* item = job->response->mutable_items(static_cast<int>(i));
    const absl::Status& s = job->status[i];
    item->set_code(static_cast<int>(s.code()));
    if (!s.ok()) {
      item->set_message(std::string(s.message()));
      v1::StageTimings timings = item->result().timings();
      item->clear_result();
      *item->mutable_result()->mutable_timings() = timings;
    }
    if (metrics_ != nullptr) metrics_->CountItem(model, CodeName(static_cast<int>(s.code())));
  }
  if (metrics_ != nullptr) metrics_->CountBatch(model, "OK");
  DoneCallback done = std::move(job->done);
  job->prepared.clear();
  job->scores.clear();
  {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    PublishSlotsLocked();
  }
  done(absl::OkStatus());
}

v1::StatusResponse WorkerEngine::Status() const {
  v1::StatusResponse status;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, ws] : weight_sets_) {
    v1::WeightSetStatus* s = status.add_weight_sets();
    s->set_name(name);
    s->set_ready(ws->ready);
    s->set_reason(ws->reason);
    *s->mutable_config() = ws->config;
    if (ws->model != nullptr) s->set_runtime(ws->model->runtime());
  }
  status.set_device(device_);
  status.set_batch_slots(options_.batch_slots);
  status.set_free_batch_slots(FreeSlotsLocked());
  status.set_draining(draining_);
  status.set_max_batch_size(options_.max_forward_batch);
  return status;
}

bool WorkerEngine::AnyReady() const {
  absl::MutexLock lock(&mu_);
  for (const auto& [name, ws] : weight_sets_) {
    if (ws->ready) return true;
  }
  return false;
}

void WorkerEngine::StartDrain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  PublishSlotsLocked();
}

bool WorkerEngine::WaitIdle(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

}  // namespace deeplab
