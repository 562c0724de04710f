// deeplab.v1.Segmentation over the gRPC callback API: reactors that hand requests to the
// Gateway and finish when it answers; no thread waits per request.
// Thread-safe; does not own the gateway, which must outlive the server.
#ifndef DEEPLAB_SERVICES_GATEWAY_GATEWAY_SERVICE_H_
#define DEEPLAB_SERVICES_GATEWAY_GATEWAY_SERVICE_H_

#include "deeplab/v1/segmentation.grpc.pb.h"
#include "services/gateway/gateway.h"

namespace deeplab {

class SegmentationService final : public v1::Segmentation::CallbackService {
 public:
  explicit SegmentationService(Gateway* gateway) : gateway_(gateway) {}

  grpc::ServerUnaryReactor* Segment(grpc::CallbackServerContext* context,
                                    const v1::SegmentRequest* request,
                                    v1::SegmentResponse* response) override;
  grpc::ServerBidiReactor<v1::SegmentRequest, v1::SegmentStreamResponse>* SegmentStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;

 private:
  Gateway* const gateway_;
};

}  // namespace deeplab

#endif  // DEEPLAB_SERVICES_GATEWAY_GATEWAY_SERVICE_H_
