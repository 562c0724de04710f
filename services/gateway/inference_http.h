// The Open Inference Protocol's REST/JSON form on its own HTTP port (civetweb, which
// prometheus-cpp already brings): /v2, /v2/health/{live,ready}, /v2/models/NAME[/versions/1]
// and its /ready and /infer, with the binary tensor data extension. Each infer request is
// turned into an inference::ModelInferRequest and run by oip::InferCall, like the gRPC form;
// the HTTP thread waits for its answer (--http-threads bounds the requests in progress).
// docs/api.md is the contract.
#ifndef DEEPLAB_SERVICES_GATEWAY_INFERENCE_HTTP_H_
#define DEEPLAB_SERVICES_GATEWAY_INFERENCE_HTTP_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "inference/grpc_predict_v2.pb.h"
#include "services/gateway/auth.h"
#include "services/gateway/gateway.h"
#include "services/gateway/gateway_metrics.h"

struct mg_context;
struct mg_connection;

namespace deeplab {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: a free one
  int threads = 32;
  // A connection must send its request's headers within this time, and no read of its body
  // or write of its answer may stall longer; then it is closed. Each connection holds one of
  // `threads` meanwhile, so this bounds how long idle connections can hold the port.
  absl::Duration request_timeout = absl::Seconds(10);
  // Largest request body; larger ones are answered 413 before they are read.
  int64_t max_body_bytes = 65 << 20;
  // Largest JSON part of a request (the whole body without the binary extension).
  int64_t max_json_bytes = 16 << 20;
};

// An infer request's JSON (plus its binary part) as a ModelInferRequest. `binary_outputs`
// gets, per requested output name, whether it is answered as binary data (in the order of
// the request's outputs; "*" for all when binary_data_output is set). INVALID_ARGUMENT says
// what is wrong.
struct HttpInferRequest {
  inference::ModelInferRequest request;
  bool all_binary = false;
  std::vector<std::string> binary_outputs;
};
absl::StatusOr<HttpInferRequest> ParseHttpInferRequest(const std::string& body,
                                                       int64_t json_length,
                                                       int64_t max_json_bytes);
// The response body: JSON, then the binary outputs when any; `json_length` gets the JSON's
// length (for Inference-Header-Content-Length).
std::string FormatHttpInferResponse(const inference::ModelInferResponse& response,
                                    const HttpInferRequest& request, size_t* json_length);
// ModelMetadata in the REST form (shapes as numbers, parameters as plain JSON values).
std::string FormatModelMetadata(const inference::ModelMetadataResponse& metadata);
// HTTP status for a gRPC/absl code.
int HttpStatusFor(absl::StatusCode code);
// `text` as a JSON string literal.
std::string JsonQuote(const std::string& text);

class HttpInferenceServer {
 public:
  // Listens on host:port. UNAVAILABLE when the port cannot be bound. gateway must outlive
  // the server; auth (may be null) and metrics (may be null) too.
  static absl::StatusOr<std::unique_ptr<HttpInferenceServer>> Start(
      const HttpOptions& options, Gateway* gateway, const TokenAuthenticator* auth,
      GatewayMetrics* metrics);
  ~HttpInferenceServer();  // stops listening, waits for requests in progress
  HttpInferenceServer(const HttpInferenceServer&) = delete;
  HttpInferenceServer& operator=(const HttpInferenceServer&) = delete;

  int port() const { return port_; }

 private:
  HttpInferenceServer(const HttpOptions& options, Gateway* gateway,
                      const TokenAuthenticator* auth, GatewayMetrics* metrics)
      : options_(options), gateway_(gateway), auth_(auth), metrics_(metrics) {}
  static int Handle(mg_connection* conn, void* self);
  int Route(mg_connection* conn);

  const HttpOptions options_;
  Gateway* const gateway_;
  const TokenAuthenticator* const auth_;
  GatewayMetrics* const metrics_;
  mg_context* context_ = nullptr;
  int port_ = 0;
};

}  // namespace deeplab

#endif  // DEEPLAB_SERVICES_GATEWAY_INFERENCE_HTTP_H_
