#include "workers/worker/worker_metrics.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace deeplab {
namespace {

// Seconds from 1 ms to ~2 min: decode of a thumbnail up to an xception batch on a CPU.
prometheus::Histogram::BucketBoundaries SecondsBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}

prometheus::Histogram::BucketBoundaries BatchBuckets() {
  return {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64};
}


}  // namespace

WorkerMetrics::WorkerMetrics(prometheus::Registry& registry)
    : items_(prometheus::BuildCounter()
                 .Name("deeplab_worker_items_total")
                 .Help("Images processed, by weight set and result code")
                 .Register(registry)),
      batches_(prometheus::BuildCounter()
                   .Name("deeplab_worker_batches_total")
                   .Help("Infer batches, by weight set and result code")
                   .Register(registry)),
      batch_size_(prometheus::BuildHistogram()
                      .Name("deeplab_worker_batch_size")
                      .Help("Network inputs per forward pass (tiled images count their patches)")
                      .Register(registry)),
      stage_seconds_(prometheus::BuildHistogram()
                         .Name("deeplab_worker_stage_seconds")
                         .Help("Seconds per item in each stage (forward: per batch)")
                         .Register(registry)),
      ready_(prometheus::BuildGauge()
                 .Name("deeplab_worker_weight_set_ready")
                 .Help("1 when the weight set is loaded and serving")
                 .Register(registry)),
      slots_(prometheus::BuildGauge()
                 .Name("deeplab_worker_batch_slots")
                 .Help("Batch slots of this worker, total and free")
                 .Register(registry)),
      device_bytes_(prometheus::BuildCounter()
                        .Name("deeplab_worker_device_transfer_bytes_total")
                        .Help("Bytes of batch inputs sent to the model's device (uint8 pixels) "
                              "and of outputs brought back (uint8 labels and probabilities), "
                              "by weight set and direction; on a CPU worker the same buffers "
                              "are used in place")
                        .Register(registry)),
      decodes_(prometheus::BuildCounter()
                   .Name("deeplab_worker_decoded_images_total")
                   .Help("Images decoded, by weight set, scale (1, 1/2, 1/4, 1/8: reduced JPEG "
                         "decoding) and threads (one, or bands: a JPEG with restart markers "
                         "decoded on several)")
                   .Register(registry)),
      forward_passes_(prometheus::BuildCounter()
                          .Name("deeplab_worker_forward_passes_total")
                          .Help("Forward passes (batches submitted to the network), by weight "
                                "set and the intra-op threads they ran with: on a CPU a pass "
                                "alone takes them all, passes at once share them")
                          .Register(registry)) {}

void WorkerMetrics::CountForwardPass(const std::string& model, int threads) {
  forward_passes_.Add({{"model", model}, {"threads", absl::StrCat(threads)}}).Increment();
}

void WorkerMetrics::CountDecode(const std::string& model, int reduction, int bands) {
  decodes_
      .Add({{"model", model},
            {"scale", reduction > 1 ? absl::StrCat("1/", reduction) : std::string("1")},
            {"threads", bands > 1 ? "bands" : "one"}})
      .Increment();
}

void WorkerMetrics::CountDeviceBytes(const std::string& model, const std::string& direction,
                                     int64_t bytes) {
  device_bytes_.Add({{"model", model}, {"direction", direction}})
      .Increment(static_cast<double>(bytes));
}

void WorkerMetrics::CountItem(const std::string& model, const std::string& code) {
  items_.Add({{"model", model}, {"code", code}}).Increment();
}

void WorkerMetrics::CountBatch(const std::string& model, const std::string& code) {
  batches_.Add({{"model", model}, {"code", code}}).Increment();
}

void WorkerMetrics::ObserveBatchCost(const std::string& model, double cost) {
  batch_size_.Add({{"model", model}}, BatchBuckets()).Observe(cost);
}

void WorkerMetrics::ObserveStage(const std::string& model, const std::string& stage,
                                 double seconds) {
  stage_seconds_.Add({{"model", model}, {"stage", stage}}, SecondsBuckets()).Observe(seconds);
}

void WorkerMetrics::SetReady(const std::string& model, bool ready) {
  ready_.Add({{"model", model}}).Set(ready ? 1 : 0);
}

void WorkerMetrics::SetBatchSlots(int total, int free) {
  slots_.Add({{"state", "total"}}).Set(total);
  slots_.Add({{"state", "free"}}).Set(free);
}

std::string CodeName(int code) {
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  for (char& c : name) c = (c == ' ') ? '_' : static_cast<char>(std::toupper(c));
  return name;
}

}  // namespace deeplab
