// The modified aligned Xception-65 of the published DeepLabv3+ weights.
// Child names are the Keras layer names (DESIGN.md section 5), so that
// "<module path with '.' replaced by '_'>" is the Keras layer a tensor comes from.
#include <array>
#include <string>

#include "absl/strings/str_cat.h"
#include "workers/model/backbone.h"
#include "workers/model/layers.h"

namespace deeplab {
namespace {

enum class Shortcut { kConv, kSum, kNone };
using Depths = std::array<int64_t, 3>;

// Three SepConvBN (stride on the third only) plus a shortcut. Children:
// separable_conv1..3 and, for a conv shortcut, shortcut and shortcut_BN.
class XceptionBlockImpl : public torch::nn::Module {
 public:
  XceptionBlockImpl(int64_t in, std::array<int64_t, 3> depths, Shortcut shortcut,
                    int64_t stride, int64_t rate, bool depth_activation)
      : shortcut_type_(shortcut) {
    int64_t channels = in;
    for (int i = 0; i < 3; ++i) {
      convs_[i] = register_module(absl::StrCat("separable_conv", i + 1),
                                  SepConvBN(channels, depths[i], i == 2 ? stride : 1, rate,
                                            depth_activation, kKerasBnEpsilon));
      channels = depths[i];
    }
    if (shortcut == Shortcut::kConv) {
      // A 1x1 kernel needs no padding for any stride ('valid' == 'same' here).
      shortcut_conv_ = register_module("shortcut", MakeConv(in, depths[2], 1, stride));
      shortcut_bn_ = register_module("shortcut_BN", MakeBatchNorm(depths[2], kKerasBnEpsilon));
    }
  }

  // Returns the block output; *skip (if given) receives separable_conv2's output, which is
  // where the decoder's low-level feature is taken.
  torch::Tensor forward(const torch::Tensor& x, torch::Tensor* skip = nullptr) {
    torch::Tensor residual = convs_[0]->forward(x);
    residual = convs_[1]->forward(residual);
    if (skip != nullptr) *skip = residual;
    residual = convs_[2]->forward(residual);
    switch (shortcut_type_) {
      case Shortcut::kConv:
        return residual + shortcut_bn_->forward(RunConv(shortcut_conv_, x));
      case Shortcut::kSum:
        return residual + x;
      case Shortcut::kNone:
        break;
    }
    return residual;
  }

 private:
  Shortcut shortcut_type_;
  std::array<SepConvBN, 3> convs_{nullptr, nullptr, nullptr};
  torch::nn::Conv2d shortcut_conv_{nullptr};
  BatchNorm shortcut_bn_{nullptr};
};
TORCH_MODULE(XceptionBlock);

class Xception65Impl : public BackboneImpl {
 public:
  explicit Xception65Impl(int output_stride) {
    const bool os8 = output_stride == 8;
    const int64_t entry_block3_stride = os8 ? 1 : 2;
    const int64_t middle_rate = os8 ? 2 : 1;
    const int64_t exit_rate1 = os8 ? 2 : 1;
    const int64_t exit_rate2 = os8 ? 4 : 2;

    conv1_1_ = register_module("entry_flow_conv1_1", MakeConv(3, 32, 3, 2));
    bn1_1_ = register_module("entry_flow_conv1_1_BN", MakeBatchNorm(32, kKerasBnEpsilon));
    conv1_2_ = register_module("entry_flow_conv1_2", MakeConv(32, 64, 3, 1, 1));
    bn1_2_ = register_module("entry_flow_conv1_2_BN", MakeBatchNorm(64, kKerasBnEpsilon));

    entry1_ = register_module("entry_flow_block1",
                              XceptionBlock(64, Depths{128, 128, 128}, Shortcut::kConv, 2, 1, false));
    entry2_ = register_module("entry_flow_block2",
                              XceptionBlock(128, Depths{256, 256, 256}, Shortcut::kConv, 2, 1, false));
    entry3_ = register_module(
        "entry_flow_block3",
        XceptionBlock(256, Depths{728, 728, 728}, Shortcut::kConv, entry_block3_stride, 1, false));
    for (int i = 0; i < 16; ++i) {
      middle_.push_back(register_module(
          absl::StrCat("middle_flow_unit_", i + 1),
          XceptionBlock(728, Depths{728, 728, 728}, Shortcut::kSum, 1, middle_rate, false)));
    }
    exit1_ = register_module(
        "exit_flow_block1",
        XceptionBlock(728, Depths{728, 1024, 1024}, Shortcut::kConv, 1, exit_rate1, false));
    exit2_ = register_module(
        "exit_flow_block2",
        XceptionBlock(1024, Depths{1536, 1536, 2048}, Shortcut::kNone, 1, exit_rate2, true));
  }

  BackboneFeatures Forward(const torch::Tensor& input) override {
    // The first conv is Keras padding='same' with stride 2: asymmetric for even sizes.
    torch::Tensor x = RunConv(conv1_1_, TfSamePad(input, 3, 2));
    x = torch::relu(bn1_1_->forward(x));
    x = torch::relu(bn1_2_->forward(RunConv(conv1_2_, x)));
    x = entry1_->forward(x);
    BackboneFeatures features;
    x = entry2_->forward(x, &features.low_level);
    x = entry3_->forward(x);
    for (auto& unit : middle_) x = unit->forward(x);
    x = exit1_->forward(x);
    features.high_level = exit2_->forward(x);
    return features;
  }

  int64_t low_level_channels() const override { return 256; }
  int64_t high_level_channels() const override { return 2048; }

 private:
  torch::nn::Conv2d conv1_1_{nullptr}, conv1_2_{nullptr};
  BatchNorm bn1_1_{nullptr}, bn1_2_{nullptr};
  XceptionBlock entry1_{nullptr}, entry2_{nullptr}, entry3_{nullptr};
  std::vector<XceptionBlock> middle_;
  XceptionBlock exit1_{nullptr}, exit2_{nullptr};
};

}  // namespace

BackboneInfo Xception65BackboneInfo() {
  BackboneInfo info;
  info.name = "xception65";
  info.default_output_stride = 16;
  info.default_decoder = true;
  info.aspp_atrous_branches = true;
  info.build = [](const ModelSpec& spec) -> std::shared_ptr<BackboneImpl> {
    return std::make_shared<Xception65Impl>(spec.output_stride);
  };
  return info;
}

}  // namespace deeplab
