// The worker's Prometheus metrics (names per DESIGN.md section 6; listed in docs/operations.md).
//
// Owns its families inside a caller-provided registry. Thread-safe: prometheus-cpp metrics
// are atomic, and the label-to-metric lookups here take the family's own lock.
#ifndef DEEPLAB_WORKERS_WORKER_WORKER_METRICS_H_
#define DEEPLAB_WORKERS_WORKER_WORKER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <memory>
#include <string>

namespace deeplab {

class WorkerMetrics {
 public:
  explicit WorkerMetrics(prometheus::Registry& registry);

  // code: a gRPC code name such as "OK" or "INVALID_ARGUMENT".
  void CountItem(const std::string& model, const std::string& code);
  void CountBatch(const std::string& model, const std::string& code);
  void ObserveBatchCost(const std::string& model, double cost);
  // stage: decode, preprocess, forward, postprocess, encode.
  void ObserveStage(const std::string& model, const std::string& stage, double seconds);
  void SetReady(const std::string& model, bool ready);
  void SetBatchSlots(int total, int free);
  // An image decoded: reduction 1 (whole), 2, 4 or 8; bands > 1 when decoded in bands.
  void CountDecode(const std::string& model, int reduction, int bands);
  // direction: "to_device" or "to_host".
  void CountDeviceBytes(const std::string& model, const std::string& direction, int64_t bytes);
  // A forward pass run with `threads` intra-op threads (engine.h, share_intra_op_threads).
  void CountForwardPass(const std::string& model, int threads);

 private:
  prometheus::Family<prometheus::Counter>& items_;
  prometheus::Family<prometheus::Counter>& batches_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Histogram>& stage_seconds_;
  prometheus::Family<prometheus::Gauge>& ready_;
  prometheus::Family<prometheus::Gauge>& slots_;
  prometheus::Family<prometheus::Counter>& device_bytes_;
  prometheus::Family<prometheus::Counter>& decodes_;
  prometheus::Family<prometheus::Counter>& forward_passes_;
};

// A gRPC status code's canonical name, e.g. 3 -> "INVALID_ARGUMENT".
std::string CodeName(int code);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_WORKER_WORKER_METRICS_H_
