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

// kAuto: the fastest precision the device runs natively (fp16 on CUDA, bf16 on a CPU with
// native bf16, else fp32), kept only where its labels agree with fp32's (see RuntimeOptions).
enum class Precision { kFp32, kBf16, kFp16, kAuto };

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
  // NHWC activations and weights at load. The worker times both layouts at warm-up and
  // switches (SegmentationModel::SetChannelsLast); tools and tests pick one here.
  bool channels_last = false;
  // Precision kAuto: the candidate's labels must agree with fp32's on at least this fraction
  // of the pixels of `precision_check_input`, or the model loads in fp32 and runtime() says
  // why. Measured on an H200 with the demo weights: fp16 99.998%, bf16 99.97%.
  double min_label_agreement = 0.99;
  // NCHW float32 on the CPU, normalized as the weight set requires. Undefined: a procedural
  // scene of 256x256 (MakePrecisionCheckInput).
  torch::Tensor precision_check_input;
};

// A fixed, deterministic input for the precision check: smooth colour fields with a few
// sharp-edged shapes, in [-1, 1], NCHW float32 [1, 3, height, width]. Natural-image-like
// rather than noise, whose near-ties would flip labels at any precision.
torch::Tensor MakePrecisionCheckInput(int height, int width);

// "fp32", "bf16" or "fp16".
const char* PrecisionName(torch::ScalarType dtype);

// True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16).
bool CpuHasNativeBf16();

class SegmentationModel {
 public:
  virtual ~SegmentationModel() = default;

  // Where and in which form the network runs: the batch path builds its input to match.
  virtual torch::Device device() const = 0;
  virtual torch::ScalarType dtype() const = 0;
  virtual bool channels_last() const = 0;

  // The network alone, on its device: input NCHW of dtype() on device() (either memory
  // format; converted to the model's if it differs), on the current stream. Returns scores
  // [N, num_classes(), H, W] on device() in dtype() (logits or probabilities) at the input's
  // height and width; nothing is copied to the host.
  // Errors: INVALID_ARGUMENT for a bad input, INTERNAL when the model itself fails.
  virtual absl::StatusOr<torch::Tensor> Run(const torch::Tensor& input) = 0;

  // Converts the weights to the other layout (the worker's warm-up times both). Not
  // thread-safe: no Run may be in progress.
  virtual void SetChannelsLast(bool channels_last) = 0;

  // Run from and to the host, for tools and tests: input NCHW float32 on any device,
  // normalized as the weight set requires; returns NCHW float32 scores on the CPU.
  absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& input);

  virtual int num_classes() const = 0;
  // Device, precision and layout in use, e.g. "cpu fp32 channels_last" or
  // "cpu fp32 (bf16 requested: this CPU has no native bf16)"; with precision kAuto it says
  // how the choice went, e.g. "cuda:0 fp16 (auto: labels agree with fp32 on 99.99% of the
  // check input)" or "cpu fp32 (auto: bf16 labels agreed with fp32 on 97.10% of the check
  // input, below 99%)".
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
