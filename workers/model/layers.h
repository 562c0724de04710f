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

// BatchNorm over channels (PyTorch names: weight, bias, running_mean, running_var), that
// can be folded into the convolution before it (FoldBatchNorms); once folded, forward is
// the identity. Our own module rather than a subclass of LibTorch's, whose template base
// Debian's libtorch does not export.
class BatchNormImpl : public torch::nn::Cloneable<BatchNormImpl> {
 public:
  BatchNormImpl(int64_t channels, double eps, double momentum = 0.1);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

  int64_t channels() const { return channels_; }
  double eps() const { return eps_; }
  bool folded() const { return folded_; }
  void set_folded() { folded_ = true; }

  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  int64_t channels_;
  double eps_;
  double momentum_;
  bool folded_ = false;
};
TORCH_MODULE(BatchNorm);

// Bias-free 2-D convolution, the kind every Keras layer here except the logits uses.
torch::nn::Conv2d MakeConv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1,
                           int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1);
BatchNorm MakeBatchNorm(int64_t channels, double eps);

// Folds every BatchNorm into the convolution whose output it normalises, for inference:
// w' = w * g / sqrt(var + eps), b' = beta + (b - mean) * g / sqrt(var + eps). The pairing is
// structural: within a module, a BatchNorm registered right after a Conv2d normalises that
// conv's output, which every module of the family guarantees (tested against the unfolded
// network). Returns the number of BatchNorms folded. Irreversible; the model stays in eval.
int FoldBatchNorms(torch::nn::Module& root);

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
  BatchNorm depthwise_bn_{nullptr};
  torch::nn::Conv2d pointwise_{nullptr};
  BatchNorm pointwise_bn_{nullptr};
};
TORCH_MODULE(SepConvBN);

// Bilinear resize of NCHW x to (height, width). From a 1x1 map this is a broadcast in
// either convention, which is how the image-pooling branch is brought back.
torch::Tensor ResizeBilinear(const torch::Tensor& x, int64_t height, int64_t width,
                             bool align_corners);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_MODEL_LAYERS_H_
