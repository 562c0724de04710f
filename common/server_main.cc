#include "common/server_main.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace deeplab {
namespace {

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

// Abseil ends the program with exit(1) on an unknown flag or a malformed value; a bad
// command line is exit code 2 in every deeplab program, so an exit while flags are being
// parsed becomes 2. Help requests keep Abseil's own code.
std::atomic<bool> parsing_flags{false};

void ExitCodeTwoWhileParsing() {
  if (parsing_flags) std::_Exit(kExitBadCommandLine);
}

bool AsksForHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--help", 0) == 0 || arg == "--version" || arg == "--only_check_args" ||
        arg == "--only-check-args") {
      return true;
    }
  }
  return false;
}

}  // namespace

std::vector<char*> ParseCommandLineWithDashes(int argc, char** argv,
                                              const std::string& help_path) {
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [help_path](absl::string_view file) {
    return absl::StrContains(file, help_path) || absl::StrContains(file, "common/server_flags");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  // The rewritten arguments must outlive parsing; flags are parsed once per process.
  static std::vector<std::string>* storage = new std::vector<std::string>();
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i > 0 && arg.rfind("--", 0) == 0) {
      const size_t end = std::min(arg.find('='), arg.size());
      std::replace(arg.begin() + 2, arg.begin() + end, '-', '_');
    }
    storage->push_back(arg);
  }
  std::vector<char*> args;
  for (std::string& s : *storage) args.push_back(s.data());
  if (!AsksForHelp(argc, argv)) {
    static std::once_flag registered;
    std::call_once(registered, [] { std::atexit(ExitCodeTwoWhileParsing); });
    parsing_flags = true;
  }
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  parsing_flags = false;
  return positional;
}

void BlockStopSignals() {
  // Blocked in every thread; WaitForStopSignal's sigwait is the one safe place to react.
  const sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForStopSignal() {
  const sigset_t set = StopSignals();
  int signal_number = 0;
  sigwait(&set, &signal_number);
  return signal_number;
}

absl::StatusOr<ServerEndpoints> StartServer(const ServerOptions& options,
                                            const std::vector<grpc::Service*>& services,
                                            const std::vector<std::string>& health_names) {
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(options.tls);
  if (!credentials.ok()) return credentials.status();
  const std::string& host = options.host;
  const std::string& metrics_host = options.metrics_host;
  const int port = options.port;
  const int metrics_port = options.metrics_port;
  ServerEndpoints out;
  try {
    // CivetWeb gives each connection a thread until its request arrives. With the default
    // of 2 threads and no request timeout, two idle connections blocked every scrape; now
    // 32 threads, and a connection that sends no request within 2 s is closed.
    out.exposer = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", absl::StrCat(metrics_host, ":", metrics_port), "num_threads", "32",
        "request_timeout_ms", "2000"});
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for metrics on ", metrics_host, ":", metrics_port, ": ",
                     e.what()));
  }
  out.metrics_port = out.exposer->GetListeningPorts().front();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(host, ":", port), *credentials, &out.port);
  builder.SetMaxReceiveMessageSize(options.max_receive_bytes);
  builder.SetMaxSendMessageSize(options.max_send_bytes);
  for (grpc::Service* service : services) builder.RegisterService(service);
  out.server = builder.BuildAndStart();
  if (out.server == nullptr || out.port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", host, ":", port, " (in use?)"));
  }
  SetHealth(*out.server, health_names, false);
  return out;
}

void SetHealth(grpc::Server& server, const std::vector<std::string>& names, bool serving) {
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  health->SetServingStatus(serving);
  for (const std::string& name : names) health->SetServingStatus(name, serving);
}

}  // namespace deeplab
