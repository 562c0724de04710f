#include "workers/model/model_spec.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "workers/model/backbone.h"

namespace deeplab {

absl::StatusOr<ModelSpec> ResolveModelSpec(const ModelSpec& spec) {
  const BackboneInfo* info = BackboneRegistry::Get().Find(spec.backbone);
  if (info == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown backbone '", spec.backbone, "'; known backbones: ",
                     absl::StrJoin(BackboneRegistry::Get().Names(), ", ")));
  }
  ModelSpec out = spec;
  if (out.num_classes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes must be at least 1, got ", out.num_classes));
  }
  if (out.output_stride == 0) out.output_stride = info->default_output_stride;
  if (out.output_stride != 8 && out.output_stride != 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("output_stride must be 8 or 16, got ", out.output_stride));
  }
  if (!(out.alpha > 0.0 && out.alpha <= 4.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("alpha (width multiplier) must be in (0, 4], got ", out.alpha));
  }
  if (out.decoder < 0) out.decoder = info->default_decoder ? 1 : 0;
  if (out.head_channels == 0) out.head_channels = 256;
  if (out.head_channels < 8 || out.head_channels > 2048) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_channels must be in [8, 2048] (0: 256), got ", out.head_channels));
  }
  if (out.logits_layer_name.empty()) {
    out.logits_layer_name = (out.num_classes == 21 || out.num_classes == 19)
                                ? "logits_semantic"
                                : "custom_logits_semantic";
  }
  return out;
}

ModelSpec ModelSpecFromProto(const v1::Architecture& arch) {
  ModelSpec spec;
  spec.backbone = arch.backbone();
  spec.num_classes = arch.num_classes();
  spec.output_stride = arch.output_stride();
  spec.alpha = arch.alpha() == 0.0f ? 1.0 : static_cast<double>(arch.alpha());
  switch (arch.decoder()) {
    case v1::Architecture::DECODER_ON:
      spec.decoder = 1;
      break;
    case v1::Architecture::DECODER_OFF:
      spec.decoder = 0;
      break;
    default:
      spec.decoder = -1;
  }
  switch (arch.activation()) {
    case v1::ACTIVATION_SOFTMAX:
      spec.activation = FinalActivation::kSoftmax;
      break;
    case v1::ACTIVATION_SIGMOID:
      spec.activation = FinalActivation::kSigmoid;
      break;
    default:
      spec.activation = FinalActivation::kNone;
  }
  spec.align_corners = arch.align_corners();
  spec.logits_layer_name = arch.logits_layer_name();
  spec.head_channels = arch.head_channels();
  return spec;
}

v1::Architecture ModelSpecToProto(const ModelSpec& spec) {
  v1::Architecture arch;
  arch.set_backbone(spec.backbone);
  arch.set_num_classes(spec.num_classes);
  arch.set_output_stride(spec.output_stride);
  arch.set_alpha(static_cast<float>(spec.alpha));
  arch.set_decoder(spec.decoder < 0    ? v1::Architecture::DECODER_DEFAULT
                   : spec.decoder == 1 ? v1::Architecture::DECODER_ON
                                       : v1::Architecture::DECODER_OFF);
  switch (spec.activation) {
    case FinalActivation::kSoftmax:
      arch.set_activation(v1::ACTIVATION_SOFTMAX);
      break;
    case FinalActivation::kSigmoid:
      arch.set_activation(v1::ACTIVATION_SIGMOID);
      break;
    case FinalActivation::kNone:
      arch.set_activation(v1::ACTIVATION_NONE);
  }
  arch.set_align_corners(spec.align_corners);
  arch.set_logits_layer_name(spec.logits_layer_name);
  arch.set_head_channels(spec.head_channels);
  return arch;
}

std::string DescribeModelSpec(const ModelSpec& spec) {
  std::string s = absl::StrCat(spec.backbone, "/os", spec.output_stride, "/", spec.num_classes,
                               " classes");
  if (spec.backbone == "mobilenetv2") absl::StrAppend(&s, "/alpha ", spec.alpha);
  if (spec.decoder == 0) absl::StrAppend(&s, "/no decoder");
  // MobileNetV2 is published without one, so say when it has one.
  if (spec.decoder == 1 && spec.backbone == "mobilenetv2") absl::StrAppend(&s, "/decoder");
  if (spec.head_channels != 0 && spec.head_channels != 256) {
    absl::StrAppend(&s, "/head ", spec.head_channels);
  }
  return s;
}

}  // namespace deeplab
