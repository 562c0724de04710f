// The flags deeplab-gateway and deeplab-worker share: where gRPC and metrics listen, and the
// TLS files of their gRPC port (see common/tls.h). Each main defines --port and
// --metrics-port itself, with its own defaults.
#ifndef DEEPLAB_COMMON_SERVER_FLAGS_H_
#define DEEPLAB_COMMON_SERVER_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "common/server_main.h"
#include "common/tls.h"

ABSL_DECLARE_FLAG(std::string, host);
ABSL_DECLARE_FLAG(std::string, metrics_host);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, tls_client_ca);
ABSL_DECLARE_FLAG(absl::Duration, tls_reload_interval);

namespace deeplab {

// --host, --metrics-host (default: --host) and the --tls-* flags, with the given ports;
// INVALID_ARGUMENT for bad TLS files (ValidateServerTls). The message sizes are the caller's.
absl::StatusOr<ServerOptions> ServerOptionsFromFlags(int port, int metrics_port);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_SERVER_FLAGS_H_
