#include "workers/weights/segmentation_model.h"

#include <torch/script.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "workers/model/deeplab.h"
#include "workers/weights/keras_h5.h"
#include "workers/weights/native_checkpoint.h"

namespace deeplab {
namespace {

absl::Status CheckInput(const torch::Tensor& input) {
  if (input.dim() != 4 || input.size(1) != 3 || input.scalar_type() != torch::kFloat32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model input must be an NCHW float32 tensor with 3 channels, got sizes ",
        c10::str(input.sizes()), " of type ", c10::toString(input.scalar_type())));
  }
  return absl::OkStatus();
}

// The resolved device, dtype and layout of a model, shared by both kinds.
struct Placement {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
  bool channels_last = false;
  std::string description;

  // Moves a batch to the model's device, dtype and layout.
  torch::Tensor Prepare(const torch::Tensor& input) const {
    torch::Tensor x = input.to(device, dtype);
    return x.contiguous(channels_last ? torch::MemoryFormat::ChannelsLast
                                      : torch::MemoryFormat::Contiguous);
  }
};

absl::StatusOr<Placement> ResolvePlacement(const RuntimeOptions& options) {
  Placement p;
  try {
    p.device = torch::Device(options.device);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown device '", options.device, "'; use cpu, cuda or cuda:K"));
  }
  if (p.device.is_cuda()) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", options.device,
          " requested, but this LibTorch build or machine has no CUDA device; use --device cpu"));
    }
    if (p.device.has_index() && p.device.index() >= static_cast<int>(torch::cuda::device_count())) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", options.device, " does not exist: this machine has ",
                       torch::cuda::device_count(), " CUDA device(s)"));
    }
  } else if (!p.device.is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported device '", options.device, "'; use cpu, cuda or cuda:K"));
  }
  p.channels_last = options.channels_last;
  std::string note;
  switch (options.precision) {
    case Precision::kFp32:
      break;
    case Precision::kBf16:
      if (p.device.is_cuda() || CpuHasNativeBf16() || options.force_precision) {
        p.dtype = torch::kBFloat16;
      } else {
        note = " (bf16 requested: this CPU has no native bf16)";
      }
      break;
    case Precision::kFp16:
      if (p.device.is_cuda() || options.force_precision) {
        p.dtype = torch::kHalf;
      } else {
        note = " (fp16 requested: only CUDA runs fp16)";
      }
      break;
  }
  const char* dtype = p.dtype == torch::kBFloat16 ? "bf16" : p.dtype == torch::kHalf ? "fp16" : "fp32";
  p.description = absl::StrCat(p.device.str(), " ", dtype,
                               p.channels_last ? " channels_last" : "", note);
  return p;
}

class DeepLabModel : public SegmentationModel {
 public:
  DeepLabModel(DeepLabV3Plus net, std::string origin, Placement placement)
      : net_(std::move(net)), origin_(std::move(origin)), placement_(std::move(placement)) {}

  absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& input) override {
    if (absl::Status s = CheckInput(input); !s.ok()) return s;
    try {
      torch::InferenceMode guard;
      return net_->forward(placement_.Prepare(input)).to(torch::kCPU, torch::kFloat32).contiguous();
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("forward failed: ", e.what_without_backtrace()));
    }
  }
  int num_classes() const override { return net_->spec().num_classes; }
  std::string runtime() const override { return placement_.description; }
  std::string Describe() const override {
    return absl::StrCat(DescribeModelSpec(net_->spec()), " from ", origin_);
  }

 private:
  DeepLabV3Plus net_;
  std::string origin_;
  Placement placement_;
};

// A user's TorchScript model. Outputs accepted: a tensor, a dict with "out" (torchvision's
// segmentation models), or a tuple/list whose first element is the logits.
class TorchScriptModel : public SegmentationModel {
 public:
  TorchScriptModel(torch::jit::Module module, int num_classes, std::string path,
                   Placement placement)
      : module_(std::move(module)),
        num_classes_(num_classes),
        path_(std::move(path)),
        placement_(std::move(placement)) {}

  absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& input) override {
    if (absl::Status s = CheckInput(input); !s.ok()) return s;
    torch::Tensor out;
    try {
      torch::InferenceMode guard;
      out = Unwrap(module_.forward({placement_.Prepare(input)}));
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("TorchScript model ", path_,
                                              " failed: ", e.what_without_backtrace()));
    }
    if (!out.defined() || out.dim() != 4 || out.size(0) != input.size(0)) {
      return absl::InternalError(absl::StrCat(
          "TorchScript model ", path_,
          " must return NCHW logits (a tensor, a dict with 'out', or a tuple), got ",
          out.defined() ? c10::str(out.sizes()) : std::string("no tensor")));
    }
    if (out.size(1) != num_classes_) {
      return absl::InternalError(absl::StrCat("TorchScript model ", path_, " returned ",
                                              out.size(1), " channels; the config says ",
                                              num_classes_, " classes"));
    }
    if (out.size(2) != input.size(2) || out.size(3) != input.size(3)) {
      // Models that return logits at a lower resolution are brought to the input size.
      out = torch::nn::functional::interpolate(
          out, torch::nn::functional::InterpolateFuncOptions()
                   .size(std::vector<int64_t>{input.size(2), input.size(3)})
                   .mode(torch::kBilinear)
                   .align_corners(false));
    }
    return out.to(torch::kCPU, torch::kFloat32).contiguous();
  }
  int num_classes() const override { return num_classes_; }
  std::string runtime() const override { return placement_.description; }
  std::string Describe() const override { return absl::StrCat("TorchScript model ", path_); }

 private:
  static torch::Tensor Unwrap(const c10::IValue& value) {
    if (value.isTensor()) return value.toTensor();
    if (value.isGenericDict()) {
      for (const auto& entry : value.toGenericDict()) {
        if (entry.key().isString() && entry.key().toStringRef() == "out") {
          return Unwrap(entry.value());
        }
      }
      return torch::Tensor();
    }
    if (value.isTuple()) {
      const auto& elements = value.toTupleRef().elements();
      return elements.empty() ? torch::Tensor() : Unwrap(elements[0]);
    }
    if (value.isList()) {
      const auto list = value.toList();
      return list.empty() ? torch::Tensor() : Unwrap(list.get(0));
    }
    return torch::Tensor();
  }

  torch::jit::Module module_;
  int num_classes_;
  std::string path_;
  Placement placement_;
};

}  // namespace

bool CpuHasNativeBf16() {
  static const bool has = [] {
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpuinfo, line)) {
      if (line.rfind("flags", 0) == 0) {
        return line.find(" avx512_bf16") != std::string::npos ||
               line.find(" amx_bf16") != std::string::npos;
      }
    }
    return false;
  }();
  return has;
}

absl::StatusOr<WeightsFormat> ParseWeightsFormat(const std::string& name) {
  if (name == "keras_h5") return WeightsFormat::kKerasH5;
  if (name == "native") return WeightsFormat::kNative;
  if (name == "torchscript") return WeightsFormat::kTorchScript;
  if (name == "random") return WeightsFormat::kRandom;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown weights format '", name, "'; use keras_h5, native, torchscript or random"));
}

absl::StatusOr<std::unique_ptr<SegmentationModel>> LoadSegmentationModel(
    const ModelSpec& spec, WeightsFormat format, const std::string& path,
    const RuntimeOptions& options) {
  absl::StatusOr<Placement> placement = ResolvePlacement(options);
  if (!placement.ok()) return placement.status();
  if (format == WeightsFormat::kTorchScript) {
    if (spec.num_classes < 1) {
      return absl::InvalidArgumentError("num_classes must be set for a TorchScript model");
    }
    try {
      torch::jit::Module module = torch::jit::load(path, placement->device);
      module.eval();
      module.to(placement->dtype);
      return std::make_unique<TorchScriptModel>(std::move(module), spec.num_classes, path,
                                                *std::move(placement));
    } catch (const c10::Error& e) {
      return absl::InvalidArgumentError(absl::StrCat("cannot load TorchScript archive ", path,
                                                     ": ", e.what_without_backtrace()));
    }
  }
  absl::StatusOr<DeepLabV3Plus> net = BuildDeepLabV3Plus(spec);
  if (!net.ok()) return net.status();
  absl::Status loaded;
  switch (format) {
    case WeightsFormat::kKerasH5:
      loaded = LoadKerasH5(path, *net);
      break;
    case WeightsFormat::kNative:
      loaded = LoadNativeCheckpoint(path, *net);
      break;
    case WeightsFormat::kRandom:
    case WeightsFormat::kTorchScript:
      break;
  }
  if (!loaded.ok()) return loaded;
  DeepLabV3Plus& model = *net;
  if (options.fold_batch_norm) FoldBatchNorms(*model);
  model->to(placement->device, placement->dtype);
  if (placement->channels_last) {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) {
      if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
    }
  }
  return std::make_unique<DeepLabModel>(*std::move(net),
                                        format == WeightsFormat::kRandom ? "random init" : path,
                                        *std::move(placement));
}

}  // namespace deeplab
