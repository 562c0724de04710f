// Helpers for integration tests that run real deeplab-worker and deeplab-gateway processes
// on loopback ports they choose themselves.
#ifndef DEEPLAB_TESTS_INTEGRATION_CLUSTER_H_
#define DEEPLAB_TESTS_INTEGRATION_CLUSTER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"

#include "tests/integration/process.h"

namespace deeplab::testing {

std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& text);

// GET /metrics from "host:port/metrics": the exposition text ("" if unreachable).
std::string Scrape(const std::string& address);
// Opens `idle` TCP connections to the metrics port that send nothing, then scrapes with a
// receive timeout of `limit`; the connections stay open throughout. Returns the body, ""
// when the scrape did not complete within `limit` (a metrics server blocked by idle
// clients), and the scrape's duration in *seconds.
std::string ScrapeWithIdleConnections(const std::string& address, int idle, absl::Duration limit,
                                      double* seconds);
// The value of one sample line "name{labels} value" (exact prefix match), or -1.
double MetricValue(const std::string& exposition, const std::string& series);

struct Server {
  ChildProcess process;
  std::string grpc_address;
  std::string metrics_address;
  std::shared_ptr<grpc::Channel> channel;
};

// Starts `binary` with `args` plus --host 127.0.0.1 --port 0 --metrics-port 0, reads the
// "<name>: grpc" and "<name>: metrics" lines, then waits for a line starting with
// "<name>: <ready_line>" (none when ready_line is empty). A non-empty `wrapper` is a command
// that runs the server: its words come first, then the binary and its arguments.
Server StartServer(const std::string& binary, const std::string& name,
                   std::vector<std::string> args, const std::string& ready_line,
                   const std::vector<std::string>& wrapper = {});

Server StartWorker(const std::string& models, const std::string& ready_line = "ready",
                   std::vector<std::string> extra_args = {});
Server StartGateway(const std::string& workers, std::vector<std::string> extra_args = {});

// Writes a test model repository: "colour" (a TorchScript model labelling each pixel by
// its dominant colour channel; batching with the given queue delay) and "slow" (a
// random-weight network that takes real compute).
void WriteTestRepository(const std::string& dir, int max_queue_delay_micros = 20000);

}  // namespace deeplab::testing

#endif  // DEEPLAB_TESTS_INTEGRATION_CLUSTER_H_
