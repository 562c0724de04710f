// What the gateway's gRPC services read of a call: its deadline as absl::Time
// (InfiniteFuture when the client set none) and its "authorization" metadata.
#ifndef DEEPLAB_SERVICES_GATEWAY_CALL_DEADLINE_H_
#define DEEPLAB_SERVICES_GATEWAY_CALL_DEADLINE_H_

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace deeplab {

inline absl::Time CallDeadline(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

// The call's "authorization" metadata value; empty when absent.
inline absl::string_view CallAuthorization(const grpc::CallbackServerContext* context) {
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  return it == metadata.end() ? absl::string_view()
                              : absl::string_view(it->second.data(), it->second.size());
}

}  // namespace deeplab

#endif  // DEEPLAB_SERVICES_GATEWAY_CALL_DEADLINE_H_
