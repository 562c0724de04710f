#include "workers/weights/segmentation_model.h"

#include <torch/script.h>

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

class DeepLabModel : public SegmentationModel {
 public:
  DeepLabModel(DeepLabV3Plus net, std::string origin)
      : net_(std::move(net)), origin_(std::move(origin)) {}

  absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& input) override {
    if (absl::Status s = CheckInput(input); !s.ok()) return s;
    try {
      torch::InferenceMode guard;
      return net_->forward(input);
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("forward failed: ", e.what_without_backtrace()));
    }
  }
  int num_classes() const override { return net_->spec().num_classes; }
  std::string Describe() const override {
    return absl::StrCat(DescribeModelSpec(net_->spec()), " from ", origin_);
  }

 private:
  DeepLabV3Plus net_;
  std::string origin_;
};

// A user's TorchScript model. Outputs accepted: a tensor, a dict with "out" (torchvision's
// segmentation models), or a tuple/list whose first element is the logits.
class TorchScriptModel : public SegmentationModel {
 public:
  TorchScriptModel(torch::jit::Module module, int num_classes, std::string path)
      : module_(std::move(module)), num_classes_(num_classes), path_(std::move(path)) {}

  absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& input) override {
    if (absl::Status s = CheckInput(input); !s.ok()) return s;
    torch::Tensor out;
    try {
      torch::InferenceMode guard;
      out = Unwrap(module_.forward({input}));
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
    return out.to(torch::kFloat32);
  }
  int num_classes() const override { return num_classes_; }
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
};

}  // namespace

absl::StatusOr<WeightsFormat> ParseWeightsFormat(const std::string& name) {
  if (name == "keras_h5") return WeightsFormat::kKerasH5;
  if (name == "native") return WeightsFormat::kNative;
  if (name == "torchscript") return WeightsFormat::kTorchScript;
  if (name == "random") return WeightsFormat::kRandom;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown weights format '", name, "'; use keras_h5, native, torchscript or random"));
}

absl::StatusOr<std::unique_ptr<SegmentationModel>> LoadSegmentationModel(
    const ModelSpec& spec, WeightsFormat format, const std::string& path) {
  if (format == WeightsFormat::kTorchScript) {
    if (spec.num_classes < 1) {
      return absl::InvalidArgumentError("num_classes must be set for a TorchScript model");
    }
    try {
      torch::jit::Module module = torch::jit::load(path, torch::kCPU);
      module.eval();
      return std::make_unique<TorchScriptModel>(std::move(module), spec.num_classes, path);
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
  return std::make_unique<DeepLabModel>(*std::move(net),
                                        format == WeightsFormat::kRandom ? "random init" : path);
}

}  // namespace deeplab
