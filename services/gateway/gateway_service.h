// deeplab.v1.Segmentation over the gRPC callback API: reactors that hand requests to the
// Gateway and finish when it answers; no thread waits per request.
// Thread-safe; does not own the gateway, which must outlive the server.
#ifndef DEEPLAB_SERVICES_GATEWAY_GATEWAY_SERVICE_H_
#define DEEPLAB_SERVICES_GATEWAY_GATEWAY_SERVICE_H_

#include "deeplab/v1/segmentation.grpc.pb.h"
#include "services/gateway/auth.h"
#include "services/gateway/gateway.h"

namespace deeplab {

class SegmentationService final : public v1::Segmentation::CallbackService {
 public:
  // With `auth` (may be null: no tokens), every call must carry a token it accepts, and
  // sees and uses only the weight sets the token allows.
  explicit SegmentationService(Gateway* gateway, const TokenAuthenticator* auth = nullptr)
      : gateway_(gateway), auth_(auth) {}

  grpc::ServerUnaryReactor* Segment(grpc::CallbackServerContext* context,
                                    const v1::SegmentRequest* request,
                                    v1::SegmentResponse* response) override;
  grpc::ServerBidiReactor<v1::SegmentRequest, v1::SegmentStreamResponse>* SegmentStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;

 private:
  // The caller's grant; null when the gateway has no tokens (everything allowed).
  absl::StatusOr<const TokenAuthenticator::Grant*> Authenticate(
      const grpc::CallbackServerContext* context) const;

  Gateway* const gateway_;
  const TokenAuthenticator* const auth_;
};

}  // namespace deeplab

#endif  // DEEPLAB_SERVICES_GATEWAY_GATEWAY_SERVICE_H_
