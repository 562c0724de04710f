#include "services/gateway/inference_service.h"

#include <memory>

#include "common/status_util.h"
#include "services/gateway/call_deadline.h"
#include "services/gateway/inference_protocol.h"

namespace deeplab {
namespace {

// One ModelInfer call: an InferCall, finished when it answers.
class InferReactor : public grpc::ServerUnaryReactor {
 public:
  InferReactor(Gateway* gateway, GatewayMetrics* metrics, grpc::CallbackServerContext* context,
               const inference::ModelInferRequest* request,
               inference::ModelInferResponse* response)
      : metrics_(metrics) {
    call_ = oip::InferCall::Start(gateway, *request, response, CallDeadline(context),
                                  [this](absl::Status s) {
                                    if (metrics_ != nullptr) {
                                      metrics_->CountApiCall("oip_grpc", "ModelInfer", s.code());
                                    }
                                    Finish(ToGrpcStatus(s));
                                  });
  }
  void OnCancel() override { call_->Cancel(); }
  void OnDone() override { delete this; }

 private:
  GatewayMetrics* const metrics_;
  std::shared_ptr<oip::InferCall> call_;
};

}  // namespace

absl::Status InferenceService::Authorize(const grpc::CallbackServerContext* context,
                                         const std::string& model) const {
  if (auth_ == nullptr) return absl::OkStatus();
  return auth_->Allow(CallAuthorization(context), model);
}

grpc::ServerUnaryReactor* InferenceService::Answer(grpc::CallbackServerContext* context,
                                                   const char* method,
                                                   const absl::Status& status) {
  if (metrics_ != nullptr) metrics_->CountApiCall("oip_grpc", method, status.code());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ServerLive(grpc::CallbackServerContext* context,
                                                       const inference::ServerLiveRequest*,
                                                       inference::ServerLiveResponse* response) {
  response->set_live(true);
  return Answer(context, "ServerLive", absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ServerReady(grpc::CallbackServerContext* context,
                                                        const inference::ServerReadyRequest*,
                                                        inference::ServerReadyResponse* response) {
  response->set_ready(gateway_->Serving());
  return Answer(context, "ServerReady", absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  *response = oip::ServerMetadata();
  return Answer(context, "ServerMetadata", absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelReady(grpc::CallbackServerContext* context,
                                                       const inference::ModelReadyRequest* request,
                                                       inference::ModelReadyResponse* response) {
  if (absl::Status s = Authorize(context, request->name()); !s.ok()) {
    return Answer(context, "ModelReady", s);
  }
  absl::StatusOr<v1::ModelInfo> model =
      oip::FindModel(gateway_->ListModelsFor(request->name()), request->name(), request->version());
  if (!model.ok()) return Answer(context, "ModelReady", model.status());
  response->set_ready(model->ready());
  return Answer(context, "ModelReady", absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  if (absl::Status s = Authorize(context, request->name()); !s.ok()) {
    return Answer(context, "ModelMetadata", s);
  }
  absl::StatusOr<v1::ModelInfo> model =
      oip::FindModel(gateway_->ListModelsFor(request->name()), request->name(), request->version());
  if (!model.ok()) return Answer(context, "ModelMetadata", model.status());
  *response = oip::ModelMetadata(*model);
  return Answer(context, "ModelMetadata", absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelInfer(grpc::CallbackServerContext* context,
                                                       const inference::ModelInferRequest* request,
                                                       inference::ModelInferResponse* response) {
  if (absl::Status s = Authorize(context, request->model_name()); !s.ok()) {
    return Answer(context, "ModelInfer", s);
  }
  return new InferReactor(gateway_, metrics_, context, request, response);
}

}  // namespace deeplab
