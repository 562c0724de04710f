#include "common/server_flags.h"

#include "absl/flags/flag.h"
#include "absl/time/time.h"

ABSL_FLAG(std::string, metrics_host, "",
          "Address the Prometheus /metrics server listens on; empty: the same as --host");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate (chain) of the gRPC port; with --tls-key, the port speaks TLS only. "
          "Empty: plaintext (loopback development)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: clients must present a certificate it signed (mutual TLS)");
ABSL_FLAG(absl::Duration, tls_reload_interval, absl::Seconds(60),
          "How often the TLS files are read again, so rotated certificates take effect "
          "without a restart");

namespace deeplab {

ServerTlsOptions ServerTlsFromFlags() {
  ServerTlsOptions tls;
  tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  tls.key_file = absl::GetFlag(FLAGS_tls_key);
  tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  tls.reload_interval = absl::GetFlag(FLAGS_tls_reload_interval);
  return tls;
}

std::string MetricsHostFromFlags(const std::string& host) {
  const std::string metrics_host = absl::GetFlag(FLAGS_metrics_host);
  return metrics_host.empty() ? host : metrics_host;
}

}  // namespace deeplab
