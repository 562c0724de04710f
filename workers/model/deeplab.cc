#include "workers/model/deeplab.h"

#include "absl/strings/str_cat.h"

namespace deeplab {
namespace {
constexpr int64_t kLowLevelProjection = 48;
}  // namespace

AsppImpl::AsppImpl(int64_t in, bool atrous_branches, int output_stride, int64_t channels)
    : channels_(channels) {
  pooling_conv_ = register_module("image_pooling", MakeConv(in, channels, 1));
  pooling_bn_ = register_module("image_pooling_BN", MakeBatchNorm(channels, kHeadBnEpsilon));
  aspp0_ = register_module("aspp0", MakeConv(in, channels, 1));
  aspp0_bn_ = register_module("aspp0_BN", MakeBatchNorm(channels, kHeadBnEpsilon));
  int64_t branches = 2;
  if (atrous_branches) {
    const int64_t base_rate = output_stride == 8 ? 12 : 6;
    for (int64_t i = 1; i <= 3; ++i) {
      atrous_.push_back(register_module(
          absl::StrCat("aspp", i),
          SepConvBN(in, channels, 1, base_rate * i, true, kHeadBnEpsilon)));
    }
    branches += 3;
  }
  projection_ =
      register_module("concat_projection", MakeConv(branches * channels, channels, 1));
  projection_bn_ =
      register_module("concat_projection_BN", MakeBatchNorm(channels, kHeadBnEpsilon));
}

torch::Tensor AsppImpl::forward(const torch::Tensor& x) {
  std::vector<torch::Tensor> parts;
  torch::Tensor pooled = x.mean({2, 3}, /*keepdim=*/true);
  pooled = torch::relu(pooling_bn_->forward(RunConv(pooling_conv_, pooled)));
  // Bilinear from 1x1 is a broadcast whatever the corner convention.
  parts.push_back(pooled.expand({x.size(0), channels_, x.size(2), x.size(3)}));
  parts.push_back(torch::relu(aspp0_bn_->forward(RunConv(aspp0_, x))));
  for (auto& branch : atrous_) parts.push_back(branch->forward(x));
  // Dropout(0.1) follows in training; it is the identity at inference.
  return torch::relu(projection_bn_->forward(RunConv(projection_, torch::cat(parts, 1))));
}

DecoderImpl::DecoderImpl(int64_t low_level_channels, bool align_corners, int64_t channels)
    : align_corners_(align_corners) {
  projection_ =
      register_module("feature_projection0", MakeConv(low_level_channels, kLowLevelProjection, 1));
  projection_bn_ =
      register_module("feature_projection0_BN", MakeBatchNorm(kLowLevelProjection, kHeadBnEpsilon));
  conv0_ = register_module("decoder_conv0", SepConvBN(channels + kLowLevelProjection,
                                                      channels, 1, 1, true, kHeadBnEpsilon));
  conv1_ = register_module(
      "decoder_conv1", SepConvBN(channels, channels, 1, 1, true, kHeadBnEpsilon));
}

torch::Tensor DecoderImpl::forward(const torch::Tensor& x, const torch::Tensor& low_level) {
  torch::Tensor up = ResizeBilinear(x, low_level.size(2), low_level.size(3), align_corners_);
  torch::Tensor projected = torch::relu(projection_bn_->forward(RunConv(projection_, low_level)));
  torch::Tensor y = torch::cat({up, projected}, 1);
  return conv1_->forward(conv0_->forward(y));
}

DeepLabV3PlusImpl::DeepLabV3PlusImpl(const ModelSpec& resolved_spec) : spec_(resolved_spec) {
  const BackboneInfo* info = BackboneRegistry::Get().Find(spec_.backbone);
  TORCH_CHECK(info != nullptr, "unknown backbone ", spec_.backbone);
  backbone_ = register_module("backbone", info->build(spec_));
  aspp_ = register_module(
      "aspp", Aspp(backbone_->high_level_channels(), info->aspp_atrous_branches,
                   spec_.output_stride, spec_.head_channels));
  if (spec_.decoder == 1) {
    decoder_ =
        register_module("decoder", Decoder(backbone_->low_level_channels(), spec_.align_corners,
                                          spec_.head_channels));
  }
  auto head = register_module("head", std::make_shared<torch::nn::Module>());
  logits_ = head->register_module(
      spec_.logits_layer_name,
      torch::nn::Conv2d(torch::nn::Conv2dOptions(spec_.head_channels, spec_.num_classes, 1)));
  InitializeWeights();
}

void DeepLabV3PlusImpl::InitializeWeights() {
  // He initialisation (fan-out, as torchvision does for its backbones), so that a network
  // trained from scratch or run with random weights keeps activations at a useful scale;
  // LibTorch's default shrinks them layer after layer through 60+ layers.
  torch::NoGradGuard no_grad;
  for (const auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* bn = m->as<BatchNorm>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    }
  }
}

torch::Tensor DeepLabV3PlusImpl::forward(const torch::Tensor& x) {
  BackboneFeatures features = backbone_->Forward(x);
  torch::Tensor y = aspp_->forward(features.high_level);
  if (!decoder_.is_empty()) y = decoder_->forward(y, features.low_level);
  y = RunConv(logits_, y);
  y = ResizeBilinear(y, x.size(2), x.size(3), spec_.align_corners);
  switch (spec_.activation) {
    case FinalActivation::kSoftmax:
      return torch::softmax(y, 1);
    case FinalActivation::kSigmoid:
      return torch::sigmoid(y);
    case FinalActivation::kNone:
      break;
  }
  return y;
}

absl::StatusOr<DeepLabV3Plus> BuildDeepLabV3Plus(const ModelSpec& spec) {
  absl::StatusOr<ModelSpec> resolved = ResolveModelSpec(spec);
  if (!resolved.ok()) return resolved.status();
  DeepLabV3Plus model(*resolved);
  model->eval();
  return model;
}

ParameterCounts CountParameters(torch::nn::Module& module) {
  ParameterCounts counts;
  for (const auto& p : module.parameters()) counts.trainable += p.numel();
  counts.total = counts.trainable;
  for (const auto& b : module.named_buffers()) {
    // num_batches_tracked is bookkeeping, not a weight Keras would count.
    if (b.key().find("running_") != std::string::npos) counts.total += b.value().numel();
  }
  int64_t bn_channels = 0;
  for (const auto& m : module.modules(/*include_self=*/false)) {
    if (auto* bn = m->as<BatchNorm>()) bn_channels += bn->channels();
  }
  counts.bn_folded = counts.trainable - bn_channels;
  return counts;
}

int64_t CountMultiplyAdds(DeepLabV3Plus& model, int64_t height, int64_t width) {
  torch::NoGradGuard no_grad;
  ScopedMacCounter counter;
  model->forward(torch::zeros({1, 3, height, width}));
  return counter.multiply_adds();
}

}  // namespace deeplab
