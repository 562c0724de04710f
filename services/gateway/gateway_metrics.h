// The gateway's Prometheus metrics (names per DESIGN.md section 6; listed in docs/operations.md).
// Thread-safe.
#ifndef DEEPLAB_SERVICES_GATEWAY_GATEWAY_METRICS_H_
#define DEEPLAB_SERVICES_GATEWAY_GATEWAY_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <string>

#include "absl/status/status.h"

namespace deeplab {

class GatewayMetrics {
 public:
  explicit GatewayMetrics(prometheus::Registry& registry);

  // One answered request: its final code and, when it ran, its timings.
  void CountRequest(const std::string& model, const std::string& code, double total_seconds);
  void ObserveRun(const std::string& model, double queue_seconds, double compute_seconds);
  void ObserveBatch(const std::string& model, int size);
  void SetQueueDepth(const std::string& model, int tasks);
  // The autoscaling signal (scheduler/load_estimator.h): how long the oldest queued request
  // of the weight set has waited and the batch slots its load needs; over all weight sets,
  // the workers they keep busy (a fraction) and the workers needed (rounded up, floored).
  void SetLoad(const std::string& model, double oldest_wait_seconds, double slot_demand);
  void SetWorkersNeeded(double demand, int workers);
  void SetWorkers(int healthy, int unhealthy);
  void CountRetry(const std::string& model);
  // reason: queue_full, memory (--max-inflight-mb), deadline, not_ready (also while the
  // gateway drains), unknown_model, invalid, cancelled.
  void CountRejection(const std::string& model, const std::string& reason);
  // One call of the Open Inference Protocol: api "oip_grpc" or "oip_rest", the method
  // (ModelInfer, ModelMetadata, ...) and its code. Its images are also counted as requests.
  void CountApiCall(const std::string& api, const std::string& method, absl::StatusCode code);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_seconds_;
  prometheus::Family<prometheus::Histogram>& queue_seconds_;
  prometheus::Family<prometheus::Histogram>& compute_seconds_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Gauge>& queue_oldest_seconds_;
  prometheus::Family<prometheus::Gauge>& slot_demand_;
  prometheus::Family<prometheus::Gauge>& worker_demand_;
  prometheus::Family<prometheus::Gauge>& workers_needed_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Family<prometheus::Counter>& retries_;
  prometheus::Family<prometheus::Counter>& rejections_;
  prometheus::Family<prometheus::Counter>& api_calls_;
};

}  // namespace deeplab

#endif  // DEEPLAB_SERVICES_GATEWAY_GATEWAY_METRICS_H_
