// What the deeplab-worker and deeplab-gateway mains share: command-line parsing that accepts
// our documented dashed flag names, the gRPC server with health, reflection and TLS, the
// Prometheus exposer, and waiting for SIGTERM/SIGINT.
#ifndef DEEPLAB_COMMON_SERVER_MAIN_H_
#define DEEPLAB_COMMON_SERVER_MAIN_H_

#include <grpcpp/grpcpp.h>
#include <prometheus/exposer.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tls.h"

namespace deeplab {

// The exit code of every deeplab program for a bad command line.
inline constexpr int kExitBadCommandLine = 2;

// absl::ParseCommandLine, accepting --metrics-port for --metrics_port (Abseil flag names are
// identifiers). --help lists flags defined in files whose path contains `help_path` (and
// common/server_flags.cc, the servers' shared flags). An
// unknown flag or a malformed value ends the program with Abseil's message and exit code 2
// (kExitBadCommandLine), not Abseil's 1.
std::vector<char*> ParseCommandLineWithDashes(int argc, char** argv, const std::string& help_path);

// Blocks SIGTERM and SIGINT in this thread and every thread started after; WaitForStopSignal
// then receives them. Call first thing in main.
void BlockStopSignals();
int WaitForStopSignal();

struct ServerEndpoints {
  std::unique_ptr<prometheus::Exposer> exposer;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  int metrics_port = 0;
};

struct ServerOptions {
  std::string host = "127.0.0.1";  // gRPC listen address
  int port = 0;                    // 0: a free port
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 0;
  // Largest message received and sent, in bytes.
  int max_receive_bytes = 4 << 20;
  int max_send_bytes = 4 << 20;
  ServerTlsOptions tls;  // plaintext unless tls.enabled()
};

// Starts the Prometheus exposer on metrics_host:metrics_port and a gRPC server on host:port
// with `services`, the standard health service (initially NOT_SERVING for "" and every name
// in `health_names`), server reflection, the message size limits and TLS. Port 0 picks a free
// port; the chosen ones are in the result. UNAVAILABLE when a port cannot be bound,
// INVALID_ARGUMENT for bad TLS files.
absl::StatusOr<ServerEndpoints> StartServer(const ServerOptions& options,
                                            const std::vector<grpc::Service*>& services,
                                            const std::vector<std::string>& health_names);

// Sets "" and every name in `names` to SERVING or NOT_SERVING.
void SetHealth(grpc::Server& server, const std::vector<std::string>& names, bool serving);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_SERVER_MAIN_H_
