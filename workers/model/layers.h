// Building blocks shared by the backbones and the head, with the padding and BatchNorm
// conventions of the published TF/Keras models.
#ifndef DEEPLAB_WORKERS_MODEL_LAYERS_H_
#define DEEPLAB_WORKERS_MODEL_LAYERS_H_

#include <torch/torch.h>

#include <cstdint>

namespace deeplab {

// Keras BatchNormalization's default epsilon (backbones); the head uses 1e-5.
inline constexpr double kKerasBnEpsilon = 1e-3;
inline constexpr double kHeadBnEpsilon = 1e-5;

// Pads x as TF's padding='same' does for a strided convolution: total padding
// max((ceil(n/s)-1)*s + k_eff - n, 0), with the odd pixel after (bottom/right).
torch::Tensor TfSamePad(const torch::Tensor& x, int64_t kernel, int64_t stride,
                        int64_t dilation = 1);

// Applies a convolution. Every convolution of the model family goes through here so that
// CountMultiplyAdds can see them.
torch::Tensor RunConv(torch::nn::Conv2d& conv, const torch::Tensor& x);

// Counts the multiply-adds of every RunConv on this thread while alive (not re-entrant).
class ScopedMacCounter {
 public:
  ScopedMacCounter();
  ~ScopedMacCounter();
  ScopedMacCounter(const ScopedMacCounter&) = delete;
  ScopedMacCounter& operator=(const ScopedMacCounter&) = delete;
  int64_t multiply_adds() const { return count_; }

 private:
  friend torch::Tensor RunConv(torch::nn::Conv2d& conv, const torch::Tensor& x);
  int64_t count_ = 0;
};

// Bias-free 2-D convolution, the kind every Keras layer here except the logits uses.
torch::nn::Conv2d MakeConv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1,
                           int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1);
torch::nn::BatchNorm2d MakeBatchNorm(int64_t channels, double eps);

// Keras' SepConv_BN: [ReLU] depthwise 3x3 (dilation r) -> BN -> [ReLU] -> pointwise 1x1 ->
// BN -> [ReLU]. The leading ReLU is used when depth_activation is false, the two inner ones
// when it is true. Padding is symmetric r on both sides: for stride 1 that is TF 'same', and
// for stride > 1 it is the explicit ZeroPadding2D((k_eff-1)/2) the published model applies.
// Children: depthwise, depthwise_BN, pointwise, pointwise_BN.
class SepConvBNImpl : public torch::nn::Module {
 public:
  SepConvBNImpl(int64_t in, int64_t out, int64_t stride, int64_t rate, bool depth_activation,
                double eps);
  torch::Tensor forward(torch::Tensor x);

 private:
  bool depth_activation_;
  torch::nn::Conv2d depthwise_{nullptr};
  torch::nn::BatchNorm2d depthwise_bn_{nullptr};
  torch::nn::Conv2d pointwise_{nullptr};
  torch::nn::BatchNorm2d pointwise_bn_{nullptr};
};
TORCH_MODULE(SepConvBN);

// Bilinear resize of NCHW x to (height, width). From a 1x1 map this is a broadcast in
// either convention, which is how the image-pooling branch is brought back.
torch::Tensor ResizeBilinear(const torch::Tensor& x, int64_t height, int64_t width,
                             bool align_corners);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_MODEL_LAYERS_H_
