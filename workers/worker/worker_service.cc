#include "workers/worker/worker_service.h"

#include "common/status_util.h"

namespace deeplab {

grpc::ServerUnaryReactor* WorkerService::Infer(grpc::CallbackServerContext* context,
                                               const v1::InferRequest* request,
                                               v1::InferResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // request, response and context stay valid until Finish.
  engine_->Infer(
      *request, response, [reactor](absl::Status s) { reactor->Finish(ToGrpcStatus(s)); },
      [context] { return context->IsCancelled(); });
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::Status(grpc::CallbackServerContext* context,
                                                const v1::StatusRequest* /*request*/,
                                                v1::StatusResponse* response) {
  *response = engine_->Status();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace deeplab
