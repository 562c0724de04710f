// MobileNetV2 backbone of the published DeepLabv3+ (keras-deeplab-v3-plus), width multiplier
// alpha. Child names are the Keras layer names: Conv, Conv_BN, expanded_conv (block 0) and
// expanded_conv_1..16, each with expand, expand_BN, depthwise, depthwise_BN, project, project_BN.
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "workers/model/backbone.h"
#include "workers/model/layers.h"

namespace deeplab {
namespace {

// Keras' _make_divisible: round to a multiple of divisor, never more than 10% below v.
int64_t MakeDivisible(double v, int64_t divisor = 8) {
  int64_t rounded =
      std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (rounded < 0.9 * v) rounded += divisor;
  return rounded;
}

class InvertedResidualImpl : public torch::nn::Module {
 public:
  InvertedResidualImpl(int64_t in, int64_t out, int64_t expansion, int64_t stride, int64_t rate,
                       bool residual)
      : stride_(stride), rate_(rate), residual_(residual) {
    int64_t hidden = in;
    if (expansion != 1) {
      hidden = in * expansion;
      expand_ = register_module("expand", MakeConv(in, hidden, 1));
      expand_bn_ = register_module("expand_BN", MakeBatchNorm(hidden, kKerasBnEpsilon));
    }
    // Stride-1 'same' padding is symmetric (rate); stride-2 'same' is done in forward.
    depthwise_ = register_module(
        "depthwise", MakeConv(hidden, hidden, 3, stride, stride == 1 ? rate : 0, rate, hidden));
    depthwise_bn_ = register_module("depthwise_BN", MakeBatchNorm(hidden, kKerasBnEpsilon));
    project_ = register_module("project", MakeConv(hidden, out, 1));
    project_bn_ = register_module("project_BN", MakeBatchNorm(out, kKerasBnEpsilon));
  }

  torch::Tensor forward(const torch::Tensor& input) {
    torch::Tensor x = input;
    if (!expand_.is_empty()) x = torch::relu6(expand_bn_->forward(RunConv(expand_, x)));
    if (stride_ > 1) x = TfSamePad(x, 3, stride_, rate_);
    x = torch::relu6(depthwise_bn_->forward(RunConv(depthwise_, x)));
    x = project_bn_->forward(RunConv(project_, x));
    return residual_ ? input + x : x;
  }

 private:
  int64_t stride_;
  int64_t rate_;
  bool residual_;
  torch::nn::Conv2d expand_{nullptr}, depthwise_{nullptr}, project_{nullptr};
  BatchNorm expand_bn_{nullptr}, depthwise_bn_{nullptr}, project_bn_{nullptr};
};
TORCH_MODULE(InvertedResidual);

class MobileNetV2Impl : public BackboneImpl {
 public:
  MobileNetV2Impl(double alpha, int output_stride) {
    // Per block: filters, expansion, stride and rate. The published model (output stride 8)
    // keeps stride 1 from block 6 on, with rate 2 from block 7 and rate 4 from block 14; at
    // output stride 16 block 6 keeps its stride 2 and the rates halve.
    struct Block {
      int64_t filters, expansion, stride, rate;
    };
    const bool os8 = output_stride == 8;
    const int64_t r1 = os8 ? 2 : 1;  // blocks 7..13
    const int64_t r2 = os8 ? 4 : 2;  // blocks 14..16
    const Block blocks[17] = {
        {16, 1, 1, 1},   {24, 6, 2, 1},   {24, 6, 1, 1},   {32, 6, 2, 1},   {32, 6, 1, 1},
        {32, 6, 1, 1},   {64, 6, os8 ? 1 : 2, 1},           {64, 6, 1, r1},  {64, 6, 1, r1},
        {64, 6, 1, r1},  {96, 6, 1, r1},  {96, 6, 1, r1},  {96, 6, 1, r1},  {160, 6, 1, r1},
        {160, 6, 1, r2}, {160, 6, 1, r2}, {320, 6, 1, r2},
    };

    const int64_t first = MakeDivisible(32 * alpha);
    conv_ = register_module("Conv", MakeConv(3, first, 3, 2));
    conv_bn_ = register_module("Conv_BN", MakeBatchNorm(first, kKerasBnEpsilon));
    int64_t channels = first;
    for (int i = 0; i < 17; ++i) {
      const Block& b = blocks[i];
      const int64_t out = MakeDivisible(static_cast<int64_t>(b.filters * alpha));
      // Keras adds the input back when shapes allow: same filters as the previous block
      // and stride 1 (blocks 2, 4, 5, 7-9, 11, 12, 14, 15).
      const bool residual = i > 0 && b.stride == 1 && blocks[i - 1].filters == b.filters;
      const std::string name = i == 0 ? "expanded_conv" : absl::StrCat("expanded_conv_", i);
      blocks_.push_back(register_module(
          name, InvertedResidual(channels, out, b.expansion, b.stride, b.rate, residual)));
      channels = out;
      if (i == 2) low_level_channels_ = out;
    }
    high_level_channels_ = channels;
  }

  BackboneFeatures Forward(const torch::Tensor& input) override {
    torch::Tensor x = RunConv(conv_, TfSamePad(input, 3, 2));
    x = torch::relu6(conv_bn_->forward(x));
    BackboneFeatures features;
    for (size_t i = 0; i < blocks_.size(); ++i) {
      x = blocks_[i]->forward(x);
      if (i == 2) features.low_level = x;  // stride 4
    }
    features.high_level = x;
    return features;
  }

  int64_t low_level_channels() const override { return low_level_channels_; }
  int64_t high_level_channels() const override { return high_level_channels_; }

 private:
  torch::nn::Conv2d conv_{nullptr};
  BatchNorm conv_bn_{nullptr};
  std::vector<InvertedResidual> blocks_;
  int64_t low_level_channels_ = 0;
  int64_t high_level_channels_ = 0;
};

}  // namespace

BackboneInfo MobileNetV2BackboneInfo() {
  BackboneInfo info;
  info.name = "mobilenetv2";
  info.default_output_stride = 8;
  info.default_decoder = false;
  info.aspp_atrous_branches = false;
  info.build = [](const ModelSpec& spec) -> std::shared_ptr<BackboneImpl> {
    return std::make_shared<MobileNetV2Impl>(spec.alpha, spec.output_stride);
  };
  return info;
}

}  // namespace deeplab
