// A gRPC call's deadline as absl::Time (InfiniteFuture when the client set none), for the
// gateway's services.
#ifndef DEEPLAB_SERVICES_GATEWAY_CALL_DEADLINE_H_
#define DEEPLAB_SERVICES_GATEWAY_CALL_DEADLINE_H_

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "absl/time/time.h"

namespace deeplab {

inline absl::Time CallDeadline(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

}  // namespace deeplab

#endif  // DEEPLAB_SERVICES_GATEWAY_CALL_DEADLINE_H_
