// The deeplab.v1.Worker gRPC service: a thin callback-API adapter over WorkerEngine.
// Handlers never block: Infer hands the batch to the engine and returns its reactor.
// Thread-safe; does not own the engine, which must outlive the server.
#ifndef DEEPLAB_WORKERS_WORKER_WORKER_SERVICE_H_
#define DEEPLAB_WORKERS_WORKER_WORKER_SERVICE_H_

#include "deeplab/v1/worker.grpc.pb.h"
#include "workers/worker/engine.h"

namespace deeplab {

class WorkerService final : public v1::Worker::CallbackService {
 public:
  explicit WorkerService(WorkerEngine* engine) : engine_(engine) {}

  grpc::ServerUnaryReactor* Infer(grpc::CallbackServerContext* context,
                                  const v1::InferRequest* request,
                                  v1::InferResponse* response) override;
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* context,
                                   const v1::StatusRequest* request,
                                   v1::StatusResponse* response) override;

 private:
  WorkerEngine* const engine_;
};

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_WORKER_WORKER_SERVICE_H_
