// The subcommands of `deeplab`, the command-line client of the gateway's public API
// (deeplab.v1.Segmentation): models, wait and segment. deeplab_cli.cc turns flags into these
// options; everything here writes to the streams it is given and returns the exit code.
//
// Every RPC carries a deadline, so no subcommand can hang on a silent server.
#ifndef DEEPLAB_SERVICES_CLIENT_COMMANDS_H_
#define DEEPLAB_SERVICES_CLIENT_COMMANDS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls.h"
#include "deeplab/v1/segmentation.grpc.pb.h"

namespace deeplab::client {

// The exit codes of `deeplab`, as its usage text documents them.
enum ExitCode : int {
  kExitOk = 0,
  kExitSomeFailed = 1,   // segment: some images failed (the others were written); wait: timeout
  kExitUsage = 2,        // bad command line
  kExitUnreachable = 3,  // gateway unreachable, or UNAVAILABLE for every image
  kExitUnknownModel = 4,
  kExitUnauthorized = 5,  // no valid token (UNAUTHENTICATED) or not for this (PERMISSION_DENIED)
};

struct Connection {
  std::string server;  // "host:port" or any gRPC target ("dns:///name:port")
  // Deadline of the ListModels call that opens every subcommand: an unreachable address
  // fails at once (connection refused) or at this deadline (nothing answers).
  absl::Duration connect_timeout = absl::Seconds(5);
  ClientTlsOptions tls;  // plaintext unless enabled
  std::string token;     // bearer token sent with every call; empty: none
};

// A channel (TLS per connection.tls) without gRPC's 4 MiB receive limit: the overlay and
// label PNGs of a large photo exceed it, and the gateway already bounds what it sends.
// The TLS files must have passed ValidateClientTls; the program ends (exit 2) otherwise.
std::shared_ptr<grpc::Channel> NewChannel(const Connection& connection);

absl::StatusOr<v1::ListModelsResponse> ListModels(v1::Segmentation::StubInterface& stub,
                                                  const Connection& connection,
                                                  absl::Duration timeout);

// kExitUnauthorized for UNAUTHENTICATED and PERMISSION_DENIED, else kExitUnreachable.
int ExitCodeOfFailedListModels(const absl::Status& status);

// "cannot reach the gateway at ADDR: CODE: message", with a hint where the code suggests one.
std::string UnreachableMessage(const Connection& connection, const absl::Status& status);

// The readable form of ListModels: one row per weight set (name, ready and on how many
// workers, classes, input size, backbone, max batch, description), the reasons under the
// ones that are not ready, then "N workers, M healthy".
std::string FormatModelsTable(const v1::ListModelsResponse& response);

// Why `models` (all of them; with none, at least one of the gateway's weight sets) are not
// ready according to `response`; empty when they are.
std::string NotReadyReason(const v1::ListModelsResponse& response,
                           const std::vector<std::string>& models);

// deeplab models: the table, or with `json` the response as JSON.
int ModelsCommand(const Connection& connection, bool json, std::ostream& out, std::ostream& err);

struct WaitOptions {
  Connection connection;
  std::vector<std::string> models;
  absl::Duration timeout = absl::Seconds(60);
  absl::Duration poll_interval = absl::Milliseconds(200);
};

// deeplab wait: polls ListModels until NotReadyReason is empty (0) or the timeout passes (1,
// with the last reason).
int WaitCommand(const WaitOptions& options, std::ostream& out, std::ostream& err);

struct SegmentOptions {
  Connection connection;
  std::string model;
  std::string out_dir = "deeplab-out";
  int concurrency = 4;                         // requests in flight
  absl::Duration timeout = absl::Seconds(60);  // deadline of each Segment call
  float overlay_alpha = 0;                     // 0: the server's default
  bool overlay = true;                         // ask for and write <name>_overlay.png
  int priority = 0;
  bool quiet = false;         // no summary, no progress bar
  bool progress_bar = false;  // draw one on `err` (it is a terminal) when there are 2+ images
};

// deeplab segment: expands `inputs` (files and folders), checks the weight set exists, then
// sends the images with options.concurrency requests in flight and writes
// <name>_label.png, <name>_overlay.png (if options.overlay) and <name>.json for each into
// out_dir. Failures go
// to `err` one line each as they happen; the summary to `out`.
int SegmentCommand(const SegmentOptions& options, const std::vector<std::string>& inputs,
                   std::ostream& out, std::ostream& err);

}  // namespace deeplab::client

#endif  // DEEPLAB_SERVICES_CLIENT_COMMANDS_H_
