#include "common/server_flags.h"

#include "absl/flags/flag.h"
#include "absl/time/time.h"

ABSL_FLAG(std::string, host, "127.0.0.1",
          "Address gRPC listens on (and metrics, unless --metrics-host); 0.0.0.0: every "
          "interface, as in containers");
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

absl::StatusOr<ServerOptions> ServerOptionsFromFlags(int port, int metrics_port) {
  ServerOptions options;
  options.host = absl::GetFlag(FLAGS_host);
  options.port = port;
  const std::string metrics_host = absl::GetFlag(FLAGS_metrics_host);
  options.metrics_host = metrics_host.empty() ? options.host : metrics_host;
  options.metrics_port = metrics_port;
  options.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.tls.reload_interval = absl::GetFlag(FLAGS_tls_reload_interval);
  if (absl::Status s = ValidateServerTls(options.tls); !s.ok()) return s;
  return options;
}

}  // namespace deeplab
