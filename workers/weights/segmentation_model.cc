#include "workers/weights/segmentation_model.h"

#include <torch/script.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/model/deeplab.h"
#include "workers/weights/keras_h5.h"
#include "workers/weights/native_checkpoint.h"

namespace deeplab {
namespace {

// The resolved device, dtype and layout of a model, shared by both kinds.
struct Placement {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
  bool channels_last = false;
  // Why the precision is what it is, when that is not simply what was asked: " (...)".
  std::string note;

  torch::MemoryFormat format() const {
    return channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
  }
  std::string Describe() const {
    return absl::StrCat(device.str(), " ", PrecisionName(dtype),
                        channels_last ? " channels_last" : "", note);
  }
};

// The precision kAuto tries first, or fp32 with the reason it is not tried.
Precision AutoCandidate(const torch::Device& device, bool force, std::string* why_fp32) {
  if (device.is_cuda()) return Precision::kFp16;
  if (CpuHasNativeBf16() || force) return Precision::kBf16;
  *why_fp32 = " (auto: this CPU has no native bf16)";
  return Precision::kFp32;
}

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
  switch (options.precision) {
    case Precision::kFp32:
    case Precision::kAuto:  // resolved by LoadSegmentationModel before it gets here
      break;
    case Precision::kBf16:
      if (p.device.is_cuda() || CpuHasNativeBf16() || options.force_precision) {
        p.dtype = torch::kBFloat16;
      } else {
        p.note = " (bf16 requested: this CPU has no native bf16)";
      }
      break;
    case Precision::kFp16:
      if (p.device.is_cuda() || options.force_precision) {
        p.dtype = torch::kHalf;
      } else {
        p.note = " (fp16 requested: only CUDA runs fp16)";
      }
      break;
  }
  return p;
}

absl::Status CheckRunInput(const torch::Tensor& input, const Placement& placement) {
  if (!input.defined() || input.dim() != 4 || input.size(1) != 3 ||
      input.scalar_type() != placement.dtype || input.device() != placement.device) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model input must be an NCHW ", PrecisionName(placement.dtype), " tensor with 3 channels on ",
        placement.device.str(), ", got ",
        input.defined() ? absl::StrCat("sizes ", c10::str(input.sizes()), " of type ",
                                       c10::toString(input.scalar_type()), " on ",
                                       input.device().str())
                        : std::string("no tensor")));
  }
  return absl::OkStatus();
}

void ConvertLayout(const std::vector<torch::Tensor>& parameters, torch::MemoryFormat format) {
  torch::NoGradGuard no_grad;
  for (const torch::Tensor& p : parameters) {
    if (p.dim() == 4) torch::Tensor(p).set_data(p.contiguous(format));
  }
}

// What both kinds share: the placement, and the conversions precision kAuto makes.
class ModelBase : public SegmentationModel {
 public:
  explicit ModelBase(Placement placement) : placement_(std::move(placement)) {}

  torch::Device device() const override { return placement_.device; }
  torch::ScalarType dtype() const override { return placement_.dtype; }
  bool channels_last() const override { return placement_.channels_last; }
  std::string runtime() const override { return placement_.Describe(); }
  void SetChannelsLast(bool channels_last) override {
    placement_.channels_last = channels_last;
    ConvertLayout(Parameters(), placement_.format());
  }
  // Precision kAuto, after the check: the weights to `dtype`, with the note runtime() shows.
  void ConvertTo(torch::ScalarType dtype, std::string note) {
    ConvertWeights(dtype);
    ConvertLayout(Parameters(), placement_.format());
    placement_.dtype = dtype;
    placement_.note = std::move(note);
  }
  void SetNote(std::string note) { placement_.note = std::move(note); }
  // Copies of every parameter and buffer, and their return (same order, same dtype).
  std::vector<torch::Tensor> Snapshot() {
    std::vector<torch::Tensor> copies;
    for (const torch::Tensor& t : State()) copies.push_back(t.detach().clone());
    return copies;
  }
  void Restore(const std::vector<torch::Tensor>& copies) {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> state = State();
    for (size_t i = 0; i < state.size() && i < copies.size(); ++i) state[i].copy_(copies[i]);
  }

 protected:
  virtual std::vector<torch::Tensor> Parameters() = 0;
  // Parameters and buffers.
  virtual std::vector<torch::Tensor> State() = 0;
  virtual void ConvertWeights(torch::ScalarType dtype) = 0;
  // The input in the model's memory format (a no-op when it already is).
  torch::Tensor InLayout(const torch::Tensor& input) const {
    return input.contiguous(placement_.format());
  }
  const Placement& placement() const { return placement_; }

 private:
  Placement placement_;
};

class DeepLabModel : public ModelBase {
 public:
  DeepLabModel(DeepLabV3Plus net, std::string origin, Placement placement)
      : ModelBase(std::move(placement)), net_(std::move(net)), origin_(std::move(origin)) {}

  absl::StatusOr<torch::Tensor> Run(const torch::Tensor& input) override {
    if (absl::Status s = CheckRunInput(input, placement()); !s.ok()) return s;
    try {
      torch::InferenceMode guard;
      return net_->forward(InLayout(input));
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("forward failed: ", e.what_without_backtrace()));
    }
  }
  int num_classes() const override { return net_->spec().num_classes; }
  std::string Describe() const override {
    return absl::StrCat(DescribeModelSpec(net_->spec()), " from ", origin_);
  }

 protected:
  std::vector<torch::Tensor> Parameters() override { return net_->parameters(); }
  std::vector<torch::Tensor> State() override {
    std::vector<torch::Tensor> all = net_->parameters();
    for (const torch::Tensor& b : net_->buffers()) all.push_back(b);
    return all;
  }
  void ConvertWeights(torch::ScalarType dtype) override { net_->to(dtype); }

 private:
  DeepLabV3Plus net_;
  std::string origin_;
};

// A user's TorchScript model. Outputs accepted: a tensor, a dict with "out" (torchvision's
// segmentation models), or a tuple/list whose first element is the logits.
class TorchScriptModel : public ModelBase {
 public:
  TorchScriptModel(torch::jit::Module module, int num_classes, std::string path,
                   Placement placement)
      : ModelBase(std::move(placement)),
        module_(std::move(module)),
        num_classes_(num_classes),
        path_(std::move(path)) {}

  absl::StatusOr<torch::Tensor> Run(const torch::Tensor& input) override {
    if (absl::Status s = CheckRunInput(input, placement()); !s.ok()) return s;
    torch::Tensor out;
    try {
      torch::InferenceMode guard;
      out = Unwrap(module_.forward({InLayout(input)}));
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
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("TorchScript model ", path_,
                                              " failed: ", e.what_without_backtrace()));
    }
    return out;
  }
  int num_classes() const override { return num_classes_; }
  std::string Describe() const override { return absl::StrCat("TorchScript model ", path_); }

 protected:
  std::vector<torch::Tensor> Parameters() override {
    std::vector<torch::Tensor> all;
    for (const torch::Tensor& p : module_.parameters()) all.push_back(p);
    return all;
  }
  std::vector<torch::Tensor> State() override {
    std::vector<torch::Tensor> all = Parameters();
    for (const torch::Tensor& b : module_.buffers()) all.push_back(b);
    return all;
  }
  void ConvertWeights(torch::ScalarType dtype) override { module_.to(dtype); }

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

// A fixed precision (not kAuto).
absl::StatusOr<std::unique_ptr<ModelBase>> LoadWithPlacement(const ModelSpec& spec,
                                                            WeightsFormat format,
                                                            const std::string& path,
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
      auto model = std::make_unique<TorchScriptModel>(std::move(module), spec.num_classes, path,
                                                      *placement);
      if (placement->channels_last) model->SetChannelsLast(true);
      return model;
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
  if (placement->channels_last) ConvertLayout(model->parameters(), placement->format());
  return std::make_unique<DeepLabModel>(*std::move(net),
                                        format == WeightsFormat::kRandom ? "random init" : path,
                                        *std::move(placement));
}

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

const char* PrecisionName(torch::ScalarType dtype) {
  return dtype == torch::kBFloat16 ? "bf16" : dtype == torch::kHalf ? "fp16" : "fp32";
}

absl::StatusOr<torch::Tensor> SegmentationModel::Forward(const torch::Tensor& input) {
  if (!input.defined() || input.dim() != 4 || input.size(1) != 3 ||
      input.scalar_type() != torch::kFloat32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model input must be an NCHW float32 tensor with 3 channels, got ",
        input.defined() ? absl::StrCat("sizes ", c10::str(input.sizes()), " of type ",
                                       c10::toString(input.scalar_type()))
                        : std::string("no tensor")));
  }
  try {
    torch::InferenceMode guard;
    absl::StatusOr<torch::Tensor> out = Run(input.to(device(), dtype()).contiguous(
        channels_last() ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous));
    if (!out.ok()) return out.status();
    return out->to(torch::kCPU, torch::kFloat32).contiguous();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("forward failed: ", e.what_without_backtrace()));
  }
}

torch::Tensor MakePrecisionCheckInput(int height, int width) {
  torch::NoGradGuard no_grad;
  const double pi = 3.14159265358979;
  torch::Tensor y = torch::linspace(0, 1, height, torch::kFloat64).view({height, 1});
  torch::Tensor x = torch::linspace(0, 1, width, torch::kFloat64).view({1, width});
  torch::Tensor image = torch::stack({0.6 * torch::sin(2 * pi * (1.3 * x + 0.7 * y)),
                                      0.6 * torch::cos(2 * pi * (0.9 * x - 1.1 * y)),
                                      0.5 * torch::sin(2 * pi * (2.0 * x * y + 0.3))});
  // Flat-coloured boxes and discs with sharp edges, placed in fractions of the size.
  const double shapes[][6] = {{0.10, 0.15, 0.30, 0.25, 0.9, -0.8}, {0.55, 0.10, 0.25, 0.35, -0.9, 0.7},
                              {0.20, 0.60, 0.20, 0.20, 0.1, 0.9},  {0.60, 0.60, 0.30, 0.25, -0.5, -0.9}};
  for (const auto& s : shapes) {
    const torch::Tensor inside = (x >= s[0]) & (x < s[0] + s[2]) & (y >= s[1]) & (y < s[1] + s[3]);
    image = torch::where(inside, torch::tensor({s[4], s[5], -s[4]}, torch::kFloat64).view({3, 1, 1}),
                         image);
    const torch::Tensor disc = (x - s[1]).square() + (y - s[0]).square() < s[3] * s[3] / 4;
    image = torch::where(disc, torch::tensor({-s[5], s[4], s[5]}, torch::kFloat64).view({3, 1, 1}),
                         image);
  }
  return image.clamp(-1, 1).to(torch::kFloat32).unsqueeze(0).contiguous();
}

absl::StatusOr<std::unique_ptr<SegmentationModel>> LoadSegmentationModel(
    const ModelSpec& spec, WeightsFormat format, const std::string& path,
    const RuntimeOptions& options) {
  if (options.precision != Precision::kAuto) {
    absl::StatusOr<std::unique_ptr<ModelBase>> model =
        LoadWithPlacement(spec, format, path, options);
    if (!model.ok()) return model.status();
    return std::unique_ptr<SegmentationModel>(*std::move(model));
  }
  // kAuto: load in fp32, label the check input, convert, label it again, and keep the
  // conversion only if the labels agree.
  RuntimeOptions fp32 = options;
  fp32.precision = Precision::kFp32;
  absl::StatusOr<std::unique_ptr<ModelBase>> model = LoadWithPlacement(spec, format, path, fp32);
  if (!model.ok()) return model.status();
  std::string why_fp32;
  const Precision candidate =
      AutoCandidate((*model)->device(), options.force_precision, &why_fp32);
  if (candidate == Precision::kFp32) {
    (*model)->SetNote(why_fp32);
    return std::unique_ptr<SegmentationModel>(*std::move(model));
  }
  const torch::ScalarType dtype = candidate == Precision::kFp16 ? torch::kHalf : torch::kBFloat16;
  const torch::Tensor input = options.precision_check_input.defined()
                                  ? options.precision_check_input
                                  : MakePrecisionCheckInput(256, 256);
  absl::StatusOr<torch::Tensor> reference = (*model)->Forward(input);
  if (!reference.ok()) return reference.status();
  const std::vector<torch::Tensor> saved = (*model)->Snapshot();
  (*model)->ConvertTo(dtype, "");
  absl::StatusOr<torch::Tensor> scores = (*model)->Forward(input);
  if (!scores.ok()) return scores.status();
  const bool finite = torch::isfinite(*scores).all().item<bool>();
  const double agreement =
      reference->argmax(1).eq(scores->argmax(1)).to(torch::kFloat64).mean().item<double>();
  if (finite && agreement >= options.min_label_agreement) {
    (*model)->SetNote(absl::StrFormat(" (auto: labels agree with fp32 on %.2f%% of the check input)",
                                      100 * agreement));
    return std::unique_ptr<SegmentationModel>(*std::move(model));
  }
  // Not good enough for these weights: back to the fp32 values saved before the conversion
  // (converting back would keep the candidate's rounding).
  (*model)->ConvertTo(torch::kFloat32, "");
  (*model)->Restore(saved);
  (*model)->SetNote(
      finite ? absl::StrFormat(" (auto: %s labels agreed with fp32 on %.2f%% of the check input, "
                               "below %.2f%%)",
                               PrecisionName(dtype), 100 * agreement,
                               100 * options.min_label_agreement)
             : absl::StrCat(" (auto: ", PrecisionName(dtype),
                            " produced non-finite scores on the check input)"));
  return std::unique_ptr<SegmentationModel>(*std::move(model));
}

}  // namespace deeplab
