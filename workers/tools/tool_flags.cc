#include "workers/tools/tool_flags.h"

#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/server_main.h"

ABSL_FLAG(std::string, arch, "xception65",
          "Backbone: xception65, mobilenetv2, resnet50 or resnet101");
ABSL_FLAG(int, classes, 21, "Number of classes");
ABSL_FLAG(int, output_stride, 0, "Output stride 8 or 16 (0: the backbone's default)");
ABSL_FLAG(double, alpha, 1.0, "MobileNetV2 width multiplier");
ABSL_FLAG(std::string, decoder, "default",
          "Use the DeepLabv3+ decoder: default (the backbone's), true or false");
ABSL_FLAG(int, head_channels, 0, "Width of ASPP and the decoder (0: 256, as published)");
ABSL_FLAG(bool, align_corners, false, "Bilinear resizing with align_corners=True");
ABSL_FLAG(std::string, logits_layer, "",
          "Keras name of the logits layer (default: logits_semantic for 21/19 classes, else "
          "custom_logits_semantic)");

namespace deeplab {

absl::StatusOr<ModelSpec> ModelSpecFromFlags() {
  ModelSpec spec;
  spec.backbone = absl::GetFlag(FLAGS_arch);
  spec.num_classes = absl::GetFlag(FLAGS_classes);
  spec.output_stride = absl::GetFlag(FLAGS_output_stride);
  spec.alpha = absl::GetFlag(FLAGS_alpha);
  const std::string decoder = absl::GetFlag(FLAGS_decoder);
  if (decoder == "default") {
    spec.decoder = -1;
  } else if (decoder == "true" || decoder == "false") {
    spec.decoder = decoder == "true" ? 1 : 0;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--decoder must be default, true or false, got '", decoder, "'"));
  }
  spec.align_corners = absl::GetFlag(FLAGS_align_corners);
  spec.head_channels = absl::GetFlag(FLAGS_head_channels);
  spec.logits_layer_name = absl::GetFlag(FLAGS_logits_layer);
  return spec;
}

std::vector<char*> ParseToolCommandLine(int argc, char** argv) {
  return ParseCommandLineWithDashes(argc, argv, "workers/");
}

absl::StatusOr<std::pair<int64_t, int64_t>> ParseImageSize(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, 'x');
  int64_t h = 0, w = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &h) || !absl::SimpleAtoi(parts[1], &w) ||
      h < 1 || w < 1 || h > 100000 || w > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("image size must be HxW with positive integers, e.g. 513x513; got '", text,
                     "'"));
  }
  return std::make_pair(h, w);
}

}  // namespace deeplab
