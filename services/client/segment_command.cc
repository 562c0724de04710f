// deeplab segment: images in, label maps, overlays and reports out, with a fixed number of
// requests in flight.
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/status_util.h"
#include "services/client/commands.h"
#include "services/client/inputs.h"
#include "services/client/outputs.h"
#include "services/client/progress.h"

namespace deeplab::client {
namespace {

// How one image ended. `sent`: the status is the server's answer, not a local file error.
struct Outcome {
  absl::Status status;
  bool sent = false;
  absl::Duration latency;
};

v1::SegmentRequest MakeRequest(const SegmentOptions& options, std::string image) {
  v1::SegmentRequest request;
  request.set_model(options.model);
  request.set_priority(options.priority);
  request.mutable_image()->set_encoded(std::move(image));
  v1::OutputOptions& outputs = *request.mutable_outputs();
  outputs.set_label_png(true);
  outputs.set_overlay_png(options.overlay);
  outputs.set_class_stats(true);
  outputs.set_overlay_alpha(options.overlay_alpha);
  return request;
}

// Writes the label map, the overlay and then the report: a report on disk means the images
// beside it are complete.
absl::Status WriteOutputs(const SegmentOptions& options, const InputImage& image,
                          const v1::SegmentResponse& response, absl::Duration latency) {
  const std::filesystem::path base = std::filesystem::path(options.out_dir) / image.output_stem;
  const std::string name = base.filename().string();
  ImageReport report{image.path, options.model, name + "_label.png",
                     options.overlay ? name + "_overlay.png" : "", latency};
  const std::string json = ImageReportJson(report, response);
  const std::pair<std::string, absl::string_view> files[] = {
      {report.label_file, response.result().label_png()},
      {report.overlay_file, response.result().overlay_png()},
      {name + ".json", json}};
  for (const auto& [file, contents] : files) {
    if (file.empty()) continue;  // no overlay asked for
    if (absl::Status s = WriteFileAtomically(base.parent_path() / file, contents); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

Outcome SegmentOne(v1::Segmentation::StubInterface& stub, const SegmentOptions& options,
                   const InputImage& image) {
  Outcome outcome;
  absl::StatusOr<std::string> bytes = ReadWholeFile(image.path);
  if (!bytes.ok()) {
    outcome.status = bytes.status();
    return outcome;
  }
  const v1::SegmentRequest request = MakeRequest(options, *std::move(bytes));
  grpc::ClientContext context;
  AddBearerToken(options.connection.token, &context);
  const absl::Time start = absl::Now();
  context.set_deadline(absl::ToChronoTime(start + options.timeout));
  v1::SegmentResponse response;
  const grpc::Status status = stub.Segment(&context, request, &response);
  outcome.latency = absl::Now() - start;
  if (!status.ok()) {
    outcome.status = FromGrpcStatus(status);
    outcome.sent = true;
    return outcome;
  }
  outcome.status = WriteOutputs(options, image, response, outcome.latency);
  return outcome;
}

// Checks the weight set before anything is sent; the exit code when the run must stop.
std::optional<int> CheckModel(v1::Segmentation::StubInterface& stub, const SegmentOptions& options,
                              std::ostream& err) {
  absl::StatusOr<v1::ListModelsResponse> models =
      ListModels(stub, options.connection, options.connection.connect_timeout);
  if (!models.ok()) {
    err << "deeplab segment: " << UnreachableMessage(options.connection, models.status()) << "\n";
    return ExitCodeOfFailedListModels(models.status());
  }
  std::vector<std::string> names;
  for (const v1::ModelInfo& m : models->models()) names.push_back(m.name());
  if (names.empty()) {
    // Up, but no worker has answered it yet: it cannot tell known from unknown. Retryable.
    err << "deeplab segment: the gateway at " << options.connection.server
        << " knows no weight set yet (no worker has answered it); retry, or wait with "
           "`deeplab wait --model "
        << options.model << "`\n";
    return kExitUnreachable;
  }
  if (std::find(names.begin(), names.end(), options.model) == names.end()) {
    err << "deeplab segment: unknown weight set '" << options.model << "'; the gateway at "
        << options.connection.server
        << " has: " << (names.empty() ? "none" : absl::StrJoin(names, ", ")) << "\n";
    return kExitUnknownModel;
  }
  if (const std::string why = NotReadyReason(*models, {options.model}); !why.empty()) {
    // Sent anyway: it may become ready while the images are read; the gateway answers
    // UNAVAILABLE if not, and `deeplab wait` is the way to wait for it.
    err << "deeplab segment: warning: " << why << "\n";
  }
  return std::nullopt;
}

}  // namespace

int SegmentCommand(const SegmentOptions& options, const std::vector<std::string>& inputs,
                   std::ostream& out, std::ostream& err) {
  const ExpandedInputs expanded = ExpandInputs(inputs, options.out_dir);
  if (expanded.images.empty() && expanded.failures.empty()) {
    err << "deeplab segment: no images found in " << absl::StrJoin(inputs, ", ")
        << " (folders are searched for jpg, jpeg, png, bmp, tif, tiff, webp)\n";
    return kExitUsage;
  }
  auto stub = v1::Segmentation::NewStub(NewChannel(options.connection));
  if (std::optional<int> stop = CheckModel(*stub, options, err); stop.has_value()) return *stop;

  const int total = static_cast<int>(expanded.images.size() + expanded.failures.size());
  Progress progress(total, &err, options.progress_bar && !options.quiet && total > 1);
  for (const InputFailure& failure : expanded.failures) {
    progress.Failed(failure.path, failure.status, /*sent=*/false);
  }
  // Blocking calls from a few threads: the simplest way to keep exactly `concurrency`
  // requests in flight; the gateway batches them.
  std::atomic<size_t> next{0};
  std::vector<std::thread> threads;
  const size_t num_threads =
      std::min(static_cast<size_t>(options.concurrency), expanded.images.size());
  for (size_t t = 0; t < num_threads; ++t) {
    threads.emplace_back([&] {
      for (size_t i; (i = next++) < expanded.images.size();) {
        const InputImage& image = expanded.images[i];
        const Outcome outcome = SegmentOne(*stub, options, image);
        if (outcome.status.ok()) {
          progress.Succeeded(outcome.latency);
        } else {
          progress.Failed(image.path, outcome.status, outcome.sent);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const RunStats stats = progress.Finish();

  if (!options.quiet) out << FormatSummary(stats, options.out_dir);
  if (stats.failed == 0) return kExitOk;
  if (stats.succeeded == 0 && stats.sent_failed > 0 && stats.unavailable == stats.sent_failed) {
    err << "deeplab segment: the gateway at " << options.connection.server
        << " answered UNAVAILABLE for every image\n";
    return kExitUnreachable;
  }
  return kExitSomeFailed;
}

}  // namespace deeplab::client
