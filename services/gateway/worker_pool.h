// WorkerPool: the gateway's view of its workers.
//
// Workers come from a list ("host:port,host:port") or a DNS name ("dns:///name:port"),
// re-resolved periodically, which is how a Kubernetes headless Service lists its pods.
// A background thread polls each worker's Status: the weight sets it hosts, their configs
// and readiness, its batch slots, whether it drains. What it learns goes into the scheduler
// (SetWorker / SetQueue / RemoveWorker). A worker that fails a poll or an Infer is taken out
// and polled again after an exponential backoff; workers that appear or disappear are picked
// up without a restart.
//
// Thread-safe. Callbacks given to Infer run on gRPC's threads.
#ifndef DEEPLAB_SERVICES_GATEWAY_WORKER_POOL_H_
#define DEEPLAB_SERVICES_GATEWAY_WORKER_POOL_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/tls.h"
#include "deeplab/v1/segmentation.pb.h"
#include "deeplab/v1/worker.grpc.pb.h"
#include "scheduler/scheduler.h"

namespace deeplab {

struct WorkerPoolOptions {
  // "host:port[,host:port...]" or "dns:///name:port".
  std::string workers;
  // How often the worker list is resolved again (DNS) and each worker's Status polled.
  absl::Duration resolve_interval = absl::Seconds(5);
  absl::Duration status_interval = absl::Seconds(1);
  // A Status poll slower than this counts as a failure.
  absl::Duration status_timeout = absl::Seconds(2);
  // Backoff before a failed worker is polled again: doubles from initial up to max.
  absl::Duration initial_backoff = absl::Milliseconds(250);
  absl::Duration max_backoff = absl::Seconds(10);
  int max_message_bytes = 512 << 20;
  // TLS (and the gateway's client certificate) towards workers; plaintext when disabled.
  ClientTlsOptions tls;
};

// Parsed --workers: either a fixed list or a DNS name to resolve.
struct WorkerTargets {
  std::vector<std::string> addresses;  // fixed list
  std::string dns_name;                // or: name and port to resolve
  int dns_port = 0;
};
absl::StatusOr<WorkerTargets> ParseWorkerTargets(const std::string& spec);
// "ip:port" for every address the name resolves to (IPv6 in brackets), sorted.
absl::StatusOr<std::vector<std::string>> ResolveDns(const std::string& name, int port);

class WorkerPool {
 public:
  // The scheduler must outlive the pool. `on_change` (may be null) runs after each poll
  // round, outside the pool's lock: the gateway kicks its scheduler loop and updates health.
  // options.tls must have passed ValidateClientTls (the process ends otherwise).
  WorkerPool(WorkerPoolOptions options, scheduler::Scheduler* scheduler,
             std::function<void()> on_change);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Called (outside the pool's lock, on the pool's thread) with a worker's address when a
  // Status poll of it fails: the process stopped answering (hung, SIGSTOPped, unreachable).
  // Not for a worker that answers "draining": its batches still finish. Set before Start.
  void SetOnUnresponsive(std::function<void(const std::string& worker)> callback);

  // Resolves and polls once synchronously, then keeps doing it on a background thread.
  void Start();
  void Stop();

  using InferDone = std::function<void(grpc::Status)>;
  // Sends a batch to a worker. request/response/context must stay valid until done runs.
  // Unknown worker: done runs at once with UNAVAILABLE.
  void Infer(const std::string& worker, grpc::ClientContext* context,
             const v1::InferRequest* request, v1::InferResponse* response, InferDone done);

  // The worker failed a call made in its membership `generation` (see Generation): take it
  // out of the scheduler, before this returns, and back off before polling it. A failure
  // from an older membership (the worker was re-added since) is ignored.
  void MarkFailed(const std::string& worker, uint64_t generation, const std::string& why);

  // Generation of the worker's current membership, 0 while it is unhealthy or unknown: a
  // batch's slot is released only if the worker was not removed (and maybe re-added) in
  // between (its old slots are gone).
  uint64_t Generation(const std::string& worker) const;

  // What the weight sets are and where they are ready; with `only`, just that weight set (the
  // worker counts are always the whole pool's).
  v1::ListModelsResponse ListModels(const std::string* only = nullptr) const;
  // What admitting a request needs to know of its weight set, read under one lock without
  // copying configs: whether some healthy worker has it ready, and its patch geometry.
  struct ModelRoute {
    bool ready = false;
    int input_height = 0;
    int input_width = 0;
    int tile_stride = 0;  // 0: not tiled
  };
  // nullopt when no worker knows the weight set.
  std::optional<ModelRoute> Route(const std::string& model) const;
  std::vector<std::string> ModelNames() const;
  int HealthyWorkers() const;
  // Mean batch slots of the healthy workers; 0 when none is healthy.
  double MeanBatchSlots() const;
  int KnownWorkers() const;

 private:
  struct Worker {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Worker::Stub> stub;
    bool healthy = false;
    uint64_t generation = 0;
    absl::Duration backoff;
    absl::Time next_poll = absl::InfinitePast();
    v1::StatusResponse status;
    std::string last_error;
  };

  void Loop();
  void PollOnce();
  std::vector<std::string> Targets();

  const WorkerPoolOptions options_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;  // for every worker's channel
  scheduler::Scheduler* const scheduler_;
  const std::function<void()> on_change_;
  std::function<void(const std::string&)> on_unresponsive_;
  WorkerTargets targets_;

  // Held while the scheduler's view of the workers changes, and taken before mu_: a poll's
  // answer read before a MarkFailed cannot put the failed worker back afterwards.
  absl::Mutex membership_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Worker>> workers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> queues_set_ ABSL_GUARDED_BY(mu_);  // model -> options key
  absl::Time next_resolve_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::vector<std::string> resolved_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
  std::thread thread_;
};

}  // namespace deeplab

#endif  // DEEPLAB_SERVICES_GATEWAY_WORKER_POOL_H_
