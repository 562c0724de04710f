// deeplab: the command-line client of a deeplab-serve gateway.
//   deeplab models --server localhost:8000
//   deeplab wait --server localhost:8000 --model pascal_voc --timeout 120s
//   deeplab segment --server localhost:8000 --model pascal_voc --out masks photos/
// Flags become options here; services/client/commands.h does the work.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/server_main.h"
#include "services/client/commands.h"

ABSL_FLAG(std::string, server, "localhost:8000",
          "Gateway host:port, or a gRPC target such as dns:///name:port");
ABSL_FLAG(bool, json, false, "models: print the answer as JSON");
ABSL_FLAG(std::vector<std::string>, model, {}, "Weight set; wait takes several");
ABSL_FLAG(std::string, timeout, "60s",
          "segment: deadline of each request; wait: how long to wait (60s, 500ms, 2m, or seconds)");
ABSL_FLAG(std::string, out, "deeplab-out", "segment: output folder");
ABSL_FLAG(int, concurrency, 4, "segment: requests in flight");
ABSL_FLAG(double, overlay_alpha, 0,
          "segment: palette opacity in the overlay, 0-1 (0: the server's)");
ABSL_FLAG(bool, overlay, true,
          "segment: ask for and write <name>_overlay.png (--nooverlay: the label map and "
          "report only, which spares the server a second, whole decode of each photo)");
ABSL_FLAG(int, priority, 0, "segment: 0 is the most urgent; larger numbers wait behind smaller");
ABSL_FLAG(bool, quiet, false, "segment: no progress bar and no summary");
ABSL_FLAG(bool, tls, false, "Speak TLS to the gateway, trusting the system's CAs (or --ca)");
ABSL_FLAG(std::string, ca, "", "PEM CA the gateway's certificate must chain to (implies --tls)");
ABSL_FLAG(std::string, cert, "", "PEM client certificate, for a gateway that requires one");
ABSL_FLAG(std::string, key, "", "PEM private key of --cert");
ABSL_FLAG(std::string, server_name, "",
          "Name the gateway's certificate carries, if not the --server host");
ABSL_FLAG(std::string, token_file, "",
          "File holding a bearer token for the gateway (default: $DEEPLAB_TOKEN, if set)");

namespace {

using deeplab::client::kExitOk;
using deeplab::client::kExitUsage;

constexpr char kUsage[] = R"(deeplab: the command-line client of a deeplab-serve gateway.

Usage:
  deeplab models  [--server ADDR] [--json]
  deeplab wait    [--server ADDR] [--model NAME]... [--timeout 60s]
  deeplab segment [--server ADDR] --model NAME [--out DIR] [--concurrency N]
                  [--timeout SECONDS] [--overlay-alpha A] [--nooverlay] [--priority P]
                  [--quiet]
                  FILES_OR_FOLDERS...

Commands:
  models   List the gateway's weight sets: ready (on how many workers), classes, input
           size, backbone, max batch, description, and why the others are not ready.
  wait     Poll until the gateway answers and every --model is ready (with no --model:
           any weight set), for scripts that start a cluster.
  segment  Segment images. Folders are searched recursively for jpg, jpeg, png, bmp,
           tif, tiff and webp files; files named are sent whatever their extension.
           For each image it writes into DIR: <name>_label.png (8-bit grey, pixel =
           class id), <name>_overlay.png (unless --nooverlay) and <name>.json (size,
           class areas, timings).
           <name> is the file name without its extension, under its sub-folder for
           files found in a folder; -2, -3... are added when names collide.

Flags:
  --server ADDR      gateway host:port or gRPC target (default localhost:8000)
  --json             models: print the answer as JSON
  --model NAME       the weight set (see deeplab models)
  --timeout T        segment: deadline of each request; wait: how long to wait;
                     60s, 500ms, 2m, or a number of seconds (default 60s)
  --out DIR          segment: output folder (default deeplab-out)
  --concurrency N    segment: requests in flight (default 4)
  --overlay-alpha A  segment: palette opacity in the overlay, 0 to 1 (default: the
                     server's, 0.5)
  --nooverlay        segment: no overlay PNG: faster for large photos, which the server
                     decodes a second time, whole, to draw an overlay on
  --priority P       segment: 0 (default) is the most urgent; larger numbers wait
  --quiet            segment: no progress bar, no summary (failures are still printed)
  --tls              TLS to the gateway with the system's CAs (implied by --ca, --cert)
  --ca FILE          PEM CA bundle the gateway's certificate must chain to
  --cert FILE, --key FILE
                     client certificate and key, for a gateway requiring mutual TLS
  --server-name N    name the gateway's certificate carries, if not the --server host
  --token-file FILE  bearer token for a gateway with tokens (default: $DEEPLAB_TOKEN)

Exit codes:
  0  success: every image segmented (segment), ready (wait)
  1  segment: some images failed (missing or unreadable file, not an image, server
     error); the others were written. wait: not ready before --timeout
  2  bad command line: unknown command or flag, bad flag value, no inputs
  3  gateway unreachable (models, segment), it knows no weight set yet because no
     worker has answered it (segment), or it answered UNAVAILABLE for every image
     (segment)
  4  unknown weight set (segment); nothing was sent
  5  refused: no valid token (UNAUTHENTICATED), or the token may not use the weight
     set (PERMISSION_DENIED)
)";

bool WantsHelp(const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    if (arg == "--") return false;
    if (arg == "--help" || arg == "-help" || arg == "-h" || arg == "--helpshort" || arg == "help") {
      return true;
    }
  }
  return false;
}

// Abseil exits 1 on an unknown flag or a bad value, but a bad command line is our exit 2:
// so every flag is checked here first, with the flag's own parser. Also merges repeated
// --model flags into one list (Abseil keeps only the last). Returns the arguments to parse.
absl::StatusOr<std::vector<std::string>> CheckFlags(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  std::vector<std::string> models;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      out.insert(out.end(), args.begin() + i, args.end());
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      out.push_back(arg);
      continue;
    }
    const std::string body = arg.substr(arg[1] == '-' ? 2 : 1);
    const size_t equals = body.find('=');
    const std::string name = absl::StrReplaceAll(body.substr(0, equals), {{"-", "_"}});
    const std::string shown = "--" + absl::StrReplaceAll(name, {{"_", "-"}});
    std::optional<std::string> value;
    if (equals != std::string::npos) value = body.substr(equals + 1);
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      // --noquiet: Abseil's negation of a bool flag.
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>() && !value.has_value()) {
        out.push_back(arg);
        continue;
      }
    }
    if (flag == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag ", shown));
    if (flag->IsOfType<bool>() && !value.has_value()) {
      out.push_back(arg);
      continue;
    }
    if (!value.has_value()) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat(shown, " needs a value"));
      }
      value = args[++i];
    }
    std::string error;
    if (!flag->ParseFrom(*value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat(shown, ": ", error));
    }
    if (name == "model") {
      models.push_back(*value);
    } else {
      out.push_back(absl::StrCat("--", name, "=", *value));
    }
  }
  if (!models.empty()) out.push_back(absl::StrCat("--model=", absl::StrJoin(models, ",")));
  return out;
}

// "60s", "500ms", "2m" (Abseil durations) or a bare number of seconds; positive.
absl::StatusOr<absl::Duration> ParseTimeout(const std::string& text) {
  absl::Duration d;
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &d)) {
    d = absl::ZeroDuration();
  }
  if (d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--timeout must be a positive duration such as 60s, 500ms or 30, got '", text, "'"));
  }
  return d;
}

int UsageError(const std::string& message) {
  std::cerr << "deeplab: " << message << "\nRun 'deeplab --help' for usage.\n";
  return kExitUsage;
}

int Run(const std::string& command, const std::vector<std::string>& operands) {
  deeplab::client::Connection connection;
  connection.server = absl::GetFlag(FLAGS_server);
  if (connection.server.empty()) return UsageError("--server must not be empty");
  connection.tls.tls = absl::GetFlag(FLAGS_tls);
  connection.tls.ca_file = absl::GetFlag(FLAGS_ca);
  connection.tls.cert_file = absl::GetFlag(FLAGS_cert);
  connection.tls.key_file = absl::GetFlag(FLAGS_key);
  connection.tls.server_name = absl::GetFlag(FLAGS_server_name);
  if (absl::Status s = deeplab::ValidateClientTls(connection.tls); !s.ok()) {
    return UsageError(std::string(s.message()));
  }
  if (const std::string path = absl::GetFlag(FLAGS_token_file); !path.empty()) {
    absl::StatusOr<std::string> token = deeplab::ReadTokenFile(path);
    if (!token.ok()) return UsageError(std::string(token.status().message()));
    connection.token = *token;
  } else if (const char* env = std::getenv("DEEPLAB_TOKEN"); env != nullptr) {
    connection.token = env;
  }
  const absl::StatusOr<absl::Duration> timeout = ParseTimeout(absl::GetFlag(FLAGS_timeout));
  if (!timeout.ok()) return UsageError(std::string(timeout.status().message()));
  const std::vector<std::string> models = absl::GetFlag(FLAGS_model);
  const bool known = command == "models" || command == "wait" || command == "segment";
  if (!known) {
    return UsageError(
        absl::StrCat("unknown command '", command, "' (commands: models, wait, segment)"));
  }
  if (command != "segment" && !operands.empty()) {
    return UsageError(absl::StrCat(command, " takes no arguments, got '", operands[0], "'"));
  }
  if (command == "models") {
    return deeplab::client::ModelsCommand(connection, absl::GetFlag(FLAGS_json), std::cout,
                                          std::cerr);
  }
  if (command == "wait") {
    deeplab::client::WaitOptions options;
    options.connection = connection;
    options.models = models;
    options.timeout = *timeout;
    return deeplab::client::WaitCommand(options, std::cout, std::cerr);
  }
  deeplab::client::SegmentOptions options;
  options.connection = connection;
  options.timeout = *timeout;
  options.out_dir = absl::GetFlag(FLAGS_out);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.overlay_alpha = static_cast<float>(absl::GetFlag(FLAGS_overlay_alpha));
  options.overlay = absl::GetFlag(FLAGS_overlay);
  options.priority = absl::GetFlag(FLAGS_priority);
  options.quiet = absl::GetFlag(FLAGS_quiet);
  options.progress_bar = isatty(STDERR_FILENO) == 1;
  if (models.size() != 1) return UsageError("segment needs one --model NAME");
  options.model = models[0];
  if (operands.empty()) return UsageError("segment needs files or folders to segment");
  if (options.out_dir.empty()) return UsageError("--out must not be empty");
  // A thread per request in flight: far more than the gateway's batch slots only queues.
  if (options.concurrency < 1 || options.concurrency > 1024) {
    return UsageError("--concurrency must be between 1 and 1024");
  }
  if (!(options.overlay_alpha >= 0 && options.overlay_alpha <= 1)) {
    return UsageError("--overlay-alpha must be between 0 and 1");
  }
  if (options.priority < 0) return UsageError("--priority must be 0 or more");
  return deeplab::client::SegmentCommand(options, operands, std::cout, std::cerr);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << kUsage;
    return kExitUsage;
  }
  if (WantsHelp(args)) {
    std::cout << kUsage;
    return kExitOk;
  }
  absl::StatusOr<std::vector<std::string>> checked = CheckFlags(args);
  if (!checked.ok()) return UsageError(std::string(checked.status().message()));
  std::vector<char*> checked_argv = {argv[0]};
  for (std::string& arg : *checked) checked_argv.push_back(arg.data());
  const std::vector<char*> positional = deeplab::ParseCommandLineWithDashes(
      static_cast<int>(checked_argv.size()), checked_argv.data(), "services/client/");
  if (positional.size() < 2) return UsageError("no command (commands: models, wait, segment)");
  return Run(positional[1], std::vector<std::string>(positional.begin() + 2, positional.end()));
}
