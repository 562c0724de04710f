// inference.GRPCInferenceService (the Open Inference Protocol's gRPC form) on the gateway's
// gRPC port, over the gRPC callback API. See inference_protocol.h and docs/api.md.
// Thread-safe; does not own the gateway, which must outlive the server.
#ifndef DEEPLAB_SERVICES_GATEWAY_INFERENCE_SERVICE_H_
#define DEEPLAB_SERVICES_GATEWAY_INFERENCE_SERVICE_H_

#include "inference/grpc_predict_v2.grpc.pb.h"
#include "services/gateway/auth.h"
#include "services/gateway/gateway.h"
#include "services/gateway/gateway_metrics.h"

namespace deeplab {

class InferenceService final : public inference::GRPCInferenceService::CallbackService {
 public:
  // `auth` (may be null: no tokens): the model calls need a token that allows the model;
  // ServerLive, ServerReady and ServerMetadata stay open, as health does. `metrics` may be
  // null.
  InferenceService(Gateway* gateway, const TokenAuthenticator* auth, GatewayMetrics* metrics)
      : gateway_(gateway), auth_(auth), metrics_(metrics) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;

 private:
  // OK when the call may use `model` (always without tokens).
  absl::Status Authorize(const grpc::CallbackServerContext* context,
                         const std::string& model) const;
  grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context, const char* method,
                                   const absl::Status& status);

  Gateway* const gateway_;
  const TokenAuthenticator* const auth_;
  GatewayMetrics* const metrics_;
};

}  // namespace deeplab

#endif  // DEEPLAB_SERVICES_GATEWAY_INFERENCE_SERVICE_H_
