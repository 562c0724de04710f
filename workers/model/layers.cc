#include "workers/model/layers.h"

#include <algorithm>

namespace deeplab {
namespace {

thread_local ScopedMacCounter* active_counter = nullptr;

// TF 'same' padding along one dimension: {before, after}.
std::pair<int64_t, int64_t> SamePadding(int64_t n, int64_t kernel, int64_t stride,
                                        int64_t dilation) {
  const int64_t k_eff = kernel + (kernel - 1) * (dilation - 1);
  const int64_t out = (n + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((out - 1) * stride + k_eff - n, 0);
  return {total / 2, total - total / 2};
}

}  // namespace

torch::Tensor TfSamePad(const torch::Tensor& x, int64_t kernel, int64_t stride,
                        int64_t dilation) {
  const auto [top, bottom] = SamePadding(x.size(2), kernel, stride, dilation);
  const auto [left, right] = SamePadding(x.size(3), kernel, stride, dilation);
  if (top == 0 && bottom == 0 && left == 0 && right == 0) return x;
  return torch::constant_pad_nd(x, {left, right, top, bottom}, 0.0);
}

ScopedMacCounter::ScopedMacCounter() { active_counter = this; }
ScopedMacCounter::~ScopedMacCounter() { active_counter = nullptr; }

torch::Tensor RunConv(torch::nn::Conv2d& conv, const torch::Tensor& x) {
  torch::Tensor y = conv->forward(x);
  if (active_counter != nullptr) {
    const auto& w = conv->weight;  // (out, in/groups, kh, kw)
    const int64_t per_output = w.size(1) * w.size(2) * w.size(3);
    active_counter->count_ += y.numel() / y.size(0) * per_output;
  }
  return y;
}

torch::nn::Conv2d MakeConv(int64_t in, int64_t out, int64_t kernel, int64_t stride,
                           int64_t padding, int64_t dilation, int64_t groups) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                               .stride(stride)
                               .padding(padding)
                               .dilation(dilation)
                               .groups(groups)
                               .bias(false));
}

torch::nn::BatchNorm2d MakeBatchNorm(int64_t channels, double eps) {
  return torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(channels).eps(eps));
}

SepConvBNImpl::SepConvBNImpl(int64_t in, int64_t out, int64_t stride, int64_t rate,
                             bool depth_activation, double eps)
    : depth_activation_(depth_activation) {
  depthwise_ = register_module("depthwise", MakeConv(in, in, 3, stride, rate, rate, in));
  depthwise_bn_ = register_module("depthwise_BN", MakeBatchNorm(in, eps));
  pointwise_ = register_module("pointwise", MakeConv(in, out, 1));
  pointwise_bn_ = register_module("pointwise_BN", MakeBatchNorm(out, eps));
}

torch::Tensor SepConvBNImpl::forward(torch::Tensor x) {
  if (!depth_activation_) x = torch::relu(x);
  x = depthwise_bn_->forward(RunConv(depthwise_, x));
  if (depth_activation_) x = torch::relu(x);
  x = pointwise_bn_->forward(RunConv(pointwise_, x));
  if (depth_activation_) x = torch::relu(x);
  return x;
}

torch::Tensor ResizeBilinear(const torch::Tensor& x, int64_t height, int64_t width,
                             bool align_corners) {
  if (x.size(2) == height && x.size(3) == width) return x;
  if (x.size(2) == 1 && x.size(3) == 1) return x.expand({x.size(0), x.size(1), height, width});
  return torch::nn::functional::interpolate(
      x, torch::nn::functional::InterpolateFuncOptions()
             .size(std::vector<int64_t>{height, width})
             .mode(torch::kBilinear)
             .align_corners(align_corners));
}

}  // namespace deeplab
