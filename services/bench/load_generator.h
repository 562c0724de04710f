// The load generator of deeplab-bench: sends Segment calls (unary, or over SegmentStream
// bidi streams) to a gateway and measures one step at a time. Direct to a worker, it sends
// the same image as a one-item Infer call instead, so that the two runs side by side show
// what the gateway adds.
//
// Closed loop (RunConcurrency): N clients, each sending its next request when its previous
// one is answered. Open loop (RunRate): requests arrive at R per second (constant spacing or
// Poisson), whatever the answers do; latency counts from the arrival time, so a lagging
// generator or server shows in it rather than hiding (no coordinated omission). At most
// max_in_flight requests are outstanding; arrivals beyond are counted as dropped by the
// client instead of growing memory without bound.
//
// Everything runs on gRPC's callback API: no thread waits per request. A step returns once
// every request it sent is answered, so steps never overlap.
//
// Not thread-safe: one step at a time. Owns no threads between steps.
#ifndef DEEPLAB_SERVICES_BENCH_LOAD_GENERATOR_H_
#define DEEPLAB_SERVICES_BENCH_LOAD_GENERATOR_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "deeplab/v1/segmentation.grpc.pb.h"
#include "deeplab/v1/worker.grpc.pb.h"
#include "services/bench/bench_inputs.h"
#include "services/bench/bench_stats.h"

namespace deeplab::bench {

struct LoadOptions {
  std::string model;
  // Sent round-robin as Image.encoded.
  std::vector<BenchImage> images;
  // Class stats only by default (bench_main): small answers measure the service, not the
  // network.
  v1::OutputOptions outputs;
  // SegmentStream instead of Segment: one stream per client (closed loop), or `streams`
  // streams shared round-robin (open loop).
  bool stream = false;
  // The channel leads to a worker: each request is a Worker/Infer call with one item. A
  // worker has no stream API, so `stream` must be false.
  bool direct_to_worker = false;
  int streams = 1;
  absl::Duration warmup = absl::Seconds(2);
  absl::Duration duration = absl::Seconds(10);
  // When positive, each step measures this many requests instead of a duration.
  int64_t requests = 0;
  // Deadline of each unary call. Streams have no per-request deadline: at the end of a step
  // requests still unanswered after this long are given up as DEADLINE_EXCEEDED.
  absl::Duration timeout = absl::Seconds(30);
  bool poisson = false;
  int max_in_flight = 1024;
  uint64_t seed = 1;
};

// A channel to `address` that accepts answers as large as the gateway sends (512 MiB).
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address);

// Calls ListModels (waiting up to `connect_timeout` for the gateway to come up) and returns
// the weight set's description; asks again every 100 ms until it is ready or `wait_ready`
// has passed. UNAVAILABLE: the gateway cannot be reached; NOT_FOUND: it has no such weight
// set (the message lists those it has); FAILED_PRECONDITION: it is not ready on any worker
// (with the workers' reasons).
absl::StatusOr<v1::ModelInfo> CheckModel(const std::shared_ptr<grpc::Channel>& channel,
                                         const std::string& address, const std::string& model,
                                         absl::Duration connect_timeout, absl::Duration wait_ready);

// CheckModel for a worker: calls Worker/Status instead, with the same waiting and codes
// (NOT_FOUND lists the weight sets the worker hosts; FAILED_PRECONDITION gives its reason, or
// says the worker is draining). The description is built from the weight set's config as
// the gateway's ListModels builds it, so the report prints either alike.
absl::StatusOr<v1::ModelInfo> CheckWorkerModel(const std::shared_ptr<grpc::Channel>& channel,
                                               const std::string& address, const std::string& model,
                                               absl::Duration connect_timeout,
                                               absl::Duration wait_ready);

class LoadGenerator {
 public:
  LoadGenerator(std::shared_ptr<grpc::Channel> channel, LoadOptions options);
  ~LoadGenerator();
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  StepResult RunConcurrency(int clients);
  StepResult RunRate(double per_second);

  // One image's request, prepared once and shared by every call (gRPC only reads it). Only
  // the one the target takes is filled: images may be large.
  struct Prepared {
    v1::SegmentRequest segment;  // to a gateway
    v1::InferRequest infer;      // to a worker: one item
  };

  // How requests go out (unary calls, streams, or Infer calls to a worker); defined and
  // implemented in the .cc.
  class Sender;

 private:
  class Step;

  // Sends client `sender`'s next request unless the step is over (closed loop).
  void ClientNext(const std::shared_ptr<Step>& step, Sender* sender);
  const Prepared& NextRequest();
  std::unique_ptr<Sender> MakeSender();
  // Waits for every answer of `step` (giving up on stream requests after the timeout),
  // then closes `senders`.
  StepResult Finish(const std::shared_ptr<Step>& step,
                    const std::vector<std::unique_ptr<Sender>>& senders);

  const LoadOptions options_;
  std::unique_ptr<v1::Segmentation::Stub> stub_;
  std::unique_ptr<v1::Worker::Stub> worker_stub_;  // direct_to_worker only
  // One per image, sent round-robin.
  std::vector<Prepared> requests_;
  std::atomic<uint64_t> next_image_{0};
};

}  // namespace deeplab::bench

#endif  // DEEPLAB_SERVICES_BENCH_LOAD_GENERATOR_H_
