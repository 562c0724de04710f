#include "services/gateway/inference_http.h"

#include <civetweb.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "common/log.h"
#include "services/gateway/inference_protocol.h"

namespace deeplab {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

constexpr char kHeaderLength[] = "Inference-Header-Content-Length";

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

const Value* Field(const Struct& s, const std::string& name) {
  auto it = s.fields().find(name);
  return it == s.fields().end() ? nullptr : &it->second;
}

bool IsInteger(const Value& v) {
  return v.kind_case() == Value::kNumberValue && std::isfinite(v.number_value()) &&
         std::floor(v.number_value()) == v.number_value() &&
         std::fabs(v.number_value()) < 9.007199254740992e15;
}

// JSON parameters ({"name": bool|number|string}) as the protocol's InferParameters.
absl::Status ToParameters(const Value& v, const std::string& where,
                          google::protobuf::Map<std::string, inference::InferParameter>* out) {
  if (v.kind_case() != Value::kStructValue) {
    return Invalid(absl::StrCat(where, " parameters must be a JSON object"));
  }
  for (const auto& [name, value] : v.struct_value().fields()) {
    inference::InferParameter& p = (*out)[name];
    switch (value.kind_case()) {
      case Value::kBoolValue:
        p.set_bool_param(value.bool_value());
        break;
      case Value::kStringValue:
        p.set_string_param(value.string_value());
        break;
      case Value::kNumberValue:
        if (IsInteger(value)) {
          p.set_int64_param(static_cast<int64_t>(value.number_value()));
        } else {
          p.set_double_param(value.number_value());
        }
        break;
      default:
        return Invalid(absl::StrCat(where, " parameter '", name,
                                    "' must be a boolean, a number or a string"));
    }
  }
  return absl::OkStatus();
}

// The elements of a (possibly nested) JSON array, flattened in row-major order.
absl::Status Flatten(const Value& v, std::vector<const Value*>* out, int depth = 0) {
  if (depth > 8) return Invalid("tensor data is nested too deeply");
  if (v.kind_case() != Value::kListValue) {
    out->push_back(&v);
    return absl::OkStatus();
  }
  for (const Value& e : v.list_value().values()) {
    if (absl::Status s = Flatten(e, out, depth + 1); !s.ok()) return s;
  }
  return absl::OkStatus();
}

bool BoolParameter(const google::protobuf::Map<std::string, inference::InferParameter>& params,
                   const std::string& name) {
  auto it = params.find(name);
  return it != params.end() && it->second.parameter_choice_case() ==
                                   inference::InferParameter::kBoolParam &&
         it->second.bool_param();
}

void AppendJsonString(std::string* out, absl::string_view text) {
  out->push_back('"');
  for (unsigned char c : text) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (c < 0x20) {
          absl::StrAppend(out, "\\u00", absl::Hex(c, absl::kZeroPad2));
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

std::string ErrorJson(const absl::Status& status) {
  return absl::StrCat("{\"error\":", JsonQuote(std::string(status.message())), "}");
}


void AppendParameters(std::string* json,
                      const google::protobuf::Map<std::string, inference::InferParameter>& params) {
  // Sorted, so the answer is stable.
  std::map<std::string, const inference::InferParameter*> sorted;
  for (const auto& [name, value] : params) sorted[name] = &value;
  *json += "{";
  bool first = true;
  for (const auto& [name, p] : sorted) {
    if (!first) *json += ",";
    first = false;
    AppendJsonString(json, name);
    *json += ":";
    switch (p->parameter_choice_case()) {
      case inference::InferParameter::kBoolParam:
        *json += p->bool_param() ? "true" : "false";
        break;
      case inference::InferParameter::kInt64Param:
        absl::StrAppend(json, p->int64_param());
        break;
      case inference::InferParameter::kUint64Param:
        absl::StrAppend(json, p->uint64_param());
        break;
      case inference::InferParameter::kDoubleParam:
        absl::StrAppend(json, p->double_param());
        break;
      case inference::InferParameter::kStringParam:
        AppendJsonString(json, p->string_param());
        break;
      default:
        *json += "null";
    }
  }
  *json += "}";
}

void AppendTensors(std::string* json,
                   const google::protobuf::RepeatedPtrField<
                       inference::ModelMetadataResponse::TensorMetadata>& tensors) {
  *json += "[";
  for (int i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (i > 0) *json += ",";
    *json += "{\"name\":";
    AppendJsonString(json, t.name());
    *json += ",\"datatype\":";
    AppendJsonString(json, t.datatype());
    absl::StrAppend(json, ",\"shape\":[", absl::StrJoin(t.shape(), ","), "]}");
  }
  *json += "]";
}

}  // namespace

std::string JsonQuote(const std::string& text) {
  std::string out;
  AppendJsonString(&out, text);
  return out;
}

std::string FormatModelMetadata(const inference::ModelMetadataResponse& m) {
  std::string json = "{\"name\":";
  AppendJsonString(&json, m.name());
  json += ",\"versions\":[";
  for (int i = 0; i < m.versions_size(); ++i) {
    if (i > 0) json += ",";
    AppendJsonString(&json, m.versions(i));
  }
  json += "],\"platform\":";
  AppendJsonString(&json, m.platform());
  json += ",\"inputs\":";
  AppendTensors(&json, m.inputs());
  json += ",\"outputs\":";
  AppendTensors(&json, m.outputs());
  json += ",\"parameters\":";
  AppendParameters(&json, m.parameters());
  json += "}";
  return json;
}

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

absl::StatusOr<HttpInferRequest> ParseHttpInferRequest(const std::string& body,
                                                       int64_t json_length,
                                                       int64_t max_json_bytes) {
  const int64_t json_size = json_length < 0 ? static_cast<int64_t>(body.size()) : json_length;
  if (json_size > static_cast<int64_t>(body.size())) {
    return Invalid(absl::StrCat(kHeaderLength, " is ", json_size, " but the body has only ",
                                body.size(), " bytes"));
  }
  if (json_size > max_json_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request's JSON has ", json_size, " bytes, more than ", max_json_bytes,
        "; send large tensors with the binary data extension"));
  }
  Struct root;
  if (auto s = google::protobuf::util::JsonStringToMessage(
          google::protobuf::StringPiece(body.data(), static_cast<size_t>(json_size)), &root);
      !s.ok()) {
    return Invalid(absl::StrCat("the request is not a JSON object: ", s.message().ToString()));
  }
  HttpInferRequest out;
  inference::ModelInferRequest& request = out.request;
  absl::string_view binary(body.data() + json_size, body.size() - static_cast<size_t>(json_size));

  if (const Value* id = Field(root, "id"); id != nullptr) {
    if (id->kind_case() != Value::kStringValue) return Invalid("id must be a string");
    request.set_id(id->string_value());
  }
  if (const Value* params = Field(root, "parameters"); params != nullptr) {
    if (auto s = ToParameters(*params, "the request's", request.mutable_parameters()); !s.ok()) {
      return s;
    }
    out.all_binary = BoolParameter(request.parameters(), "binary_data_output");
  }
  const Value* inputs = Field(root, "inputs");
  if (inputs == nullptr || inputs->kind_case() != Value::kListValue) {
    return Invalid("the request has no \"inputs\" list");
  }
  for (const Value& v : inputs->list_value().values()) {
    if (v.kind_case() != Value::kStructValue) return Invalid("each input must be a JSON object");
    const Struct& in = v.struct_value();
    auto* tensor = request.add_inputs();
    const Value* name = Field(in, "name");
    const Value* datatype = Field(in, "datatype");
    const Value* shape = Field(in, "shape");
    if (name == nullptr || name->kind_case() != Value::kStringValue ||
        datatype == nullptr || datatype->kind_case() != Value::kStringValue ||
        shape == nullptr || shape->kind_case() != Value::kListValue) {
      return Invalid("each input needs \"name\" and \"datatype\" (strings) and \"shape\" (a list)");
    }
    tensor->set_name(name->string_value());
    tensor->set_datatype(datatype->string_value());
    for (const Value& d : shape->list_value().values()) {
      if (!IsInteger(d)) return Invalid("shape dimensions must be integers");
      tensor->add_shape(static_cast<int64_t>(d.number_value()));
    }
    if (const Value* params = Field(in, "parameters"); params != nullptr) {
      if (auto s = ToParameters(*params, "an input's", tensor->mutable_parameters()); !s.ok()) {
        return s;
      }
    }
    auto& params = *tensor->mutable_parameters();
    if (auto it = params.find("binary_data_size"); it != params.end()) {
      if (it->second.parameter_choice_case() != inference::InferParameter::kInt64Param ||
          it->second.int64_param() < 0) {
        return Invalid("binary_data_size must be a non-negative integer");
      }
      const auto size = static_cast<uint64_t>(it->second.int64_param());
      if (size > binary.size()) {
        return Invalid(absl::StrCat("input '", tensor->name(), "' has binary_data_size ", size,
                                    " but only ", binary.size(), " bytes of binary data follow"));
      }
      request.add_raw_input_contents(std::string(binary.substr(0, size)));
      binary.remove_prefix(size);
      params.erase(it);
      continue;
    }
    const Value* data = Field(in, "data");
    if (data == nullptr) {
      return Invalid(absl::StrCat("input '", tensor->name(),
                                  "' has neither \"data\" nor a binary_data_size parameter"));
    }
    std::vector<const Value*> elements;
    if (auto s = Flatten(*data, &elements); !s.ok()) return s;
    if (tensor->datatype() == "UINT8") {
      std::string bytes(elements.size(), '\0');
      for (size_t i = 0; i < elements.size(); ++i) {
        const Value& e = *elements[i];
        if (!IsInteger(e) || e.number_value() < 0 || e.number_value() > 255) {
          return Invalid(absl::StrCat("input '", tensor->name(),
                                      "' is UINT8, so its data must be integers 0..255"));
        }
        bytes[i] = static_cast<char>(static_cast<int>(e.number_value()));
      }
      request.add_raw_input_contents(std::move(bytes));
    } else if (tensor->datatype() == "BYTES") {
      auto ct = params.find("content_type");
      const bool base64 = ct != params.end() && ct->second.string_param() == "base64";
      for (const Value* e : elements) {
        if (e->kind_case() != Value::kStringValue) {
          return Invalid(absl::StrCat("input '", tensor->name(),
                                      "' is BYTES, so its data must be strings"));
        }
        std::string* element = tensor->mutable_contents()->add_bytes_contents();
        if (!base64) {
          *element = e->string_value();
        } else if (!absl::Base64Unescape(e->string_value(), element)) {
          return Invalid(absl::StrCat("input '", tensor->name(),
                                      "' has content_type base64 but an element is not base64"));
        }
      }
    }
    // Other datatypes carry no data the models take; ModelInfer refuses them by datatype.
  }
  if (!binary.empty()) {
    return Invalid(absl::StrCat(binary.size(), " bytes of binary data follow the JSON but no "
                                "input's binary_data_size claims them"));
  }
  if (const Value* outputs = Field(root, "outputs"); outputs != nullptr) {
    if (outputs->kind_case() != Value::kListValue) return Invalid("outputs must be a list");
    for (const Value& v : outputs->list_value().values()) {
      const Value* name = v.kind_case() == Value::kStructValue ? Field(v.struct_value(), "name")
                                                               : nullptr;
      if (name == nullptr || name->kind_case() != Value::kStringValue) {
        return Invalid("each output must be an object with a \"name\"");
      }
      auto* o = request.add_outputs();
      o->set_name(name->string_value());
      if (const Value* params = Field(v.struct_value(), "parameters"); params != nullptr) {
        if (auto s = ToParameters(*params, "an output's", o->mutable_parameters()); !s.ok()) {
          return s;
        }
        if (BoolParameter(o->parameters(), "binary_data")) out.binary_outputs.push_back(o->name());
      }
    }
  }
  return out;
}

std::string FormatHttpInferResponse(const inference::ModelInferResponse& response,
                                    const HttpInferRequest& request, size_t* json_length) {
  std::string json = "{\"model_name\":";
  AppendJsonString(&json, response.model_name());
  json += ",\"model_version\":";
  AppendJsonString(&json, response.model_version());
  if (!response.id().empty()) {
    json += ",\"id\":";
    AppendJsonString(&json, response.id());
  }
  json += ",\"outputs\":[";
  std::string binary;
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& t = response.outputs(i);
    const std::string& raw = response.raw_output_contents(i);
    if (i > 0) json += ",";
    json += "{\"name\":";
    AppendJsonString(&json, t.name());
    absl::StrAppend(&json, ",\"datatype\":\"", t.datatype(), "\",\"shape\":[",
                    absl::StrJoin(t.shape(), ","), "]");
    bool as_binary = request.all_binary;
    for (const std::string& n : request.binary_outputs) as_binary = as_binary || n == t.name();
    if (as_binary) {
      absl::StrAppend(&json, ",\"parameters\":{\"binary_data_size\":", raw.size(), "}}");
      binary += raw;
      continue;
    }
    if (t.datatype() == "BYTES") {
      json += ",\"parameters\":{\"content_type\":\"base64\"},\"data\":[";
      absl::StatusOr<std::vector<std::string>> elements = oip::DecodeBytesElements(raw);
      for (size_t k = 0; elements.ok() && k < elements->size(); ++k) {
        if (k > 0) json += ",";
        absl::StrAppend(&json, "\"", absl::Base64Escape((*elements)[k]), "\"");
      }
    } else if (t.datatype() == "FP32") {
      json += ",\"data\":[";
      for (size_t k = 0; k + 4 <= raw.size(); k += 4) {
        float f;
        std::memcpy(&f, raw.data() + k, 4);
        if (k > 0) json += ",";
        absl::StrAppend(&json, f);
      }
    } else {  // UINT8
      json += ",\"data\":[";
      json.reserve(json.size() + raw.size() * 2 + 16);
      for (size_t k = 0; k < raw.size(); ++k) {
        if (k > 0) json += ",";
        absl::StrAppend(&json, static_cast<unsigned char>(raw[k]));
      }
    }
    json += "]}";
  }
  json += "]}";
  *json_length = json.size();
  if (binary.empty()) return json;
  return json + binary;
}

// ----------------------------------------------------------------------------------------

namespace {

struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  int64_t json_length = -1;  // Inference-Header-Content-Length when set
  bool close = false;
};

Reply JsonReply(int status, std::string body) {
  Reply r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

Reply ErrorReply(const absl::Status& status) {
  return JsonReply(HttpStatusFor(status.code()), ErrorJson(status));
}

void Send(mg_connection* conn, const Reply& r) {
  std::string head = absl::StrCat("HTTP/1.1 ", r.status, " ",
                                  mg_get_response_code_text(conn, r.status),
                                  "\r\nContent-Type: ", r.content_type,
                                  "\r\nContent-Length: ", r.body.size(), "\r\n");
  if (r.json_length >= 0) absl::StrAppend(&head, kHeaderLength, ": ", r.json_length, "\r\n");
  if (r.close) head += "Connection: close\r\n";
  head += "\r\n";
  mg_write(conn, head.data(), head.size());
  if (!r.body.empty()) mg_write(conn, r.body.data(), r.body.size());
}

int LogMessage(const mg_connection*, const char* message) {
  LogLine("deeplab-gateway", absl::StrCat("http: ", absl::StripTrailingAsciiWhitespace(message)));
  return 1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpInferenceServer>> HttpInferenceServer::Start(
    const HttpOptions& options, Gateway* gateway, const TokenAuthenticator* auth,
    GatewayMetrics* metrics) {
  std::unique_ptr<HttpInferenceServer> server(
      new HttpInferenceServer(options, gateway, auth, metrics));
  const std::string ports = absl::StrCat(options.host, ":", options.port);
  const std::string threads = absl::StrCat(options.threads);
  // civetweb gives each connection a thread from the moment it is accepted. With a 60 s
  // timeout, --http-threads idle connections (32 by default) held the REST port for a
  // minute at a time.
  const std::string timeout_ms =
      absl::StrCat(std::max<int64_t>(1, absl::ToInt64Milliseconds(options.request_timeout)));
  const char* civet_options[] = {"listening_ports", ports.c_str(),
                                 "num_threads", threads.c_str(),
                                 "enable_keep_alive", "yes",
                                 "request_timeout_ms", timeout_ms.c_str(),
                                 nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.log_message = LogMessage;
  mg_init_library(0);
  server->context_ = mg_start(&callbacks, server.get(), civet_options);
  if (server->context_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ", ports));
  }
  mg_set_request_handler(server->context_, "/", &HttpInferenceServer::Handle, server.get());
  mg_server_port listening[4];
  const int n = mg_get_server_ports(server->context_, 4, listening);
  if (n < 1) return absl::UnavailableError("the HTTP server reports no port");
  server->port_ = listening[0].port;
  return server;
}

HttpInferenceServer::~HttpInferenceServer() {
  if (context_ != nullptr) mg_stop(context_);
}

int HttpInferenceServer::Handle(mg_connection* conn, void* self) {
  // civetweb's threads have small stacks (Debian builds it with 100 KiB), too small for
  // protobuf's descriptor building and JSON; each request runs on a thread of normal size
  // while the civetweb thread waits (creating one costs tens of microseconds).
  int status = 0;
  std::thread worker([&] { status = static_cast<HttpInferenceServer*>(self)->Route(conn); });
  worker.join();
  return status;
}

int HttpInferenceServer::Route(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  const std::string method = info->request_method != nullptr ? info->request_method : "";
  const std::string uri = info->local_uri != nullptr ? info->local_uri : "";
  std::vector<std::string> parts = absl::StrSplit(uri, '/', absl::SkipEmpty());
  Reply reply;
  std::string api_method;  // for the metric; empty: not a protocol call
  absl::StatusCode code = absl::StatusCode::kOk;

  auto finish = [&](Reply r) {
    Send(conn, r);
    if (metrics_ != nullptr && !api_method.empty()) {
      metrics_->CountApiCall("oip_rest", api_method, code);
    }
    return r.status;
  };
  auto fail = [&](const absl::Status& status) {
    code = status.code();
    return finish(ErrorReply(status));
  };
  auto wrong_method = [&](const char* allowed) {
    Reply r = JsonReply(405, ErrorJson(absl::InvalidArgumentError(
                                 absl::StrCat(method, " is not allowed on ", uri, "; use ",
                                              allowed))));
    r.close = method == "POST";
    return finish(std::move(r));
  };

  if (parts.empty() || parts[0] != "v2") {
    return finish(JsonReply(404, ErrorJson(absl::NotFoundError(absl::StrCat(
                                     "no such path: ", uri, " (the protocol's paths start with /v2)")))));
  }
  if (parts.size() == 1) {
    api_method = "ServerMetadata";
    if (method != "GET") return wrong_method("GET");
    const inference::ServerMetadataResponse m = oip::ServerMetadata();
    std::string json = "{\"name\":" + JsonQuote(m.name()) + ",\"version\":" +
                       JsonQuote(m.version()) + ",\"extensions\":[";
    for (int i = 0; i < m.extensions_size(); ++i) {
      if (i > 0) json += ",";
      json += JsonQuote(m.extensions(i));
    }
    return finish(JsonReply(200, json + "]}"));
  }
  if (parts[1] == "health" && parts.size() == 3 && (parts[2] == "live" || parts[2] == "ready")) {
    api_method = parts[2] == "live" ? "ServerLive" : "ServerReady";
    if (method != "GET") return wrong_method("GET");
    if (parts[2] == "live") return finish(JsonReply(200, "{\"live\":true}"));
    const bool ready = gateway_->Serving();
    return finish(JsonReply(ready ? 200 : 400, ready ? "{\"ready\":true}" : "{\"ready\":false}"));
  }
  if (parts[1] != "models" || parts.size() < 3) {
    return finish(JsonReply(404, ErrorJson(absl::NotFoundError(absl::StrCat("no such path: ",
                                                                            uri)))));
  }
  // /v2/models/NAME[/versions/V][/ready|/infer]
  const std::string& name = parts[2];
  std::string version;
  size_t next = 3;
  if (parts.size() >= 5 && parts[3] == "versions") {
    version = parts[4];
    next = 5;
  }
  std::string action;
  if (parts.size() == next + 1) {
    action = parts[next];
  } else if (parts.size() != next) {
    return finish(JsonReply(404, ErrorJson(absl::NotFoundError(absl::StrCat("no such path: ",
                                                                            uri)))));
  }
  if (!action.empty() && action != "ready" && action != "infer") {
    return finish(JsonReply(404, ErrorJson(absl::NotFoundError(absl::StrCat("no such path: ",
                                                                            uri)))));
  }
  api_method = action.empty() ? "ModelMetadata" : action == "ready" ? "ModelReady" : "ModelInfer";
  if (action == "infer" ? method != "POST" : method != "GET") {
    return wrong_method(action == "infer" ? "POST" : "GET");
  }
  if (auth_ != nullptr) {
    const char* header = mg_get_header(conn, "Authorization");
    if (absl::Status s = auth_->Allow(header == nullptr ? "" : header, name); !s.ok()) {
      return fail(s);
    }
  }
  if (action != "infer") {
    absl::StatusOr<v1::ModelInfo> model =
        oip::FindModel(gateway_->ListModelsFor(name), name, version);
    if (!model.ok()) return fail(model.status());
    if (action == "ready") {
      return finish(JsonReply(model->ready() ? 200 : 400,
                              absl::StrCat("{\"name\":", JsonQuote(name),
                                           ",\"ready\":", model->ready() ? "true" : "false", "}")));
    }
    return finish(JsonReply(200, FormatModelMetadata(oip::ModelMetadata(*model))));
  }

  // POST .../infer: read the body, bounded.
  const int64_t declared = info->content_length;
  const char* encoding = mg_get_header(conn, "Transfer-Encoding");
  if (declared < 0 && (encoding == nullptr || !absl::EqualsIgnoreCase(encoding, "chunked"))) {
    Reply r = ErrorReply(absl::InvalidArgumentError(
        "the request has no Content-Length (nor chunked transfer encoding)"));
    r.status = 411;
    r.close = true;
    code = absl::StatusCode::kInvalidArgument;
    return finish(std::move(r));
  }
  if (declared > options_.max_body_bytes) {
    Reply r = ErrorReply(absl::ResourceExhaustedError(absl::StrCat(
        "the request body has ", declared, " bytes, more than the gateway's limit of ",
        options_.max_body_bytes, " (--max-image-bytes + 1 MiB)")));
    r.status = 413;
    r.close = true;
    code = absl::StatusCode::kResourceExhausted;
    return finish(std::move(r));
  }
  std::string body;
  if (declared >= 0) body.reserve(static_cast<size_t>(declared));
  for (;;) {
    constexpr size_t kChunk = 1 << 16;
    const size_t had = body.size();
    body.resize(had + kChunk);
    const int got = mg_read(conn, body.data() + had, kChunk);
    body.resize(had + static_cast<size_t>(got > 0 ? got : 0));
    if (got <= 0) break;
    if (static_cast<int64_t>(body.size()) > options_.max_body_bytes) {
      Reply r = ErrorReply(absl::ResourceExhaustedError(absl::StrCat(
          "the request body is larger than the gateway's limit of ", options_.max_body_bytes,
          " bytes (--max-image-bytes + 1 MiB)")));
      r.status = 413;
      r.close = true;
      code = absl::StatusCode::kResourceExhausted;
      return finish(std::move(r));
    }
  }
  int64_t json_length = -1;
  if (const char* h = mg_get_header(conn, kHeaderLength); h != nullptr) {
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(h), &json_length) || json_length < 0) {
      return fail(Invalid(absl::StrCat(kHeaderLength, " must be a byte count")));
    }
  }
  absl::StatusOr<HttpInferRequest> parsed =
      ParseHttpInferRequest(body, json_length, options_.max_json_bytes);
  std::string().swap(body);
  if (!parsed.ok()) {
    if (parsed.status().code() == absl::StatusCode::kResourceExhausted) {
      Reply r = ErrorReply(parsed.status());
      r.status = 413;
      code = absl::StatusCode::kResourceExhausted;
      return finish(std::move(r));
    }
    return fail(parsed.status());
  }
  parsed->request.set_model_name(name);
  parsed->request.set_model_version(version);
  inference::ModelInferResponse response;
  absl::Notification answered;
  absl::Status status;
  std::shared_ptr<oip::InferCall> call = oip::InferCall::Start(
      gateway_, parsed->request, &response, absl::InfiniteFuture(), [&](absl::Status s) {
        status = std::move(s);
        answered.Notify();
      });
  parsed->request.Clear();  // the images are held by the call's requests now
  answered.WaitForNotification();
  if (!status.ok()) return fail(status);
  Reply r;
  size_t json_size = 0;
  r.body = FormatHttpInferResponse(response, *parsed, &json_size);
  if (json_size != r.body.size()) {
    r.json_length = static_cast<int64_t>(json_size);
    r.content_type = "application/octet-stream";
  }
  return finish(std::move(r));
}

}  // namespace deeplab
