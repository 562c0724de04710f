// deeplab models and deeplab wait, and what every subcommand shares: the channel and the
// ListModels call.
#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_util.h"
#include "google/protobuf/util/json_util.h"
#include "services/client/commands.h"

namespace deeplab::client {
namespace {

std::string Workers(int n) { return absl::StrCat(n, n == 1 ? " worker" : " workers"); }

std::string ModelNames(const v1::ListModelsResponse& response) {
  std::vector<std::string> names;
  for (const v1::ModelInfo& m : response.models()) names.push_back(m.name());
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

const v1::ModelInfo* FindModel(const v1::ListModelsResponse& response, const std::string& name) {
  for (const v1::ModelInfo& m : response.models()) {
    if (m.name() == name) return &m;
  }
  return nullptr;
}

std::string WhyNotReady(const v1::ModelInfo& m) {
  if (m.not_ready_reasons().empty()) return "no healthy worker hosts it";
  return absl::StrJoin(m.not_ready_reasons(), "; ");
}

}  // namespace

std::shared_ptr<grpc::Channel> NewChannel(const Connection& connection) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      MakeClientChannel(connection.server, connection.tls);
  if (!channel.ok()) {
    // Never a plaintext fallback; main validated the files, so one went away since.
    std::cerr << "deeplab: " << channel.status().message() << "\n";
    std::exit(kExitUsage);
  }
  return *std::move(channel);
}

int ExitCodeOfFailedListModels(const absl::Status& status) {
  return absl::IsUnauthenticated(status) || absl::IsPermissionDenied(status) ? kExitUnauthorized
                                                                             : kExitUnreachable;
}

absl::StatusOr<v1::ListModelsResponse> ListModels(v1::Segmentation::StubInterface& stub,
                                                  const Connection& connection,
                                                  absl::Duration timeout) {
  grpc::ClientContext context;
  AddBearerToken(connection.token, &context);
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::ListModelsResponse response;
  grpc::Status status = stub.ListModels(&context, v1::ListModelsRequest(), &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

std::string UnreachableMessage(const Connection& connection, const absl::Status& status) {
  std::string message =
      absl::StrCat("cannot reach the gateway at ", connection.server, ": ",
                   absl::StatusCodeToString(status.code()), ": ", status.message());
  if (absl::IsUnimplemented(status)) absl::StrAppend(&message, " (is it a deeplab-gateway?)");
  if (absl::IsUnauthenticated(status) && connection.token.empty()) {
    absl::StrAppend(&message, " (give a token: --token-file FILE or DEEPLAB_TOKEN)");
  }
  return message;
}

std::string FormatModelsTable(const v1::ListModelsResponse& response) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "READY", "CLASSES", "INPUT", "BACKBONE", "MAX BATCH", "DESCRIPTION"}};
  for (const v1::ModelInfo& m : response.models()) {
    std::string input = absl::StrCat(m.input_height(), "x", m.input_width());
    if (m.tile_stride() > 0) absl::StrAppend(&input, " tiles, stride ", m.tile_stride());
    rows.push_back({m.name(),
                    m.ready() ? absl::StrCat("yes (", Workers(m.ready_workers_size()), ")") : "no",
                    absl::StrCat(m.num_classes()), input, m.backbone().empty() ? "-" : m.backbone(),
                    absl::StrCat(m.max_batch_size()), m.description()});
  }
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (size_t r = 0; r < rows.size(); ++r) {
    std::string line;
    for (size_t i = 0; i < rows[r].size(); ++i) {
      absl::StrAppend(&line, rows[r][i]);
      // The last column (the description) is not padded: no trailing blanks.
      if (i + 1 < rows[r].size()) line.append(widths[i] + 2 - rows[r][i].size(), ' ');
    }
    line.erase(line.find_last_not_of(' ') + 1);
    absl::StrAppend(&out, line, "\n");
    if (r > 0 && !response.models(r - 1).ready()) {
      for (const std::string& reason : response.models(r - 1).not_ready_reasons()) {
        absl::StrAppend(&out, "    not ready on ", reason, "\n");
      }
    }
  }
  if (response.models().empty()) absl::StrAppend(&out, "(no weight sets)\n");
  absl::StrAppend(&out, Workers(response.workers()), ", ", response.healthy_workers(),
                  " healthy\n");
  return out;
}

std::string NotReadyReason(const v1::ListModelsResponse& response,
                           const std::vector<std::string>& models) {
  if (models.empty()) {
    std::vector<std::string> reasons;
    for (const v1::ModelInfo& m : response.models()) {
      if (m.ready()) return "";
      reasons.push_back(absl::StrCat(m.name(), ": ", WhyNotReady(m)));
    }
    if (reasons.empty()) {
      return absl::StrCat("the gateway has no weight sets (", Workers(response.workers()), ", ",
                          response.healthy_workers(), " healthy)");
    }
    return absl::StrCat("no weight set is ready (", absl::StrJoin(reasons, "; "), ")");
  }
  std::vector<std::string> reasons;
  for (const std::string& name : models) {
    const v1::ModelInfo* m = FindModel(response, name);
    if (m == nullptr) {
      reasons.push_back(absl::StrCat("weight set '", name, "' is unknown to the gateway (it has: ",
                                     ModelNames(response), ")"));
    } else if (!m->ready()) {
      reasons.push_back(absl::StrCat("weight set '", name, "' is not ready: ", WhyNotReady(*m)));
    }
  }
  return absl::StrJoin(reasons, "; ");
}

int ModelsCommand(const Connection& connection, bool json, std::ostream& out, std::ostream& err) {
  auto stub = v1::Segmentation::NewStub(NewChannel(connection));
  absl::StatusOr<v1::ListModelsResponse> response =
      ListModels(*stub, connection, connection.connect_timeout);
  if (!response.ok()) {
    err << "deeplab models: " << UnreachableMessage(connection, response.status()) << "\n";
    return ExitCodeOfFailedListModels(response.status());
  }
  if (!json) {
    out << FormatModelsTable(*response);
    return kExitOk;
  }
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string text;
  if (auto s = google::protobuf::util::MessageToJsonString(*response, &text, options); !s.ok()) {
    err << "deeplab models: cannot print the answer as JSON: " << s.message() << "\n";
    return kExitSomeFailed;
  }
  out << text;
  return kExitOk;
}

int WaitCommand(const WaitOptions& options, std::ostream& out, std::ostream& err) {
  auto stub = v1::Segmentation::NewStub(NewChannel(options.connection));
  const absl::Time deadline = absl::Now() + options.timeout;
  std::string why;
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    absl::StatusOr<v1::ListModelsResponse> response =
        ListModels(*stub, options.connection, std::min(left, options.connection.connect_timeout));
    if (response.ok()) {
      why = NotReadyReason(*response, options.models);
      if (why.empty()) {
        std::vector<std::string> ready = options.models;
        for (const v1::ModelInfo& m : response->models()) {
          if (options.models.empty() && m.ready()) ready.push_back(m.name());
        }
        out << "ready: " << absl::StrJoin(ready, ", ") << "\n";
        return kExitOk;
      }
    } else {
      why = UnreachableMessage(options.connection, response.status());
    }
    // Polling another process's state: the gateway has no call that waits for readiness.
    // The last sleep ends at the deadline, so no poll runs with a uselessly short deadline.
    absl::SleepFor(std::min(options.poll_interval, deadline - absl::Now()));
    if (absl::Now() >= deadline) break;
  }
  err << "deeplab wait: not ready after " << absl::FormatDuration(options.timeout) << ": " << why
      << "\n";
  return kExitSomeFailed;
}

}  // namespace deeplab::client
