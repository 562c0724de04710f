#include "services/gateway/gateway.h"

#include <atomic>
#include <iostream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/output_options.h"
#include "common/image_codec.h"
#include "common/status_util.h"
#include "common/tiling.h"

namespace deeplab {
namespace {

std::string CodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

// A client's weight set name as error messages quote it: at most 64 bytes of it. A 10 KB
// name echoed whole made the status too large for gRPC's metadata limit, and the client saw
// RESOURCE_EXHAUSTED instead of the real error.
bool Retryable(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:         // worker down, draining, or weight set unready
    case grpc::StatusCode::CANCELLED:           // worker shut down mid-call
    case grpc::StatusCode::RESOURCE_EXHAUSTED:  // worker overloaded
    case grpc::StatusCode::NOT_FOUND:           // worker no longer hosts the weight set
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::UNKNOWN:
      return true;
    default:
      return false;
  }
}

std::string RejectionReason(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kResourceExhausted:
      return "queue_full";
    case absl::StatusCode::kDeadlineExceeded:
      return "deadline";
    case absl::StatusCode::kUnavailable:
      return "not_ready";
    case absl::StatusCode::kNotFound:
      return "unknown_model";
    case absl::StatusCode::kCancelled:
      return "cancelled";
    default:
      return "invalid";
  }
}

}  // namespace

std::string QuotedName(const std::string& name) {
  constexpr size_t kMax = 64;
  if (name.size() <= kMax) return name;
  return absl::StrCat(name.substr(0, kMax), "... (", name.size(), " bytes)");
}

struct Gateway::Pending {
  uint64_t id = 0;
  // Its image is lent to the batch that carries it (see Dispatch and ReturnImages).
  v1::SegmentRequest* request = nullptr;
  v1::SegmentResponse* response = nullptr;
  DoneCallback done;
  std::string model;  // metric label
  absl::Time arrival;
  int64_t bytes = 0;  // counted in inflight_bytes_
  bool ran = false;
};

struct Gateway::BatchCall {
  std::string worker;
  uint64_t generation = 0;
  std::string model;
  std::vector<scheduler::Task> tasks;
  grpc::ClientContext context;
  v1::InferRequest request;
  v1::InferResponse response;
  absl::Time start;
  // Set before the context is cancelled because the worker stopped answering.
  std::atomic<bool> worker_unresponsive{false};
  // The per-attempt limit, when it comes before every request's own deadline.
  absl::Time attempt_deadline = absl::InfiniteFuture();
};

Gateway::Gateway(GatewayOptions options, GatewayMetrics* metrics)
    : options_(std::move(options)), metrics_(metrics) {
  scheduler::SchedulerOptions so;
  so.max_attempts = options_.max_attempts;
  auto created = scheduler::Scheduler::Create(
      so, scheduler::RealClock::Get(), [this](scheduler::Batch b) { Dispatch(std::move(b)); },
      [this](const scheduler::Task& t, absl::Status s) { Reject(t, std::move(s)); });
  if (!created.ok()) {
    std::cerr << "deeplab-gateway: " << created.status() << std::endl;
    std::abort();  // options are validated by main before we get here
  }
  scheduler_ = *std::move(created);
  auto estimator = scheduler::LoadEstimator::Create(options_.autoscale, scheduler::RealClock::Get());
  if (!estimator.ok()) {
    std::cerr << "deeplab-gateway: " << estimator.status() << std::endl;
    std::abort();  // validated by main too
  }
  load_ = *std::move(estimator);
  pool_ = std::make_unique<WorkerPool>(options_.pool, scheduler_.get(), [this] {
    std::function<void()> callback;
    {
      absl::MutexLock lock(&mu_);
      callback = on_workers_changed_;
    }
    if (metrics_ != nullptr) {
      const int healthy = pool_->HealthyWorkers();
      metrics_->SetWorkers(healthy, pool_->KnownWorkers() - healthy);
    }
    Kick();
    if (callback) callback();
  });
  pool_->SetOnUnresponsive([this](const std::string& worker) { CancelBatchesOn(worker); });
}

Gateway::~Gateway() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (loop_.joinable()) loop_.join();
  pool_->Stop();
}

void Gateway::Start() {
  pool_->Start();
  loop_ = std::thread([this] { Loop(); });
}

void Gateway::SetOnWorkersChanged(std::function<void()> callback) {
  absl::MutexLock lock(&mu_);
  on_workers_changed_ = std::move(callback);
}

std::string Gateway::ModelLabel(const std::string& model) const {
  // Only names some worker knows become label values: clients cannot blow up cardinality.
  return pool_->Route(model).has_value() ? model : "unknown";
}

absl::StatusOr<int> Gateway::Cost(const v1::SegmentRequest& request,
                                  const WorkerPool::ModelRoute& route) {
  int64_t height = 0, width = 0;
  if (request.image().has_raw()) {
    height = request.image().raw().height();
    width = request.image().raw().width();
  } else {
    // Refuse what is not an image here, before it takes a batch slot; the header also gives
    // the size a tiled weight set needs to count patches.
    absl::StatusOr<ImageHeader> header = ProbeImageHeader(request.image().encoded());
    if (!header.ok()) return header.status();
    height = header->height;
    width = header->width;
  }
  if (route.tile_stride <= 0 || height <= 0 || width <= 0) return 1;
  const int64_t tiles =
      TileCount(height, width, route.input_height, route.input_width, route.tile_stride);
  return static_cast<int>(std::min<int64_t>(tiles, 1 << 20));
}

uint64_t Gateway::Submit(v1::SegmentRequest* lent, v1::SegmentResponse* response,
                         absl::Time deadline, DoneCallback done) {
  const v1::SegmentRequest& request = *lent;
  const absl::Time arrival = absl::Now();
  auto refuse = [&](absl::Status status, const std::string& label,
                    const char* reason = nullptr) {
    if (metrics_ != nullptr) {
      metrics_->CountRejection(label, reason != nullptr ? reason : RejectionReason(status.code()));
      metrics_->CountRequest(label, CodeName(status.code()),
                             absl::ToDoubleSeconds(absl::Now() - arrival));
    }
    done(std::move(status));
    return uint64_t{0};
  };
  {
    absl::MutexLock lock(&mu_);
    if (draining_) {
      return refuse(absl::UnavailableError("the gateway is shutting down; retry on another"),
                    "unknown");
    }
  }
  const std::string& model = request.model();
  if (model.empty()) {
    return refuse(absl::InvalidArgumentError("the request names no weight set: set model "
                                             "(ListModels lists them)"),
                  "unknown");
  }
  if (absl::Status s = ValidateOutputOptions(request.outputs()); !s.ok()) {
    return refuse(s, "unknown");
  }
  if (request.image().source_case() == v1::Image::SOURCE_NOT_SET) {
    return refuse(absl::InvalidArgumentError(
                      "the request has no image: set image.encoded (file bytes) or image.raw"),
                  ModelLabel(model));
  }
  if (options_.max_image_bytes > 0) {
    ImageLimits limits;
    limits.max_bytes = options_.max_image_bytes;
    if (absl::Status s = CheckImageBytes(request.image(), limits); !s.ok()) {
      return refuse(absl::InvalidArgumentError(absl::StrCat(s.message(), " (--max-image-bytes)")),
                    ModelLabel(model));
    }
  }
  const int64_t image_bytes = static_cast<int64_t>(request.image().encoded().size() +
                                                    request.image().raw().data().size());
  const std::optional<WorkerPool::ModelRoute> route = pool_->Route(model);
  if (!route.has_value()) {
    // No worker has answered yet (or none is healthy): the gateway cannot know the weight set
    // is unknown, so this is "retry", not "no such thing".
    if (pool_->HealthyWorkers() == 0) {
      return refuse(absl::UnavailableError(absl::StrCat(
                        "no worker is reachable yet, so weight set '", QuotedName(model),
                        "' cannot be looked up; retry (ListModels lists the weight sets once "
                        "workers answer)")),
                    "unknown");
    }
    return refuse(absl::NotFoundError(absl::StrCat("unknown weight set '", QuotedName(model),
                                                   "'; available: ",
                                                   absl::StrJoin(pool_->ModelNames(), ", "))),
                  "unknown");
  }
  if (!route->ready) {
    // Offered load all the same: with no worker ready, autoscaling must still see demand.
    load_->RecordArrival(model, 1);
    return refuse(absl::UnavailableError(absl::StrCat(
                      "weight set '", QuotedName(model), "' is not ready on any worker; see ListModels")),
                  model);
  }
  absl::StatusOr<int> cost = Cost(request, *route);
  if (!cost.ok()) return refuse(cost.status(), model);
  // Before Enqueue: a request refused because the queue is full is demand too.
  load_->RecordArrival(model, *cost);

  auto pending = std::make_shared<Pending>();
  pending->request = lent;
  pending->response = response;
  pending->done = std::move(done);
  pending->model = model;
  pending->arrival = arrival;
  pending->bytes = image_bytes;
  scheduler::Task task;
  task.model = model;
  task.cost = *cost;
  task.priority = request.priority();
  task.deadline = deadline;
  int64_t held = -1;  // set when the request would go over the in-flight bound
  {
    absl::MutexLock lock(&mu_);
    // One request alone may always be held (the message size limit bounds it).
    if (options_.max_inflight_bytes > 0 && inflight_bytes_ > 0 &&
        inflight_bytes_ + pending->bytes > options_.max_inflight_bytes) {
      held = inflight_bytes_;
    } else {
      inflight_bytes_ += pending->bytes;
      pending->id = task.id = next_id_++;
      pending_[task.id] = pending;
    }
  }
  if (held >= 0) {
    done = std::move(pending->done);
    return refuse(absl::ResourceExhaustedError(absl::StrCat(
                      "the gateway holds ", held >> 20, " MiB of images in accepted requests "
                      "and this one adds ", pending->bytes >> 20, " MiB, over its limit of ",
                      options_.max_inflight_bytes >> 20, " MiB (--max-inflight-mb); retry later")),
                  model, "memory");
  }
  if (absl::Status s = scheduler_->Enqueue(task); !s.ok()) {
    {
      absl::MutexLock lock(&mu_);
      pending_.erase(task.id);
      inflight_bytes_ -= pending->bytes;
    }
    done = std::move(pending->done);
    return refuse(std::move(s), model);
  }
  // Dispatch from this thread when the batch can go now (a free worker and no queue delay
  // left): waking the loop thread first costs a thread hand-off on every request. The loop
  // still runs, for timed work such as a queue delay running out.
  scheduler_->Poll();
  Kick();
  return task.id;
}

void Gateway::Cancel(uint64_t id) {
  if (id != 0 && scheduler_->Cancel(id)) {
    Complete(id, absl::CancelledError("the caller cancelled the request"));
  }
}

void Gateway::Complete(uint64_t id, absl::Status status) {
  std::shared_ptr<Pending> p;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    p = it->second;
    pending_.erase(it);
    inflight_bytes_ -= p->bytes;
  }
  if (metrics_ != nullptr) {
    if (!status.ok() && !p->ran) metrics_->CountRejection(p->model, RejectionReason(status.code()));
    metrics_->CountRequest(p->model, CodeName(status.code()),
                           absl::ToDoubleSeconds(absl::Now() - p->arrival));
  }
  p->done(std::move(status));
}

void Gateway::Reject(const scheduler::Task& task, absl::Status status) {
  Complete(task.id, std::move(status));
}

void Gateway::Dispatch(scheduler::Batch batch) {
  auto call = std::make_shared<BatchCall>();
  call->worker = batch.worker;
  call->generation = pool_->Generation(batch.worker);
  call->model = batch.model;
  call->request.set_model(batch.model);
  absl::Time latest = absl::InfinitePast();
  {
    absl::MutexLock lock(&mu_);
    for (const scheduler::Task& task : batch.tasks) {
      auto it = pending_.find(task.id);
      if (it == pending_.end()) continue;  // answered meanwhile (cancelled)
      v1::SegmentRequest& r = *it->second->request;
      v1::InferItem* item = call->request.add_items();
      item->set_id(absl::StrCat(task.id));
      // Lent, not copied: the image is the bulk of the request, and copying it held each
      // in-flight image twice (and was most of the gateway's memmove). ReturnImages gives it
      // back when the batch is re-sent.
      item->mutable_image()->Swap(r.mutable_image());
      *item->mutable_outputs() = r.outputs();
      call->tasks.push_back(task);
      latest = std::max(latest, task.deadline);
    }
  }
  if (metrics_ != nullptr) metrics_->ObserveBatch(batch.model, static_cast<int>(call->tasks.size()));
  if (call->tasks.empty()) {
    scheduler_->ReleaseSlot(call->worker);
    Kick();
    return;
  }
  call->start = absl::Now();
  if (options_.attempt_timeout_factor > 0) {
    int cost = 0;
    for (const scheduler::Task& task : call->tasks) cost += task.cost;
    // Before any batch of the weight set finished, min_attempt_timeout per cost unit (a
    // tiled slide's first batch may be long).
    const double per_unit = load_->Load(call->model, 0).seconds_per_unit;
    const absl::Duration limit = std::max(
        options_.min_attempt_timeout,
        per_unit > 0 ? absl::Seconds(options_.attempt_timeout_factor * per_unit * cost)
                     : options_.min_attempt_timeout * cost);
    if (call->start + limit < latest) {
      call->attempt_deadline = call->start + limit;
      latest = call->attempt_deadline;
    }
  }
  if (latest < absl::InfiniteFuture()) call->context.set_deadline(absl::ToChronoTime(latest));
  {
    absl::MutexLock lock(&mu_);
    in_flight_.emplace(call->worker, call);
  }
  pool_->Infer(call->worker, &call->context, &call->request, &call->response,
               [this, call](grpc::Status s) { OnBatchDone(call, std::move(s)); });
}

void Gateway::CancelBatchesOn(const std::string& worker) {
  std::vector<std::shared_ptr<BatchCall>> calls;
  {
    absl::MutexLock lock(&mu_);
    auto [begin, end] = in_flight_.equal_range(worker);
    for (auto it = begin; it != end; ++it) calls.push_back(it->second);
  }
  if (calls.empty()) return;
  LogLine("deeplab-gateway",
          absl::StrCat("worker ", worker, " stopped answering; re-sending its ", calls.size(),
                       calls.size() == 1 ? " batch" : " batches", " elsewhere"));
  for (const auto& call : calls) {
    call->worker_unresponsive = true;
    call->context.TryCancel();
  }
}

void Gateway::OnBatchDone(std::shared_ptr<BatchCall> call, grpc::Status status) {
  {
    absl::MutexLock lock(&mu_);
    auto [begin, end] = in_flight_.equal_range(call->worker);
    for (auto it = begin; it != end; ++it) {
      if (it->second == call) {
        in_flight_.erase(it);
        break;
      }
    }
  }
  if (call->worker_unresponsive && !status.ok()) {
    status = grpc::Status(grpc::StatusCode::CANCELLED,
                          absl::StrCat("worker ", call->worker, " stopped answering"));
  }
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
      call->attempt_deadline < absl::InfiniteFuture()) {
    // The per-attempt limit, not the requests' deadlines: the worker is stuck on it.
    status = grpc::Status(
        grpc::StatusCode::ABORTED,
        absl::StrCat("worker ", call->worker, " did not answer a batch within ",
                     absl::FormatDuration(call->attempt_deadline - call->start),
                     " (the per-attempt limit: --attempt-timeout-factor times the measured "
                     "service time, at least --min-attempt-timeout)"));
    LogLine("deeplab-gateway", absl::StrCat(status.error_message(), "; re-sending it elsewhere"));
  }
  const absl::Time now = absl::Now();
  const double compute = absl::ToDoubleSeconds(now - call->start);
  const bool retry = !status.ok() && Retryable(status.error_code());
  if (retry && status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) {
    // The worker goes out of the scheduler and its slots with it. Releasing the slot first
    // let the scheduler send the next batch to the dead worker, which failed at once, and
    // so on: a burst's requests used up their attempts in milliseconds.
    pool_->MarkFailed(call->worker, call->generation, status.error_message());
  } else if (call->generation != 0 && pool_->Generation(call->worker) == call->generation) {
    // The slot is free again unless the worker was removed (and maybe re-added) meanwhile,
    // or was already out when the batch was sent (generation 0).
    scheduler_->ReleaseSlot(call->worker);
  }

  if (retry) {
    ReturnImages(*call);
    if (metrics_ != nullptr) {
      for (size_t i = 0; i < call->tasks.size(); ++i) metrics_->CountRetry(call->model);
    }
    scheduler_->Requeue(call->tasks);
    Kick();
    return;
  }
  if (!status.ok()) {
    // DEADLINE_EXCEEDED: the latest deadline of the batch passed, so every one of them did.
    const absl::Status s = FromGrpcStatus(status);
    for (const auto& task : call->tasks) Complete(task.id, s);
    Kick();
    return;
  }
  std::map<std::string, const scheduler::Task*> tasks;
  int batch_cost = 0;
  for (const auto& task : call->tasks) {
    tasks[absl::StrCat(task.id)] = &task;
    batch_cost += task.cost;
  }
  load_->RecordBatch(call->model, batch_cost, now - call->start);
  std::set<uint64_t> answered;
  for (v1::ItemResult& item : *call->response.mutable_items()) {
    auto it = tasks.find(item.id());
    if (it == tasks.end()) continue;
    const scheduler::Task& task = *it->second;
    std::shared_ptr<Pending> p;
    {
      absl::MutexLock lock(&mu_);
      auto pit = pending_.find(task.id);
      if (pit != pending_.end()) p = pit->second;
    }
    answered.insert(task.id);
    if (p == nullptr) continue;
    p->ran = true;
    if (item.code() != 0) {
      Complete(task.id, absl::Status(static_cast<absl::StatusCode>(item.code()), item.message()));
      continue;
    }
    v1::SegmentResponse* r = p->response;
    r->set_request_id(p->request->request_id().empty() ? absl::StrCat(task.id)
                                                       : p->request->request_id());
    r->set_model(call->model);
    *r->mutable_result() = std::move(*item.mutable_result());
    v1::Timing* t = r->mutable_timing();
    const double queue = absl::ToDoubleSeconds(call->start - p->arrival);
    t->set_queue_seconds(queue);
    t->set_compute_seconds(compute);
    t->set_total_seconds(absl::ToDoubleSeconds(now - p->arrival));
    t->set_batch_size(static_cast<int>(call->tasks.size()));
    t->set_batch_cost(call->response.batch_cost());
    *t->mutable_stages() = r->result().timings();
    t->set_worker(call->worker);
    t->set_attempts(task.attempts + 1);
    if (metrics_ != nullptr) metrics_->ObserveRun(call->model, queue, compute);
    Complete(task.id, absl::OkStatus());
  }
  for (const auto& task : call->tasks) {
    if (answered.count(task.id) == 0) {
      Complete(task.id, absl::InternalError("the worker's answer left this request out"));
    }
  }
  Kick();
}

void Gateway::ReturnImages(BatchCall& call) {
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < call.tasks.size() && i < static_cast<size_t>(call.request.items_size());
       ++i) {
    auto it = pending_.find(call.tasks[i].id);
    if (it == pending_.end()) continue;  // answered meanwhile: its caller may have freed it
    it->second->request->mutable_image()->Swap(call.request.mutable_items(i)->mutable_image());
  }
}

void Gateway::Kick() {
  absl::MutexLock lock(&mu_);
  kicked_ = true;
}

void Gateway::Loop() {
  absl::Time next_metrics_update = absl::InfinitePast();
  for (;;) {
    scheduler_->Poll();
    if (metrics_ != nullptr && absl::Now() >= next_metrics_update) {
      // Sampled, not tracked per request: a few times a second is plenty.
      next_metrics_update = absl::Now() + absl::Milliseconds(250);
      UpdateLoadMetrics();
    }
    const absl::Time wake = std::min(scheduler_->NextWakeup(), absl::Now() + absl::Seconds(1));
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return kicked_ || stopping_; };
    mu_.AwaitWithDeadline(absl::Condition(&ready), wake);
    if (stopping_) return;
    kicked_ = false;
  }
}

void Gateway::UpdateLoadMetrics() {
  const double slots = pool_->MeanBatchSlots();
  if (slots > 0) slots_per_worker_ = slots;
  std::vector<scheduler::ModelLoad> loads;
  for (const std::string& model : pool_->ModelNames()) {
    const scheduler::ModelLoad load = load_->Load(model, scheduler_->QueuedCost(model));
    loads.push_back(load);
    metrics_->SetQueueDepth(model, scheduler_->QueueLength(model));
    metrics_->SetLoad(model, absl::ToDoubleSeconds(scheduler_->OldestWait(model)),
                      load.slot_demand);
  }
  const double demand = load_->WorkerDemand(loads, slots_per_worker_);
  metrics_->SetWorkersNeeded(demand, load_->WorkersNeeded(demand));
}

v1::ListModelsResponse Gateway::ListModels() const { return pool_->ListModels(); }

v1::ListModelsResponse Gateway::ListModelsFor(const std::string& name) const {
  v1::ListModelsResponse one = pool_->ListModels(&name);
  if (one.models_size() > 0) return one;
  return pool_->ListModels();
}

bool Gateway::Serving() const {
  const v1::ListModelsResponse models = pool_->ListModels();
  for (const auto& m : models.models()) {
    if (m.ready()) return true;
  }
  return false;
}

bool Gateway::Drain(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pending_.empty(); };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

}  // namespace deeplab
