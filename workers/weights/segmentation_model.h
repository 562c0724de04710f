// SegmentationModel: the one interface the worker runs, whatever the weights came from
// (a Keras HDF5 file, our native checkpoint, or a user's TorchScript archive).
//
// Forward may be called from several threads at once (inference only, no shared mutable
// state); Load* functions are thread-compatible.
#ifndef DEEPLAB_WORKERS_WEIGHTS_SEGMENTATION_MODEL_H_
#define DEEPLAB_WORKERS_WEIGHTS_SEGMENTATION_MODEL_H_

#include <torch/torch.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "workers/model/model_spec.h"

namespace deeplab {

enum class WeightsFormat {
  kRandom,       // no file: freshly initialised weights (tests, speed benchmarks)
  kKerasH5,      // keras-deeplab-v3-plus / DigiPathAI .h5
  kNative,       // our .dlck checkpoint
  kTorchScript,  // a user's scripted or traced model
};

// "keras_h5", "native", "torchscript", "random" -> format; anything else INVALID_ARGUMENT.
absl::StatusOr<WeightsFormat> ParseWeightsFormat(const std::string& name);

enum class Precision { kFp32, kBf16, kFp16 };

// Where and how a model runs. Defaults are what the worker uses on a CPU.
struct RuntimeOptions {
  // "cpu", "cuda" or "cuda:K".
  std::string device = "cpu";
  Precision precision = Precision::kFp32;
  // bf16 is used on a CPU only where it has native bf16 instructions (AVX512-BF16 or AMX),
  // and fp16 only on CUDA; otherwise fp32 runs and runtime() says why. Tests set this to
  // run bf16 on any CPU, slowly.
  bool force_precision = false;
  // Fold BatchNorm into the convolutions (DeepLab networks; no effect on TorchScript).
  bool fold_batch_norm = true;
  // NHWC activations and weights: cuDNN's fast layout. On the CPU, NCHW measured faster
  // with LibTorch 1.13 (README, "Measurements"), so the worker turns this on for CUDA only.
  bool channels_last = false;
};

// True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16).
bool CpuHasNativeBf16();

class SegmentationModel {
 public:
  virtual ~SegmentationModel() = default;

  // input: NCHW float32, normalized as the weight set requires. Returns NCHW float32 scores
  // (logits or probabilities) with num_classes() channels at the input's height and width.
  // Errors: INVALID_ARGUMENT for a bad input shape, INTERNAL when the model itself fails.
  virtual absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& input) = 0;

  virtual int num_classes() const = 0;
  // Device, precision and layout in use, e.g. "cpu fp32 channels_last" or
  // "cpu fp32 (bf16 requested: this CPU has no native bf16)".
  virtual std::string runtime() const = 0;
  // For logs and Status: e.g. "xception65/os16/21 classes from /models/voc/weights.h5".
  virtual std::string Describe() const = 0;
};

// Builds the network described by spec (ignored for TorchScript except num_classes, which
// the model's output must match), loads weights from path in the given format and prepares
// it to run as `options` say. INVALID_ARGUMENT for bad files or specs, FAILED_PRECONDITION
// for a device this build or machine lacks.
absl::StatusOr<std::unique_ptr<SegmentationModel>> LoadSegmentationModel(
    const ModelSpec& spec, WeightsFormat format, const std::string& path,
    const RuntimeOptions& options = RuntimeOptions());

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_WEIGHTS_SEGMENTATION_MODEL_H_
