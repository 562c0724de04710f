#include "workers/model/layers.h"

#include <ATen/Parallel.h>
#include <ATen/ops/mkldnn_convolution.h>

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

namespace {

// With one intra-op thread, LibTorch 1.13 runs a 1x1 convolution without stride or dilation
// of fewer than 16 float images through im2col and BLAS instead of oneDNN ("THNN is faster
// when single-threaded"), and Debian's LibTorch links whatever libblas.so.3 provides: the
// reference BLAS unless an optimized one is installed. Xception-65 at 512x512 then took 15
// to 28 s an image on one thread, against 0.4 s on two through oneDNN (docs/BENCHMARKS.md,
// "One intra-op thread"). So with one thread, inference convolutions of float tensors on the
// CPU go to oneDNN directly, as they do with more threads.
bool ConvOnOneDnn(const torch::nn::Conv2d& conv, const torch::Tensor& x) {
  const torch::nn::detail::ConvNdOptions<2>& o = conv->options;
  return at::get_num_threads() == 1 && !torch::GradMode::is_enabled() && x.device().is_cpu() &&
         x.layout() == torch::kStrided && x.scalar_type() == torch::kFloat &&
         conv->weight.scalar_type() == torch::kFloat && !o.transposed() &&
         c10::holds_alternative<torch::enumtype::kZeros>(o.padding_mode()) &&
         c10::holds_alternative<torch::ExpandingArray<2>>(o.padding());
}

}  // namespace

torch::Tensor RunConv(torch::nn::Conv2d& conv, const torch::Tensor& x) {
  torch::Tensor y;
  if (ConvOnOneDnn(conv, x)) {
    const torch::nn::detail::ConvNdOptions<2>& o = conv->options;
    const c10::optional<torch::Tensor> bias =
        conv->bias.defined() ? c10::optional<torch::Tensor>(conv->bias) : c10::nullopt;
    y = at::mkldnn_convolution(x, conv->weight, bias,
                               c10::get<torch::ExpandingArray<2>>(o.padding()), o.stride(),
                               o.dilation(), o.groups());
  } else {
    y = conv->forward(x);
  }
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

BatchNormImpl::BatchNormImpl(int64_t channels, double eps, double momentum)
    : channels_(channels), eps_(eps), momentum_(momentum) {
  reset();
}

void BatchNormImpl::reset() {
  weight = register_parameter("weight", torch::ones({channels_}));
  bias = register_parameter("bias", torch::zeros({channels_}));
  running_mean = register_buffer("running_mean", torch::zeros({channels_}));
  running_var = register_buffer("running_var", torch::ones({channels_}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
}

torch::Tensor BatchNormImpl::forward(const torch::Tensor& x) {
  if (folded_) return x;
  if (is_training()) num_batches_tracked.add_(1);
  return torch::batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum_,
                           eps_, /*cudnn_enabled=*/true);
}

BatchNorm MakeBatchNorm(int64_t channels, double eps) { return BatchNorm(channels, eps); }

int FoldBatchNorms(torch::nn::Module& root) {
  torch::NoGradGuard no_grad;
  int folded = 0;
  auto children = root.named_children();
  for (size_t i = 0; i < children.size(); ++i) {
    const std::shared_ptr<torch::nn::Module>& child = children[i].value();
    folded += FoldBatchNorms(*child);
    auto* conv = child->as<torch::nn::Conv2d>();
    auto* bn = i + 1 < children.size() ? children[i + 1].value()->as<BatchNorm>() : nullptr;
    if (conv == nullptr || bn == nullptr || bn->folded()) continue;
    const torch::Tensor scale = bn->weight / torch::sqrt(bn->running_var + bn->eps());
    conv->weight.mul_(scale.view({-1, 1, 1, 1}));
    torch::Tensor bias = conv->bias.defined() ? conv->bias : torch::zeros_like(bn->running_mean);
    bias = bn->bias + (bias - bn->running_mean) * scale;
    if (conv->bias.defined()) {
      conv->bias.copy_(bias);
    } else {
      // Conv2dImpl registers an undefined "bias" that cannot be registered again; the new
      // bias lives in a buffer that the bias member shares, so Module::to() still moves it
      // (it updates buffers in place) and forward uses it.
      conv->bias = conv->register_buffer("folded_bias", bias);
      conv->options.bias(true);
    }
    bn->set_folded();
    ++folded;
  }
  return folded;
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
