// ModelSpec: the plain description of one network of the DeepLabv3+ family.
//
// A value type, freely copyable and thread-compatible. Converted from and to the
// deeplab.v1.Architecture proto (model repository configs, checkpoint headers) in one place.
#ifndef DEEPLAB_WORKERS_MODEL_MODEL_SPEC_H_
#define DEEPLAB_WORKERS_MODEL_MODEL_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "deeplab/v1/model_config.pb.h"

namespace deeplab {

enum class FinalActivation { kNone, kSoftmax, kSigmoid };

struct ModelSpec {
  std::string backbone = "xception65";
  int num_classes = 21;
  // 8 or 16; 0 means the backbone's default (ResolveDefaults fills it in).
  int output_stride = 0;
  // MobileNetV2 width multiplier; ignored by other backbones.
  double alpha = 1.0;
  // -1: the backbone's default; 0: no decoder; 1: DeepLabv3+ decoder.
  int decoder = -1;
  FinalActivation activation = FinalActivation::kNone;
  bool align_corners = false;
  // Width of ASPP and the decoder; 0 means 256 (published).
  int head_channels = 0;
  // Keras name of the logits layer; empty means the keras-deeplab-v3-plus rule.
  std::string logits_layer_name;
};

// Fills in backbone defaults (output stride, decoder, logits name) and checks every field,
// returning INVALID_ARGUMENT with a message that says what to change. The result has no
// "default" markers left.
absl::StatusOr<ModelSpec> ResolveModelSpec(const ModelSpec& spec);

// Proto conversion. FromProto keeps zero values as "default"; call ResolveModelSpec after.
ModelSpec ModelSpecFromProto(const v1::Architecture& arch);
v1::Architecture ModelSpecToProto(const ModelSpec& spec);

// One-line human description, e.g. "xception65/os16/21 classes".
std::string DescribeModelSpec(const ModelSpec& spec);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_MODEL_MODEL_SPEC_H_
