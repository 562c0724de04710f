// The Open Inference Protocol (KServe v2) over the Gateway, independent of transport: the
// gRPC service (inference_service.h) and the REST port (inference_http.h) both turn their
// calls into inference::ModelInferRequest and run them with InferCall. docs/api.md is the
// user-facing contract: every weight set is a model, version "1"; one input (BYTES encoded
// images [N], or UINT8 pixels [N,H,W,C] / [H,W,C]); outputs labels, probabilities,
// class_stats, label_png, overlay_png.
#ifndef DEEPLAB_SERVICES_GATEWAY_INFERENCE_PROTOCOL_H_
#define DEEPLAB_SERVICES_GATEWAY_INFERENCE_PROTOCOL_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "deeplab/v1/segmentation.pb.h"
#include "inference/grpc_predict_v2.pb.h"
#include "services/gateway/gateway.h"

namespace deeplab {
namespace oip {

inline constexpr char kServerName[] = "deeplab-serve";
inline constexpr char kModelVersion[] = "1";
inline constexpr char kPlatform[] = "deeplab-serve_libtorch";
inline constexpr char kBinaryExtension[] = "binary_tensor_data";

std::string ServerVersion();
inference::ServerMetadataResponse ServerMetadata();

// The weight set `name` at `version` ("" or "1") from ListModels' answer. NOT_FOUND for an
// unknown name or another version; UNAVAILABLE when no worker has answered yet (the gateway
// cannot tell whether the name exists).
absl::StatusOr<v1::ModelInfo> FindModel(const v1::ListModelsResponse& models,
                                        const std::string& name, const std::string& version);

inference::ModelMetadataResponse ModelMetadata(const v1::ModelInfo& model);

// A ModelInferRequest turned into one SegmentRequest per image.
struct InferPlan {
  std::vector<v1::SegmentRequest> requests;
  std::vector<std::string> outputs;  // output names, in the order they are answered
  bool batched = true;               // false: the input was [H, W, C]; N left out of shapes
  int num_classes = 0;
  // From the request parameter "timeout" (microseconds, as Triton's): the images' deadline.
  absl::Duration timeout = absl::InfiniteDuration();
};

// Checks the request against `model` (exactly one input of a supported datatype and shape,
// data that matches the shape, known output names) and splits it into per-image requests.
// INVALID_ARGUMENT says what is wrong.
absl::StatusOr<InferPlan> PlanInfer(const inference::ModelInferRequest& request,
                                    const v1::ModelInfo& model);

// Fills `out` from the per-image answers (in plan order): every output in
// raw_output_contents. INVALID_ARGUMENT when labels or probabilities are asked for images of
// different sizes.
absl::Status BuildInferResponse(const InferPlan& plan, const inference::ModelInferRequest& request,
                                const std::vector<v1::SegmentResponse>& responses,
                                inference::ModelInferResponse* out);

// BYTES tensor elements in raw form: each a 4-byte little-endian length, then the bytes.
std::string EncodeBytesElements(const std::vector<const std::string*>& elements);
absl::StatusOr<std::vector<std::string>> DecodeBytesElements(const std::string& raw);

// One ModelInferRequest run through the gateway: each image is submitted as its own request
// (so they batch with everyone else's), and `done` runs exactly once, possibly inline, when
// all are answered: OK with `response` filled, or the first failing image's status (lowest
// index) with "image I: " before its message. A failure cancels the images still queued.
class InferCall : public std::enable_shared_from_this<InferCall> {
 public:
  using Done = std::function<void(absl::Status)>;
  // `request` is read during Start only; `response` must stay valid until done runs.
  static std::shared_ptr<InferCall> Start(Gateway* gateway,
                                          const inference::ModelInferRequest& request,
                                          inference::ModelInferResponse* response,
                                          absl::Time deadline, Done done);
  // The caller gave up: queued images are answered CANCELLED (done still runs once).
  void Cancel();

 private:
  InferCall(Gateway* gateway, inference::ModelInferResponse* response, Done done)
      : gateway_(gateway), response_(response), done_(std::move(done)) {}
  void Run(const inference::ModelInferRequest& request, absl::Time deadline);
  void OnImageDone(size_t index, absl::Status status);
  void RecordFailureLocked(size_t index, absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish();

  Gateway* const gateway_;
  inference::ModelInferResponse* const response_;
  Done done_;
  InferPlan plan_;
  std::vector<v1::SegmentResponse> answers_;
  inference::ModelInferRequest echo_;  // id, model name and outputs of the request

  absl::Mutex mu_;
  std::vector<uint64_t> ids_ ABSL_GUARDED_BY(mu_);  // 0: not submitted (yet)
  size_t remaining_ ABSL_GUARDED_BY(mu_) = 0;
  size_t failed_index_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;  // failed or cancelled: submit no more
  bool done_called_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace oip
}  // namespace deeplab

#endif  // DEEPLAB_SERVICES_GATEWAY_INFERENCE_PROTOCOL_H_
