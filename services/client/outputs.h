// Files in and out of `deeplab segment`: reading an input whole, writing an output so that a
// reader never sees half of it, and the per-image JSON report.
//
// Stateless functions; safe to call from any thread.
#ifndef DEEPLAB_SERVICES_CLIENT_OUTPUTS_H_
#define DEEPLAB_SERVICES_CLIENT_OUTPUTS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "deeplab/v1/segmentation.pb.h"

namespace deeplab::client {

// The whole file. The status code follows errno (NOT_FOUND, PERMISSION_DENIED...).
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// Writes a temporary file beside `path` and renames it over `path` (atomic on POSIX), so an
// interrupted run leaves either the old file or the new one. Creates missing folders.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// `text` as a JSON string literal, quotes included.
std::string JsonQuote(absl::string_view text);

// What `deeplab segment` writes as <name>.json for one image.
struct ImageReport {
  std::string image_path;
  std::string model;
  std::string label_file;  // names of the files written beside the report
  std::string overlay_file;  // empty: no overlay (JSON null)
  absl::Duration latency;  // the Segment call as the client saw it
};

// A JSON object: image, width, height, model, request_id, the output file names,
// class_areas (id, name, pixels, fraction for every class with pixels), latency_seconds and
// the server's timing breakdown.
std::string ImageReportJson(const ImageReport& report, const v1::SegmentResponse& response);

}  // namespace deeplab::client

#endif  // DEEPLAB_SERVICES_CLIENT_OUTPUTS_H_
