#include "workers/worker/engine.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/release_memory.h"
#include "common/output_options.h"
#include "workers/repository/model_repository.h"
#include "workers/worker/intra_op_threads.h"

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
    case v1::PRECISION_AUTO:
      return Precision::kAuto;
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

void Log(const std::string& line) { LogLine("deeplab-worker", line); }

}  // namespace

struct WorkerEngine::WeightSet {
  std::string name;
  v1::ModelConfig config;
  PipelineConfig pipeline;
  MinimumSize minimum_decode;  // null: decode at full size
  std::unique_ptr<SegmentationModel> model;
  std::unique_ptr<BatchPath> batch_path;
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
  // The items in the batch path, and the batch there.
  std::vector<int> ok_items;
  std::unique_ptr<BatchRun> run;
  std::chrono::steady_clock::time_point submitted;
  std::atomic<int> pending{0};
  // Some image had at least kLargeImagePixels: free memory goes back to the system after.
  std::atomic<bool> large{false};
};

// 8 megapixels: a 12 MP photo's decoded pixels, restored scores and PNGs take hundreds of
// MB; releasing afterwards costs a few milliseconds, small beside such an image's time.
constexpr int64_t kLargeImagePixels = 8'000'000;

int DefaultInstances(int requested, const std::string& device) {
  if (requested > 0) return requested;
  return absl::StartsWith(device, "cuda") ? 1 : 2;
}

absl::StatusOr<LayoutChoice> ParseLayoutChoice(const std::string& name) {
  if (name == "auto") return LayoutChoice::kAuto;
  if (name == "nchw") return LayoutChoice::kNchw;
  if (name == "channels_last") return LayoutChoice::kChannelsLast;
  return absl::InvalidArgumentError(
      absl::StrCat("layout must be auto, nchw or channels_last, not '", name, "'"));
}

absl::StatusOr<std::optional<Precision>> ParsePrecisionOverride(const std::string& name) {
  if (name == "config") return std::optional<Precision>();
  if (name == "auto") return std::optional<Precision>(Precision::kAuto);
  if (name == "fp32") return std::optional<Precision>(Precision::kFp32);
  if (name == "bf16") return std::optional<Precision>(Precision::kBf16);
  if (name == "fp16") return std::optional<Precision>(Precision::kFp16);
  return absl::InvalidArgumentError(
      absl::StrCat("precision must be config, auto, fp32, bf16 or fp16, not '", name, "'"));
}

int DefaultBatchSlots(int requested, int instances, const std::string& device) {
  if (requested > 0) return requested;
  return instances * (absl::StartsWith(device, "cuda") ? 2 : 1) + 1;
}

WorkerEngine::WorkerEngine(WorkerOptions options, WorkerMetrics* metrics)
    : options_(std::move(options)),
      metrics_(metrics),
      device_(options_.runtime.device),
      intra_op_threads_(at::get_num_threads()) {
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
  {
    // Status (hence the gateway's ListModels) names files relative to the repository: where
    // the server keeps them is none of a client's business.
    absl::MutexLock lock(&mu_);
    std::error_code error;
    for (const std::string& path :
         {std::filesystem::canonical(repository, error).string(),
          std::filesystem::absolute(repository, error).lexically_normal().string(), repository}) {
      if (path.empty() || path == "." || path == "/") continue;
      std::string prefix = path.back() == '/' ? path : path + "/";
      repository_prefixes_.push_back(std::move(prefix));
    }
  }
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
      LoadWeightSet(*entry.config, entry.weights_path, entry.dir + "/samples/images");
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

torch::Tensor WorkerEngine::PrecisionCheckInput(const v1::ModelConfig& config,
                                                const PipelineConfig& pipeline,
                                                const std::string& samples_dir) const {
  // The weight set's own sample images when it ships some (what it was trained for), else a
  // procedural scene: an out-of-domain input is full of near-ties no precision keeps.
  std::vector<std::string> files;
  std::error_code error;
  if (!samples_dir.empty() && std::filesystem::is_directory(samples_dir, error)) {
    for (const auto& entry : std::filesystem::directory_iterator(samples_dir, error)) {
      if (entry.is_regular_file()) files.push_back(entry.path().string());
    }
    std::sort(files.begin(), files.end());
  }
  std::vector<PreparedImage> prepared;
  prepared.reserve(4);
  for (const std::string& file : files) {
    if (prepared.size() == 4) break;
    std::ifstream in(file, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    absl::StatusOr<cv::Mat> rgb = DecodeImage(bytes, options_.limits);
    if (!rgb.ok()) continue;
    prepared.push_back(Preprocess(*rgb, pipeline));
  }
  std::vector<torch::Tensor> inputs;
  for (const PreparedImage& image : prepared) {
    const BatchInput& in = image.item.inputs[0];
    inputs.push_back(NormalizeBatch(in.pixels.unsqueeze(0), {in.valid_height}, {in.valid_width},
                                    InputNormalizationOf(pipeline.normalization),
                                    torch::kFloat32, false));
  }
  if (inputs.empty()) {
    return MakePrecisionCheckInput(config.input().height(), config.input().width());
  }
  return torch::cat(inputs);
}

void WorkerEngine::LoadWeightSet(const v1::ModelConfig& config, const std::string& weights_path,
                                 const std::string& samples_dir) {
  auto ws = std::make_shared<WeightSet>();
  ws->name = config.name();
  ws->config = config;
  ws->pipeline = MakePipelineConfig(config);
  if (options_.reduced_decode) ws->minimum_decode = MinimumDecodeSize(ws->pipeline);
  RuntimeOptions runtime = options_.runtime;
  runtime.precision = options_.precision.value_or(PrecisionFromConfig(config.precision()));
  if (runtime.precision == Precision::kAuto && !runtime.precision_check_input.defined()) {
    runtime.precision_check_input = PrecisionCheckInput(config, ws->pipeline, samples_dir);
  }
  // Without timing at warm-up, the layout measured faster in the common case: channels-last
  // on CUDA (cuDNN), NCHW on a CPU (docs/configuration.md, "Runtime").
  const bool cuda = absl::StartsWith(device_, "cuda");
  runtime.channels_last = options_.layout == LayoutChoice::kChannelsLast ||
                          (options_.layout == LayoutChoice::kAuto && cuda);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<SegmentationModel>> model = LoadSegmentationModel(
      SpecFromConfig(config), FormatFromConfig(config.weights().format()), weights_path, runtime);
  std::string warm_line;
  if (!model.ok()) {
    ws->reason = std::string(model.status().message());
  } else {
    ws->model = *std::move(model);
    BatchPathOptions options = MakeBatchPathOptions(ws->pipeline, options_.max_forward_batch);
    options.padded_batch_sizes =
        options_.padded_batch_sizes.empty()
            ? DefaultPaddedBatchSizes(ws->model->device(), options_.max_forward_batch)
            : options_.padded_batch_sizes;
    ws->batch_path = std::make_unique<BatchPath>(ws->model.get(), std::move(options));
    ws->ready = true;
    if (options_.warm_up) {
      // Every padded batch size once: the first pass of a shape allocates and picks
      // convolution algorithms; better here than in a client's latency.
      absl::StatusOr<std::string> warm =
          ws->batch_path->WarmUp(options_.layout == LayoutChoice::kAuto);
      if (!warm.ok()) {
        ws->ready = false;
        ws->reason = absl::StrCat("warm-up failed: ", warm.status().message());
      } else {
        warm_line = absl::StrCat("; ", *warm);
      }
    }
  }
  if (ws->ready) {
    Log(absl::StrCat("weight set ", ws->name, " ready (", ws->model->Describe(), ", ",
                     ws->model->runtime(), ") in ", SecondsSince(start), " s", warm_line));
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
  response->clear_items();
  for (int i = 0; i < n; ++i) response->add_items()->set_id(request.items(i).id());
  job->pending = n;
  for (int i = 0; i < n; ++i) pool_->Schedule([this, job, i] { DecodeItem(job, i); });
}

void WorkerEngine::DecodeItem(const std::shared_ptr<Job>& job, int index) {
  const WeightSet& ws = *job->weight_set;
  v1::StageTimings* timings = job->response->mutable_items(index)->mutable_result()->mutable_timings();
  int reduction = 1, bands = 1;  // how the image was decoded, for the metrics
  try {
    auto start = std::chrono::steady_clock::now();
    const v1::InferItem& item = job->request->items(index);
    const absl::Status valid = ValidateOutputOptions(item.outputs());
    absl::StatusOr<DecodedImage> rgb =
        valid.ok() ? DecodeImageMessageAtLeast(item.image(), options_.limits, ws.minimum_decode,
                                               JpegBandOptions{options_.decode_threads})
                   : absl::StatusOr<DecodedImage>(valid);
    // The overlay blends the image at its original size: decoded whole as well, so that the
    // labels never depend on which outputs were asked for.
    absl::StatusOr<cv::Mat> whole;
    if (rgb.ok() && rgb->reduction > 1 && item.outputs().overlay_png()) {
      whole = DecodeImageMessage(item.image(), options_.limits);
      if (!whole.ok()) rgb = whole.status();
    }
    timings->set_decode_seconds(SecondsSince(start));
    if (!rgb.ok()) {
      job->status[index] = rgb.status();
    } else {
      reduction = rgb->reduction;
      bands = rgb->bands;
      if (int64_t{rgb->height} * rgb->width >= kLargeImagePixels) job->large = true;
      start = std::chrono::steady_clock::now();
      job->prepared[index] = Preprocess(*rgb, ws.pipeline);
      if (whole.ok() && !whole->empty()) job->prepared[index].rgb = *std::move(whole);
      job->prepared[index].item.want_probabilities =
          job->request->items(index).outputs().probabilities();
      timings->set_preprocess_seconds(SecondsSince(start));
    }
  } catch (const std::exception& e) {
    job->status[index] = absl::InternalError(absl::StrCat("preprocessing failed: ", e.what()));
  }
  if (metrics_ != nullptr) {
    metrics_->ObserveStage(ws.name, "decode", timings->decode_seconds());
    if (job->status[index].ok()) metrics_->CountDecode(ws.name, reduction, bands);
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
  // On CUDA, two streams: the batch being enqueued and the one the device is computing.
  std::vector<c10::Stream> streams;
  try {
    streams = DeviceStreams(torch::Device(device_), 2);
  } catch (const c10::Error& e) {
    // A bad or absent device: the weight sets fail to load and say why; run stream-less.
  }
  const size_t max_in_flight = streams.empty() ? 1 : streams.size();
  // On a CPU (no streams) each pass runs here, start to end: size its OpenMP team to the
  // passes running with it (intra_op_threads.h). Not on CUDA, where these threads only
  // enqueue work.
  const bool share_threads = options_.share_intra_op_threads && streams.empty() &&
                             options_.instances > 1 && intra_op_threads_ > 1;
  int threads_now = at::get_num_threads();
  std::deque<std::shared_ptr<Job>> in_flight;
  size_t next_stream = 0;
  for (;;) {
    std::shared_ptr<Job> job;
    int busy = 0;  // passes that want to run now, this one included
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !forward_queue_.empty();
      };
      // With a batch on the device, take the next one only if it is already waiting.
      if (in_flight.empty()) mu_.Await(absl::Condition(&ready));
      if (!forward_queue_.empty()) {
        job = forward_queue_.front();
        forward_queue_.pop_front();
        busy = ++forwards_running_ + static_cast<int>(forward_queue_.size());
      }
    }
    if (job == nullptr) {
      if (in_flight.empty()) return;  // stopping
      CollectBatch(in_flight.front());
      in_flight.pop_front();
      continue;
    }
    if (share_threads) {
      const int share = IntraOpShare(intra_op_threads_, options_.instances, busy);
      if (share != threads_now && SetIntraOpThreadsOfThisThread(share)) threads_now = share;
    }
    std::optional<c10::Stream> stream;
    if (!streams.empty()) stream = streams[next_stream++ % streams.size()];
    if (SubmitBatch(job, stream)) {
      in_flight.push_back(job);
      if (metrics_ != nullptr) metrics_->CountForwardPass(job->weight_set->name, threads_now);
    }
    // Keep at most max_in_flight batches submitted: wait for the oldest beyond that.
    while (in_flight.size() >= max_in_flight) {
      CollectBatch(in_flight.front());
      in_flight.pop_front();
    }
    absl::MutexLock lock(&mu_);
    --forwards_running_;
  }
}

bool WorkerEngine::SubmitBatch(const std::shared_ptr<Job>& job, std::optional<c10::Stream> stream) {
  const WeightSet& ws = *job->weight_set;
  std::vector<const BatchItem*> items;
  for (size_t i = 0; i < job->prepared.size(); ++i) {
    if (!job->status[i].ok()) continue;
    job->ok_items.push_back(static_cast<int>(i));
  }
  if (!job->ok_items.empty() && job->cancelled && job->cancelled()) {
    for (int i : job->ok_items) {
      job->status[i] = absl::CancelledError("the caller cancelled the batch before it ran");
    }
    job->ok_items.clear();
  }
  int cost = 0;
  for (int i : job->ok_items) {
    items.push_back(&job->prepared[i].item);
    cost += job->prepared[i].cost();
  }
  job->response->set_batch_cost(cost);
  if (items.empty()) {
    FinishJob(job);
    return false;
  }
  job->submitted = std::chrono::steady_clock::now();
  job->run = ws.batch_path->Submit(items, stream);
  if (metrics_ != nullptr) {
    metrics_->ObserveBatchCost(ws.name, static_cast<double>(cost));
  }
  return true;
}

void WorkerEngine::CollectBatch(const std::shared_ptr<Job>& job) {
  const WeightSet& ws = *job->weight_set;
  const absl::Status failed = job->run->Wait();
  // Submit to outputs on the host: on CUDA this includes waiting behind the batch before.
  const double seconds = SecondsSince(job->submitted);
  job->response->set_forward_seconds(seconds);
  if (metrics_ != nullptr) {
    metrics_->ObserveStage(ws.name, "forward", seconds);
    metrics_->CountDeviceBytes(ws.name, kToDevice, job->run->bytes_to_device());
  }
  if (!failed.ok()) {
    Log(absl::StrCat("forward pass of ", ws.name, " failed: ", failed.message()));
    for (int i : job->ok_items) job->status[i] = failed;
    FinishJob(job);
    return;
  }
  if (metrics_ != nullptr) metrics_->CountDeviceBytes(ws.name, kToHost, job->run->bytes_to_host());
  for (int i : job->ok_items) {
    job->response->mutable_items(i)->mutable_result()->mutable_timings()->set_forward_seconds(
        seconds);
  }
  job->pending = static_cast<int>(job->ok_items.size());
  for (size_t k = 0; k < job->ok_items.size(); ++k) {
    const int i = job->ok_items[k];
    pool_->Schedule([this, job, i, k] {
      FinishItem(job, i, static_cast<int>(k));
    });
  }
}

void WorkerEngine::FinishItem(const std::shared_ptr<Job>& job, int index, int position) {
  const WeightSet& ws = *job->weight_set;
  const v1::InferItem& item = job->request->items(index);
  v1::SegmentationResult* result = job->response->mutable_items(index)->mutable_result();
  try {
    auto start = std::chrono::steady_clock::now();
    // On a CPU the labels are restored here, in parallel over items; on a device they were
    // restored there and this hands over the copies.
    ItemOutputs outputs = job->run->TakeOutputs(position);
    result->mutable_timings()->set_postprocess_seconds(SecondsSince(start));
    start = std::chrono::steady_clock::now();
    EncodeOutputs(job->prepared[index], outputs, ws.pipeline, item.outputs(), result);
    result->mutable_timings()->set_encode_seconds(SecondsSince(start));
  } catch (const std::exception& e) {
    job->status[index] = absl::InternalError(absl::StrCat("postprocessing failed: ", e.what()));
  }
  // Free the big buffers as soon as this item is done, not when the whole batch is.
  job->prepared[index] = PreparedImage();
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
  job->run.reset();
  {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    PublishSlotsLocked();
  }
  // The answer is still to be sent (and freed): release at the next Status poll instead.
  if (job->large) release_memory_ = true;
  done(absl::OkStatus());
}

v1::StatusResponse WorkerEngine::Status() const {
  // Once a second from each gateway: after a huge image's answer has gone, its memory goes
  // back to the system here.
  if (release_memory_.exchange(false)) ReleaseFreeMemory();
  v1::StatusResponse status;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, ws] : weight_sets_) {
    v1::WeightSetStatus* s = status.add_weight_sets();
    s->set_name(name);
    s->set_ready(ws->ready);
    std::string reason = ws->reason;
    for (const std::string& prefix : repository_prefixes_) {
      reason = absl::StrReplaceAll(reason, {{prefix, ""}});
    }
    s->set_reason(std::move(reason));
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
