#include "services/gateway/gateway_metrics.h"

namespace deeplab {
namespace {

// 1 ms to 2 minutes: a cached tiny image up to a queued Xception batch on a CPU.
prometheus::Histogram::BucketBoundaries SecondsBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}

}  // namespace

GatewayMetrics::GatewayMetrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("deeplab_gateway_requests_total")
                    .Help("Requests answered, by weight set and gRPC code")
                    .Register(registry)),
      request_seconds_(prometheus::BuildHistogram()
                           .Name("deeplab_gateway_request_seconds")
                           .Help("End-to-end seconds from arrival to answer")
                           .Register(registry)),
      queue_seconds_(prometheus::BuildHistogram()
                         .Name("deeplab_gateway_queue_seconds")
                         .Help("Seconds a request waited for a batch and a worker")
                         .Register(registry)),
      compute_seconds_(prometheus::BuildHistogram()
                           .Name("deeplab_gateway_compute_seconds")
                           .Help("Seconds of the worker call that ran the request's batch")
                           .Register(registry)),
      batch_size_(prometheus::BuildHistogram()
                      .Name("deeplab_gateway_batch_size")
                      .Help("Requests per batch sent to a worker")
                      .Register(registry)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("deeplab_gateway_queue_depth")
                       .Help("Requests waiting in the gateway, by weight set")
                       .Register(registry)),
      queue_oldest_seconds_(prometheus::BuildGauge()
                                .Name("deeplab_gateway_queue_oldest_seconds")
                                .Help("Seconds the oldest waiting request has waited, by "
                                      "weight set")
                                .Register(registry)),
      slot_demand_(prometheus::BuildGauge()
                       .Name("deeplab_gateway_slot_demand")
                       .Help("Worker batch slots the weight set's load needs: arrival rate "
                             "times measured work, plus the backlog to drain within the "
                             "queue-time target")
                       .Register(registry)),
      worker_demand_(prometheus::BuildGauge()
                         .Name("deeplab_gateway_worker_demand")
                         .Help("Workers this gateway's load keeps busy at the planned "
                               "utilization, as a fraction with no floor; worker autoscaling "
                               "sums it over gateways and rounds up")
                         .Register(registry)),
      workers_needed_(prometheus::BuildGauge()
                          .Name("deeplab_gateway_workers_needed")
                          .Help("Workers this gateway alone needs to keep queue time under the "
                                "target: worker_demand rounded up, at least 1")
                          .Register(registry)),
      workers_(prometheus::BuildGauge()
                   .Name("deeplab_gateway_workers")
                   .Help("Workers known to the gateway, by state")
                   .Register(registry)),
      retries_(prometheus::BuildCounter()
                   .Name("deeplab_gateway_retries_total")
                   .Help("Requests sent again after their worker failed")
                   .Register(registry)),
      rejections_(prometheus::BuildCounter()
                      .Name("deeplab_gateway_rejections_total")
                      .Help("Requests refused or dropped before running, by reason")
                      .Register(registry)),
      api_calls_(prometheus::BuildCounter()
                     .Name("deeplab_gateway_api_calls_total")
                     .Help("Open Inference Protocol calls answered, by api (oip_grpc, "
                           "oip_rest), method and gRPC code")
                     .Register(registry)) {}

void GatewayMetrics::CountRequest(const std::string& model, const std::string& code,
                                  double total_seconds) {
  requests_.Add({{"model", model}, {"code", code}}).Increment();
  request_seconds_.Add({{"model", model}}, SecondsBuckets()).Observe(total_seconds);
}

void GatewayMetrics::ObserveRun(const std::string& model, double queue_seconds,
                                double compute_seconds) {
  queue_seconds_.Add({{"model", model}}, SecondsBuckets()).Observe(queue_seconds);
  compute_seconds_.Add({{"model", model}}, SecondsBuckets()).Observe(compute_seconds);
}

void GatewayMetrics::ObserveBatch(const std::string& model, int size) {
  batch_size_.Add({{"model", model}},
                  prometheus::Histogram::BucketBoundaries{1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64})
      .Observe(size);
}

void GatewayMetrics::SetQueueDepth(const std::string& model, int tasks) {
  queue_depth_.Add({{"model", model}}).Set(tasks);
}

void GatewayMetrics::SetLoad(const std::string& model, double oldest_wait_seconds,
                             double slot_demand) {
  queue_oldest_seconds_.Add({{"model", model}}).Set(oldest_wait_seconds);
  slot_demand_.Add({{"model", model}}).Set(slot_demand);
}

void GatewayMetrics::SetWorkersNeeded(double demand, int workers) {
  worker_demand_.Add({}).Set(demand);
  workers_needed_.Add({}).Set(workers);
}

void GatewayMetrics::SetWorkers(int healthy, int unhealthy) {
  workers_.Add({{"state", "healthy"}}).Set(healthy);
  workers_.Add({{"state", "unhealthy"}}).Set(unhealthy);
}

void GatewayMetrics::CountRetry(const std::string& model) {
  retries_.Add({{"model", model}}).Increment();
}

void GatewayMetrics::CountRejection(const std::string& model, const std::string& reason) {
  rejections_.Add({{"model", model}, {"reason", reason}}).Increment();
}

void GatewayMetrics::CountApiCall(const std::string& api, const std::string& method,
                                  absl::StatusCode code) {
  api_calls_
      .Add({{"api", api}, {"method", method}, {"code", absl::StatusCodeToString(code)}})
      .Increment();
}

}  // namespace deeplab
