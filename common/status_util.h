// The one place where absl::Status and grpc::Status are converted into each other.
#ifndef DEEPLAB_COMMON_STATUS_UTIL_H_
#define DEEPLAB_COMMON_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace deeplab {

// Codes are numerically identical in absl and gRPC (both follow google.rpc.Code).
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_STATUS_UTIL_H_
