#include "services/gateway/worker_pool.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <iostream>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/model_info.h"

namespace deeplab {
namespace {

void Log(const std::string& line) { LogLine("deeplab-gateway", line); }

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(absl::string_view text) {
  const size_t colon = text.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(text.substr(colon + 1), &port) || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not host:port (for example 127.0.0.1:8001)"));
  }
  return std::make_pair(std::string(text.substr(0, colon)), port);
}

scheduler::QueueOptions QueueOptionsFrom(const v1::BatchingConfig& b) {
  scheduler::QueueOptions q;
  if (b.max_batch_size() > 0) q.max_batch_size = b.max_batch_size();
  q.max_queue_delay = absl::Microseconds(b.max_queue_delay_micros());
  if (b.max_queue_size() > 0) q.max_queue_size = b.max_queue_size();
  if (b.default_timeout_micros() > 0) q.default_timeout = absl::Microseconds(b.default_timeout_micros());
  return q;
}

}  // namespace

absl::StatusOr<WorkerTargets> ParseWorkerTargets(const std::string& spec) {
  WorkerTargets targets;
  if (absl::StartsWith(spec, "dns:///")) {
    auto host_port = SplitHostPort(absl::StripPrefix(spec, "dns:///"));
    if (!host_port.ok()) return host_port.status();
    targets.dns_name = host_port->first;
    targets.dns_port = host_port->second;
    return targets;
  }
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    if (auto host_port = SplitHostPort(part); !host_port.ok()) return host_port.status();
    targets.addresses.emplace_back(part);
  }
  if (targets.addresses.empty()) {
    return absl::InvalidArgumentError(
        "--workers is empty: give host:port[,host:port...] or dns:///name:port");
  }
  return targets;
}

absl::StatusOr<std::vector<std::string>> ResolveDns(const std::string& name, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const int rc = getaddrinfo(name.c_str(), nullptr, &hints, &result);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", name, ": ", gai_strerror(rc)));
  }
  std::set<std::string> addresses;
  for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {0};
    if (a->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, text, sizeof(text));
      addresses.insert(absl::StrCat(text, ":", port));
    } else if (a->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, text,
                sizeof(text));
      addresses.insert(absl::StrCat("[", text, "]:", port));
    }
  }
  freeaddrinfo(result);
  return std::vector<std::string>(addresses.begin(), addresses.end());
}

WorkerPool::WorkerPool(WorkerPoolOptions options, scheduler::Scheduler* scheduler,
                       std::function<void()> on_change)
    : options_(std::move(options)), scheduler_(scheduler), on_change_(std::move(on_change)) {
  auto targets = ParseWorkerTargets(options_.workers);
  if (targets.ok()) targets_ = *targets;
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(options_.tls, nullptr);
  if (!credentials.ok()) {
    // Never fall back to plaintext: main validates the files before it gets here.
    Log(absl::StrCat("worker TLS: ", credentials.status().message()));
    std::abort();
  }
  credentials_ = *std::move(credentials);
}

WorkerPool::~WorkerPool() { Stop(); }

void WorkerPool::Start() {
  PollOnce();
  thread_ = std::thread([this] { Loop(); });
}

void WorkerPool::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void WorkerPool::Loop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), options_.status_interval)) return;
    }
    PollOnce();
  }
}

std::vector<std::string> WorkerPool::Targets() {
  if (targets_.dns_name.empty()) return targets_.addresses;
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (now >= next_resolve_) {
    next_resolve_ = now + options_.resolve_interval;
    mu_.Unlock();  // no lock held across a blocking DNS query
    auto resolved = ResolveDns(targets_.dns_name, targets_.dns_port);
    mu_.Lock();
    if (resolved.ok()) {
      resolved_ = *resolved;
    } else {
      Log(absl::StrCat(resolved.status().message(), "; keeping the last list"));
    }
  }
  return resolved_;
}

void WorkerPool::PollOnce() {
  const std::vector<std::string> targets = Targets();
  std::vector<std::string> removed;
  std::vector<std::shared_ptr<Worker>> to_poll;
  {
    absl::MutexLock lock(&mu_);
    const std::set<std::string> wanted(targets.begin(), targets.end());
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (wanted.count(it->first) == 0) {
        Log(absl::StrCat("worker ", it->first, " left"));
        removed.push_back(it->first);
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
    for (const std::string& address : targets) {
      std::shared_ptr<Worker>& w = workers_[address];
      if (w == nullptr) {
        w = std::make_shared<Worker>();
        w->address = address;
        grpc::ChannelArguments args;
        args.SetMaxReceiveMessageSize(options_.max_message_bytes);
        args.SetMaxSendMessageSize(options_.max_message_bytes);
        // Reconnect quickly after a worker restarts; the default backs off up to 2 minutes.
        args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
        if (!options_.tls.server_name.empty()) {
          args.SetSslTargetNameOverride(options_.tls.server_name);
        }
        w->channel = grpc::CreateCustomChannel(address, credentials_, args);
        w->stub = v1::Worker::NewStub(w->channel);
        w->backoff = options_.initial_backoff;
        Log(absl::StrCat("worker ", address, " found"));
      }
      if (absl::Now() >= w->next_poll) to_poll.push_back(w);
    }
  }
  {
    absl::MutexLock membership(&membership_mu_);
    for (const std::string& address : removed) scheduler_->RemoveWorker(address);
  }

  // Poll all due workers at once, so one slow worker does not delay the others.
  struct Poll {
    std::shared_ptr<Worker> worker;
    grpc::ClientContext context;
    v1::StatusRequest request;
    v1::StatusResponse response;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Poll>> polls;
  absl::Mutex done_mu;
  int pending = static_cast<int>(to_poll.size());
  for (const auto& w : to_poll) {
    auto poll = std::make_unique<Poll>();
    poll->worker = w;
    poll->context.set_deadline(absl::ToChronoTime(absl::Now() + options_.status_timeout));
    Poll* p = poll.get();
    polls.push_back(std::move(poll));
    w->stub->async()->Status(&p->context, &p->request, &p->response,
                             [p, &done_mu, &pending](grpc::Status s) {
                               p->status = std::move(s);
                               absl::MutexLock lock(&done_mu);
                               --pending;
                             });
  }
  {
    absl::MutexLock lock(&done_mu);
    auto all_done = [&pending]() { return pending == 0; };
    done_mu.Await(absl::Condition(&all_done));
  }

  struct Update {
    std::string address;
    bool healthy;
    uint64_t generation;
    std::vector<std::string> models;
    int slots;
  };
  std::vector<Update> updates;
  std::vector<std::string> unresponsive;
  std::vector<std::pair<std::string, scheduler::QueueOptions>> queues;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& p : polls) {
      Worker& w = *p->worker;
      if (workers_.count(w.address) == 0) continue;  // left meanwhile
      const bool ok = p->status.ok() && !p->response.draining();
      if (ok) {
        if (!w.healthy) {
          w.generation = next_generation_++;
          Log(absl::StrCat("worker ", w.address, " healthy (", p->response.weight_sets_size(),
                           " weight sets, ", p->response.batch_slots(), " slots)"));
        }
        w.healthy = true;
        w.backoff = options_.initial_backoff;
        w.next_poll = absl::InfinitePast();
        w.status = p->response;
        Update u{w.address, true, w.generation, {}, p->response.batch_slots()};
        for (const auto& ws : p->response.weight_sets()) {
          if (ws.ready()) u.models.push_back(ws.name());
          if (!ws.has_config()) continue;
          const std::string key = ws.config().batching().SerializeAsString();
          auto it = queues_set_.find(ws.name());
          if (it == queues_set_.end() || it->second != key) {
            queues_set_[ws.name()] = key;
            queues.emplace_back(ws.name(), QueueOptionsFrom(ws.config().batching()));
          }
        }
        updates.push_back(std::move(u));
      } else {
        const std::string why = p->status.ok() ? "draining" : p->status.error_message();
        if (w.healthy || w.last_error != why) {
          Log(absl::StrCat("worker ", w.address, " unavailable: ", why, "; next try in ",
                           absl::FormatDuration(w.backoff)));
        }
        if (w.healthy) updates.push_back(Update{w.address, false, 0, {}, 0});
        if (!p->status.ok()) unresponsive.push_back(w.address);
        w.healthy = false;
        w.last_error = why;
        if (p->status.ok()) w.status = p->response;  // draining: still report what it has
        w.next_poll = absl::Now() + w.backoff;
        w.backoff = std::min(options_.max_backoff, w.backoff * 2);
      }
    }
  }
  for (const auto& [model, q] : queues) {
    if (absl::Status s = scheduler_->SetQueue(model, q); !s.ok()) {
      Log(absl::StrCat("weight set ", model, ": batching options refused: ", s.message()));
    }
  }
  {
    absl::MutexLock membership(&membership_mu_);
    for (const Update& u : updates) {
      if (!u.healthy) {
        scheduler_->RemoveWorker(u.address);
      } else if (Generation(u.address) == u.generation) {
        // Otherwise a batch failed on it since the poll (or it left): it stays out.
        scheduler_->SetWorker(u.address, u.models, u.slots);
      }
    }
  }
  if (on_unresponsive_) {
    for (const std::string& address : unresponsive) on_unresponsive_(address);
  }
  if (on_change_) on_change_();
}

void WorkerPool::SetOnUnresponsive(std::function<void(const std::string& worker)> callback) {
  on_unresponsive_ = std::move(callback);
}

void WorkerPool::Infer(const std::string& worker, grpc::ClientContext* context,
                       const v1::InferRequest* request, v1::InferResponse* response,
                       InferDone done) {
  std::shared_ptr<Worker> w;
  {
    absl::MutexLock lock(&mu_);
    auto it = workers_.find(worker);
    if (it != workers_.end()) w = it->second;
  }
  if (w == nullptr) {
    done(grpc::Status(grpc::StatusCode::UNAVAILABLE, "worker " + worker + " is gone"));
    return;
  }
  // The stub is kept alive by the shared_ptr captured until the call completes.
  w->stub->async()->Infer(context, request, response,
                          [w, done = std::move(done)](grpc::Status s) { done(std::move(s)); });
}

void WorkerPool::MarkFailed(const std::string& worker, uint64_t generation,
                            const std::string& why) {
  {
    // Out of the scheduler before any caller returns (a second caller waits here for the
    // first): a batch requeued after MarkFailed is never sent to this worker again.
    absl::MutexLock membership(&membership_mu_);
    {
      absl::MutexLock lock(&mu_);
      auto it = workers_.find(worker);
      if (it == workers_.end()) return;
      Worker& w = *it->second;
      // Already out, or a late failure of an older membership: nothing to do.
      if (!w.healthy || w.generation != generation) return;
      w.healthy = false;
      w.last_error = why;
      w.next_poll = absl::Now() + w.backoff;
      w.backoff = std::min(options_.max_backoff, w.backoff * 2);
    }
    scheduler_->RemoveWorker(worker);
  }
  Log(absl::StrCat("worker ", worker, " failed: ", why, "; its batches run elsewhere"));
  if (on_change_) on_change_();
}

uint64_t WorkerPool::Generation(const std::string& worker) const {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  return it == workers_.end() || !it->second->healthy ? 0 : it->second->generation;
}

v1::ListModelsResponse WorkerPool::ListModels(const std::string* only) const {
  v1::ListModelsResponse out;
  std::map<std::string, v1::ModelInfo> models;
  absl::MutexLock lock(&mu_);
  for (const auto& [address, w] : workers_) {
    if (w->healthy) out.set_healthy_workers(out.healthy_workers() + 1);
    for (const auto& ws : w->status.weight_sets()) {
      if (only != nullptr && ws.name() != *only) continue;
      v1::ModelInfo& info = models[ws.name()];
      if (info.name().empty()) info = ModelInfoFromConfig(ws.name(), ws.config());
      if (ws.ready() && w->healthy) {
        info.set_ready(true);
        info.add_ready_workers(address);
      } else if (!ws.ready()) {
        info.add_not_ready_reasons(absl::StrCat(address, ": ", ws.reason()));
      }
    }
  }
  out.set_workers(static_cast<int>(workers_.size()));
  for (auto& [name, info] : models) *out.add_models() = std::move(info);
  return out;
}

std::optional<WorkerPool::ModelRoute> WorkerPool::Route(const std::string& model) const {
  std::optional<ModelRoute> route;
  absl::MutexLock lock(&mu_);
  for (const auto& [address, w] : workers_) {
    for (const auto& ws : w->status.weight_sets()) {
      if (ws.name() != model) continue;
      if (!route.has_value()) {
        route.emplace();
        const v1::ModelConfig& c = ws.config();
        route->input_height = c.input().height();
        route->input_width = c.input().width();
        route->tile_stride = c.has_tiling() ? c.tiling().stride() : 0;
      }
      route->ready = route->ready || (ws.ready() && w->healthy);
    }
  }
  return route;
}

std::vector<std::string> WorkerPool::ModelNames() const {
  std::set<std::string> names;
  absl::MutexLock lock(&mu_);
  for (const auto& [address, w] : workers_) {
    for (const auto& ws : w->status.weight_sets()) names.insert(ws.name());
  }
  return std::vector<std::string>(names.begin(), names.end());
}

int WorkerPool::HealthyWorkers() const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [address, w] : workers_) n += w->healthy;
  return n;
}

double WorkerPool::MeanBatchSlots() const {
  absl::MutexLock lock(&mu_);
  int healthy = 0;
  double slots = 0;
  for (const auto& [address, w] : workers_) {
    if (!w->healthy) continue;
    ++healthy;
    slots += w->status.batch_slots();
  }
  return healthy == 0 ? 0 : slots / healthy;
}

int WorkerPool::KnownWorkers() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(workers_.size());
}

}  // namespace deeplab
