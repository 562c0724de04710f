// deeplab-gateway: the public front door. Batches Segment requests per weight set and runs
// them on workers.
//   deeplab-gateway --port 8000 --metrics-port 9100 --workers host:port,host:port
//   deeplab-gateway --workers dns:///deeplab-worker.deeplab.svc.cluster.local:8001
#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <iostream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/process_metrics.h"
#include "common/server_flags.h"
#include "common/server_main.h"
#include "services/gateway/auth.h"
#include "services/gateway/gateway.h"
#include "services/gateway/gateway_service.h"
#include "services/gateway/inference_http.h"
#include "services/gateway/inference_service.h"

ABSL_FLAG(int, port, 8000, "gRPC port; 0 picks a free one (printed at start)");
ABSL_FLAG(int, metrics_port, 9100, "Prometheus /metrics port; 0 picks a free one");
ABSL_FLAG(int, http_port, 8080,
          "Open Inference Protocol REST port (/v2/...); 0 picks a free one (printed at start), "
          "-1 turns it off. It has no TLS: with --tls-cert it stays off unless --http-insecure");
ABSL_FLAG(int, http_threads, 32,
          "REST connections served at once (each holds a thread until its answer is written; "
          "more wait for one)");
ABSL_FLAG(absl::Duration, http_request_timeout, absl::Seconds(10),
          "A REST connection that sends no complete request head within this time, or stalls "
          "this long while its body is read or its answer written, is closed (so idle "
          "connections cannot hold the --http-threads for long)");
ABSL_FLAG(bool, http_insecure, false,
          "Serve the plaintext REST port although --tls-cert is set: for a gateway behind a "
          "proxy or sidecar that terminates TLS");
ABSL_FLAG(std::string, workers, "",
          "Workers: host:port[,host:port...] or dns:///name:port (re-resolved)");
ABSL_FLAG(int, max_message_mb, 512,
          "Largest gRPC message sent, in MiB: a 4000x3000 image with every output (21-class "
          "probabilities are 252 MB) fits in 512");
ABSL_FLAG(int64_t, max_image_bytes, 64 << 20,
          "Largest image accepted (encoded or raw bytes), as on the workers: a larger request "
          "is refused (RESOURCE_EXHAUSTED from gRPC), never held by a request or forwarded");
ABSL_FLAG(int64_t, max_inflight_mb, 2048,
          "MiB of images that accepted, unanswered requests may hold together; beyond, new "
          "requests are refused RESOURCE_EXHAUSTED. 0: no bound");
ABSL_FLAG(std::string, tokens_file, "",
          "Bearer tokens (protobuf text, deeplab.v1.AccessTokens: sha256 of each token and the "
          "weight sets it may use); every call then needs one. Empty: no authentication");
ABSL_FLAG(std::string, worker_tls_ca, "",
          "PEM CA that workers' certificates must chain to: the gateway talks TLS to workers");
ABSL_FLAG(std::string, worker_tls_cert, "",
          "PEM client certificate the gateway shows workers that require one (mutual TLS)");
ABSL_FLAG(std::string, worker_tls_key, "", "PEM private key of --worker-tls-cert");
ABSL_FLAG(std::string, worker_tls_server_name, "",
          "Name workers' certificates carry, when it differs from the address dialled (the "
          "gateway dials each resolved IP): e.g. deeplab-worker.deeplab.svc");
ABSL_FLAG(absl::Duration, status_interval, absl::Seconds(1), "How often workers are polled");
ABSL_FLAG(absl::Duration, resolve_interval, absl::Seconds(5),
          "How often a dns:/// worker name is resolved again");
ABSL_FLAG(int, max_attempts, 3, "Workers a request may fail on before it is answered UNAVAILABLE");
ABSL_FLAG(double, attempt_timeout_factor, 10,
          "A batch on a worker taking over this many times the weight set's measured service "
          "time runs elsewhere (the worker is marked failed); 0: no per-attempt limit");
ABSL_FLAG(absl::Duration, min_attempt_timeout, absl::Seconds(30),
          "The per-attempt limit's floor; before any batch of the weight set has finished, the "
          "limit per cost unit (image or tile)");
ABSL_FLAG(absl::Duration, autoscale_queue_target, absl::Seconds(1),
          "Queue time that deeplab_gateway_worker_demand and workers_needed plan for");
ABSL_FLAG(double, autoscale_utilization, 0.8,
          "Share of each worker's batch slots that worker_demand and workers_needed plan busy");
ABSL_FLAG(absl::Duration, autoscale_window, absl::Seconds(30),
          "Time constant of the arrival-rate and service-time averages behind worker_demand");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(60),
          "On SIGTERM, how long queued and running requests may take to finish");

namespace {

int Run() {
  deeplab::BlockStopSignals();
  deeplab::GatewayOptions options;
  options.pool.workers = absl::GetFlag(FLAGS_workers);
  options.pool.status_interval = absl::GetFlag(FLAGS_status_interval);
  options.pool.resolve_interval = absl::GetFlag(FLAGS_resolve_interval);
  options.pool.max_message_bytes = absl::GetFlag(FLAGS_max_message_mb) << 20;
  options.pool.tls.ca_file = absl::GetFlag(FLAGS_worker_tls_ca);
  options.pool.tls.cert_file = absl::GetFlag(FLAGS_worker_tls_cert);
  options.pool.tls.key_file = absl::GetFlag(FLAGS_worker_tls_key);
  options.pool.tls.server_name = absl::GetFlag(FLAGS_worker_tls_server_name);
  if (absl::Status s = deeplab::ValidateClientTls(options.pool.tls); !s.ok()) {
    std::cerr << "deeplab-gateway: --worker-tls-*: " << s.message() << "\n";
    return 2;
  }
  absl::StatusOr<deeplab::ServerOptions> server_options = deeplab::ServerOptionsFromFlags(
      absl::GetFlag(FLAGS_port), absl::GetFlag(FLAGS_metrics_port));
  if (!server_options.ok()) {
    std::cerr << "deeplab-gateway: " << server_options.status().message() << "\n";
    return 2;
  }
  const deeplab::ServerTlsOptions& tls = server_options->tls;
  std::unique_ptr<deeplab::TokenAuthenticator> auth;
  if (const std::string path = absl::GetFlag(FLAGS_tokens_file); !path.empty()) {
    absl::StatusOr<std::unique_ptr<deeplab::TokenAuthenticator>> loaded =
        deeplab::TokenAuthenticator::FromFile(path);
    if (!loaded.ok()) {
      std::cerr << "deeplab-gateway: --tokens-file: " << loaded.status().message() << "\n";
      return 2;
    }
    auth = *std::move(loaded);
  }
  const int64_t max_image_bytes = absl::GetFlag(FLAGS_max_image_bytes);
  const int64_t max_inflight_mb = absl::GetFlag(FLAGS_max_inflight_mb);
  if (max_image_bytes < 1 || max_image_bytes > (1 << 30) || max_inflight_mb < 0) {
    std::cerr << "deeplab-gateway: --max-image-bytes must be in 1..1073741824 and "
                 "--max-inflight-mb at least 0\n";
    return 2;
  }
  options.max_image_bytes = max_image_bytes;
  options.max_inflight_bytes = max_inflight_mb << 20;
  options.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  options.attempt_timeout_factor = absl::GetFlag(FLAGS_attempt_timeout_factor);
  options.min_attempt_timeout = absl::GetFlag(FLAGS_min_attempt_timeout);
  if (options.attempt_timeout_factor < 0 || options.min_attempt_timeout <= absl::ZeroDuration()) {
    std::cerr << "deeplab-gateway: --attempt-timeout-factor must be at least 0 and "
                 "--min-attempt-timeout positive\n";
    return 2;
  }
  if (auto targets = deeplab::ParseWorkerTargets(options.pool.workers); !targets.ok()) {
    std::cerr << "deeplab-gateway: --workers: " << targets.status().message() << "\n";
    return 2;
  }
  options.autoscale.queue_target = absl::GetFlag(FLAGS_autoscale_queue_target);
  options.autoscale.utilization = absl::GetFlag(FLAGS_autoscale_utilization);
  options.autoscale.window = absl::GetFlag(FLAGS_autoscale_window);
  if (absl::Status s = options.autoscale.Validate(); !s.ok()) {
    std::cerr << "deeplab-gateway: bad --autoscale-* flag: " << s.message() << "\n";
    return 2;
  }
  if (options.max_attempts < 1) {
    std::cerr << "deeplab-gateway: --max-attempts must be at least 1\n";
    return 2;
  }
  int http_port = absl::GetFlag(FLAGS_http_port);
  const int http_threads = absl::GetFlag(FLAGS_http_threads);
  const absl::Duration http_request_timeout = absl::GetFlag(FLAGS_http_request_timeout);
  if (http_port < -1 || http_port > 65535 || http_threads < 1 || http_threads > 1024 ||
      http_request_timeout < absl::Milliseconds(1) || http_request_timeout > absl::Hours(1)) {
    std::cerr << "deeplab-gateway: --http-port must be -1 (off) or 0..65535, "
                 "--http-threads 1..1024 and --http-request-timeout 1ms..1h\n";
    return 2;
  }
  if (tls.enabled() && http_port >= 0 && !absl::GetFlag(FLAGS_http_insecure)) {
    std::cout << "deeplab-gateway: REST port off: it has no TLS and --tls-cert is set "
                 "(--http-insecure serves it behind a TLS-terminating proxy)" << std::endl;
    http_port = -1;
  }

  auto registry = std::make_shared<prometheus::Registry>();
  deeplab::GatewayMetrics metrics(*registry);
  deeplab::Gateway gateway(options, &metrics);
  deeplab::SegmentationService service(&gateway, auth.get());
  deeplab::InferenceService inference_service(&gateway, auth.get(), &metrics);
  const std::vector<std::string> kHealthNames = {"deeplab.v1.Segmentation",
                                                 "inference.GRPCInferenceService"};
  // What a worker would refuse is refused here, before a request holds it (gRPC receives
  // the message whole, then checks its size): the image plus 1 MiB for the rest.
  server_options->max_receive_bytes = static_cast<int>(max_image_bytes + (1 << 20));
  server_options->max_send_bytes = absl::GetFlag(FLAGS_max_message_mb) << 20;
  const std::string& host = server_options->host;
  absl::StatusOr<deeplab::ServerEndpoints> endpoints =
      deeplab::StartServer(*server_options, {&service, &inference_service}, kHealthNames);
  if (!endpoints.ok()) {
    std::cerr << "deeplab-gateway: " << endpoints.status().message() << "\n";
    return 1;
  }
  // The exposer holds collectables weakly: keep them alive for the life of the process.
  std::shared_ptr<prometheus::Collectable> process_metrics = deeplab::MakeProcessCollector();
  endpoints->exposer->RegisterCollectable(registry);
  endpoints->exposer->RegisterCollectable(process_metrics);
  grpc::Server& server = *endpoints->server;
  std::unique_ptr<deeplab::HttpInferenceServer> http;
  if (http_port >= 0) {
    deeplab::HttpOptions http_options;
    http_options.host = host;
    http_options.port = http_port;
    http_options.threads = http_threads;
    http_options.request_timeout = http_request_timeout;
    http_options.max_body_bytes = max_image_bytes + (1 << 20);
    absl::StatusOr<std::unique_ptr<deeplab::HttpInferenceServer>> started =
        deeplab::HttpInferenceServer::Start(http_options, &gateway, auth.get(), &metrics);
    if (!started.ok()) {
      std::cerr << "deeplab-gateway: --http-port: " << started.status().message() << "\n";
      return 1;
    }
    http = *std::move(started);
  }
  std::cout << "deeplab-gateway: grpc " << host << ":" << endpoints->port << std::endl;
  std::cout << "deeplab-gateway: metrics " << server_options->metrics_host << ":"
            << endpoints->metrics_port << "/metrics" << std::endl;
  if (http != nullptr) {
    std::cout << "deeplab-gateway: http " << host << ":" << http->port() << std::endl;
  }
  if (tls.enabled()) {
    std::cout << "deeplab-gateway: TLS on"
              << (tls.client_ca_file.empty() ? "" : ", client certificates required") << std::endl;
  }
  if (auth != nullptr) {
    std::cout << "deeplab-gateway: " << auth->size() << " bearer token(s) from --tokens-file"
              << (tls.enabled() ? "" : "; without TLS, use them on loopback only") << std::endl;
  }
  // Health follows the workers: SERVING while some worker has a ready weight set.
  gateway.SetOnWorkersChanged(
      [&] { deeplab::SetHealth(server, kHealthNames, gateway.Serving()); });
  gateway.Start();
  deeplab::SetHealth(server, kHealthNames, gateway.Serving());

  const int signal_number = deeplab::WaitForStopSignal();
  std::cout << "deeplab-gateway: signal " << signal_number << ", draining" << std::endl;
  gateway.SetOnWorkersChanged(nullptr);
  deeplab::SetHealth(server, kHealthNames, false);
  const bool drained = gateway.Drain(absl::GetFlag(FLAGS_drain_timeout));
  http.reset();  // its requests were answered by the drain
  server.Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  std::cout << "deeplab-gateway: " << (drained ? "drained, stopped" : "drain timed out, stopped")
            << std::endl;
  return drained ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "The deeplab-serve gateway: batches Segment requests and runs them on workers.\n"
      "Usage: deeplab-gateway --port N --metrics-port N --workers host:port,...|dns:///name:port");
  deeplab::ParseCommandLineWithDashes(argc, argv, "services/gateway/");
  return Run();
}
