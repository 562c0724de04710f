// ResNet-50/101 backbones (torchvision layout and names: conv1, bn1, layer1..4 of Bottleneck
// blocks with the stride on the 3x3 conv), so torchvision ImageNet weights map by name.
// The last stages trade stride for dilation to reach the output stride: layer4 at 16,
// layer3 and layer4 at 8. Low-level feature: layer1 (stride 4, 256 channels).
#include <string>

#include "absl/strings/str_cat.h"
#include "workers/model/backbone.h"
#include "workers/model/layers.h"

namespace deeplab {
namespace {

constexpr double kTorchvisionBnEpsilon = 1e-5;

class BottleneckImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;

  BottleneckImpl(int64_t in, int64_t planes, int64_t stride, int64_t dilation,
                 bool downsample) {
    const int64_t out = planes * kExpansion;
    conv1_ = register_module("conv1", MakeConv(in, planes, 1));
    bn1_ = register_module("bn1", MakeBatchNorm(planes, kTorchvisionBnEpsilon));
    conv2_ = register_module("conv2", MakeConv(planes, planes, 3, stride, dilation, dilation));
    bn2_ = register_module("bn2", MakeBatchNorm(planes, kTorchvisionBnEpsilon));
    conv3_ = register_module("conv3", MakeConv(planes, out, 1));
    bn3_ = register_module("bn3", MakeBatchNorm(out, kTorchvisionBnEpsilon));
    if (downsample) {
      down_conv_ = MakeConv(in, out, 1, stride);
      down_bn_ = MakeBatchNorm(out, kTorchvisionBnEpsilon);
      downsample_ = register_module("downsample", torch::nn::Sequential(down_conv_, down_bn_));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::relu(bn1_->forward(RunConv(conv1_, x)));
    y = torch::relu(bn2_->forward(RunConv(conv2_, y)));
    y = bn3_->forward(RunConv(conv3_, y));
    torch::Tensor identity = down_conv_.is_empty() ? x : down_bn_->forward(RunConv(down_conv_, x));
    return torch::relu(y + identity);
  }

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr}, down_conv_{nullptr};
  BatchNorm bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr}, down_bn_{nullptr};
  torch::nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(Bottleneck);

class ResNetImpl : public BackboneImpl {
 public:
  ResNetImpl(int depth, int output_stride) {
    const int64_t layer3_blocks = depth == 101 ? 23 : 6;
    conv1_ = register_module("conv1", MakeConv(3, 64, 7, 2, 3));
    bn1_ = register_module("bn1", MakeBatchNorm(64, kTorchvisionBnEpsilon));
    layer1_ = MakeLayer("layer1", 64, 3, 1, false);
    layer2_ = MakeLayer("layer2", 128, 4, 2, false);
    layer3_ = MakeLayer("layer3", 256, layer3_blocks, 2, output_stride == 8);
    layer4_ = MakeLayer("layer4", 512, 3, 2, true);
  }

  BackboneFeatures Forward(const torch::Tensor& input) override {
    torch::Tensor x = torch::relu(bn1_->forward(RunConv(conv1_, input)));
    x = torch::max_pool2d(x, 3, 2, 1);
    BackboneFeatures features;
    features.low_level = x = layer1_->forward(x);
    x = layer2_->forward(x);
    x = layer3_->forward(x);
    features.high_level = layer4_->forward(x);
    return features;
  }

  int64_t low_level_channels() const override { return 256; }
  int64_t high_level_channels() const override { return 2048; }

 private:
  // torchvision's _make_layer with replace_stride_with_dilation: a dilated stage keeps the
  // previous dilation in its first block and multiplies it by the stride for the others.
  torch::nn::Sequential MakeLayer(const std::string& name, int64_t planes, int64_t blocks,
                                  int64_t stride, bool dilate) {
    const int64_t previous_dilation = dilation_;
    if (dilate) {
      dilation_ *= stride;
      stride = 1;
    }
    torch::nn::Sequential layer;
    const int64_t out = planes * BottleneckImpl::kExpansion;
    layer->push_back(Bottleneck(in_, planes, stride, previous_dilation,
                                stride != 1 || in_ != out));
    in_ = out;
    for (int64_t i = 1; i < blocks; ++i) layer->push_back(Bottleneck(in_, planes, 1, dilation_, false));
    return register_module(name, layer);
  }

  int64_t in_ = 64;
  int64_t dilation_ = 1;
  torch::nn::Conv2d conv1_{nullptr};
  BatchNorm bn1_{nullptr};
  torch::nn::Sequential layer1_{nullptr}, layer2_{nullptr}, layer3_{nullptr}, layer4_{nullptr};
};

}  // namespace

BackboneInfo ResNetBackboneInfo(int depth) {
  BackboneInfo info;
  info.name = absl::StrCat("resnet", depth);
  info.default_output_stride = 16;
  info.default_decoder = true;
  info.aspp_atrous_branches = true;
  info.build = [depth](const ModelSpec& spec) -> std::shared_ptr<BackboneImpl> {
    return std::make_shared<ResNetImpl>(depth, spec.output_stride);
  };
  return info;
}

}  // namespace deeplab
