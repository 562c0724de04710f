// Command-line flags shared by the model tools (deeplab-inspect, deeplab-convert): the
// architecture of the network, turned into a ModelSpec in one place.
#ifndef DEEPLAB_WORKERS_TOOLS_TOOL_FLAGS_H_
#define DEEPLAB_WORKERS_TOOLS_TOOL_FLAGS_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "workers/model/model_spec.h"

ABSL_DECLARE_FLAG(std::string, arch);
ABSL_DECLARE_FLAG(int, classes);
ABSL_DECLARE_FLAG(int, output_stride);
ABSL_DECLARE_FLAG(double, alpha);
ABSL_DECLARE_FLAG(std::string, decoder);
ABSL_DECLARE_FLAG(bool, align_corners);
ABSL_DECLARE_FLAG(int, head_channels);
ABSL_DECLARE_FLAG(std::string, logits_layer);

namespace deeplab {

// The spec the flags describe (not yet resolved against the backbone's defaults).
absl::StatusOr<ModelSpec> ModelSpecFromFlags();

// Parses the command line, accepting --output-stride for --output_stride: Abseil flag names
// are identifiers, but our documented flags use dashes. Returns the positional arguments.
std::vector<char*> ParseToolCommandLine(int argc, char** argv);

// "HxW" -> {H, W}, each in [1, 100000].
absl::StatusOr<std::pair<int64_t, int64_t>> ParseImageSize(const std::string& text);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_TOOLS_TOOL_FLAGS_H_
