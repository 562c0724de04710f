// The flags deeplab-gateway and deeplab-worker share: where metrics listen, and the TLS
// files of their gRPC port (see common/tls.h). Each main defines --host and --port itself,
// with its own default port.
#ifndef DEEPLAB_COMMON_SERVER_FLAGS_H_
#define DEEPLAB_COMMON_SERVER_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "common/tls.h"

ABSL_DECLARE_FLAG(std::string, metrics_host);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, tls_client_ca);
ABSL_DECLARE_FLAG(absl::Duration, tls_reload_interval);

namespace deeplab {

// --tls-cert, --tls-key, --tls-client-ca and --tls-reload-interval.
ServerTlsOptions ServerTlsFromFlags();
// --metrics-host, or `host` (the gRPC address) when it is empty.
std::string MetricsHostFromFlags(const std::string& host);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_SERVER_FLAGS_H_
