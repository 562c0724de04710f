// DeepLabv3+: backbone (from the registry) -> ASPP -> optional decoder -> logits -> bilinear
// resize to the input size -> optional softmax/sigmoid.
//
// Top-level children: "backbone", "aspp", "decoder" (when used) and "head". Below them, module
// names are the published Keras layer names joined by '.', e.g. aspp.aspp1.depthwise_BN is
// Keras layer "aspp1_depthwise_BN" (see KerasLayerName in workers/weights/keras_h5.h).
//
// Construction is not thread-safe; a built model in eval mode may run forward concurrently.
#ifndef DEEPLAB_WORKERS_MODEL_DEEPLAB_H_
#define DEEPLAB_WORKERS_MODEL_DEEPLAB_H_

#include <torch/torch.h>

#include <memory>

#include "absl/status/statusor.h"
#include "workers/model/backbone.h"
#include "workers/model/layers.h"
#include "workers/model/model_spec.h"

namespace deeplab {

// Atrous spatial pyramid pooling with the Keras names: image_pooling(+_BN), aspp0(+_BN),
// optionally aspp1..3 (separable, depth_activation), concat_projection(+_BN).
// Branches are concatenated in the order [pooling, aspp0, aspp1, aspp2, aspp3].
class AsppImpl : public torch::nn::Module {
 public:
  AsppImpl(int64_t in, bool atrous_branches, int output_stride, int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  int64_t channels_;  // head_channels: 256 as published
  torch::nn::Conv2d pooling_conv_{nullptr}, aspp0_{nullptr}, projection_{nullptr};
  BatchNorm pooling_bn_{nullptr}, aspp0_bn_{nullptr}, projection_bn_{nullptr};
  std::vector<SepConvBN> atrous_;
};
TORCH_MODULE(Aspp);

// The DeepLabv3+ decoder: upsample to the low-level size, concat [upsampled,
// feature_projection0(low)] (head_channels, 256 as published, + 48), then decoder_conv0 and decoder_conv1.
class DecoderImpl : public torch::nn::Module {
 public:
  DecoderImpl(int64_t low_level_channels, bool align_corners, int64_t channels);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& low_level);

 private:
  bool align_corners_;
  torch::nn::Conv2d projection_{nullptr};
  BatchNorm projection_bn_{nullptr};
  SepConvBN conv0_{nullptr}, conv1_{nullptr};
};
TORCH_MODULE(Decoder);

class DeepLabV3PlusImpl : public torch::nn::Module {
 public:
  // Use BuildDeepLabV3Plus, which validates the spec first.
  explicit DeepLabV3PlusImpl(const ModelSpec& resolved_spec);

  // x: NCHW float, already normalized. Returns NCHW logits (or probabilities) at x's size.
  torch::Tensor forward(const torch::Tensor& x);

  const ModelSpec& spec() const { return spec_; }

 private:
  void InitializeWeights();

  ModelSpec spec_;
  std::shared_ptr<BackboneImpl> backbone_;
  Aspp aspp_{nullptr};
  Decoder decoder_{nullptr};
  torch::nn::Conv2d logits_{nullptr};
};
TORCH_MODULE(DeepLabV3Plus);

// Resolves and validates spec, then builds the network in eval mode on the CPU.
absl::StatusOr<DeepLabV3Plus> BuildDeepLabV3Plus(const ModelSpec& spec);

struct ParameterCounts {
  int64_t trainable = 0;  // what PyTorch counts as parameters
  int64_t total = 0;      // plus BatchNorm running mean and variance (Keras' "total")
  // After folding each BatchNorm into the preceding convolution (one bias vector per
  // BatchNorm instead of gamma, beta, mean and variance): what inference really uses.
  int64_t bn_folded = 0;
};
ParameterCounts CountParameters(torch::nn::Module& module);

// Multiply-adds of every convolution for one image of the given size (runs one forward).
int64_t CountMultiplyAdds(DeepLabV3Plus& model, int64_t height, int64_t width);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_MODEL_DEEPLAB_H_
