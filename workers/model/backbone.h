// Backbones of the DeepLabv3+ family and the registry that builds them by name.
//
// The feature contract between a backbone and the head: Forward returns the high-level
// feature at the network's output stride (fed to ASPP) and the low-level feature at
// stride 4 (fed to the decoder). Module names below the backbone follow the published
// Keras layer names where weights are published (see KerasLayerName in keras_h5.h).
//
// Backbone modules are not thread-safe to construct; a constructed module in eval mode may
// run Forward from several threads at once (LibTorch's rule for inference).
#ifndef DEEPLAB_WORKERS_MODEL_BACKBONE_H_
#define DEEPLAB_WORKERS_MODEL_BACKBONE_H_

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "workers/model/model_spec.h"

namespace deeplab {

struct BackboneFeatures {
  torch::Tensor low_level;   // stride 4
  torch::Tensor high_level;  // stride = output stride
};

class BackboneImpl : public torch::nn::Module {
 public:
  virtual BackboneFeatures Forward(const torch::Tensor& x) = 0;
  virtual int64_t low_level_channels() const = 0;
  virtual int64_t high_level_channels() const = 0;
};

// What the head needs to know about a backbone before building it.
struct BackboneInfo {
  std::string name;
  int default_output_stride = 16;
  bool default_decoder = true;
  // Xception and ResNet heads have three separable atrous ASPP branches; the published
  // MobileNetV2 head has only the image pooling and 1x1 branches.
  bool aspp_atrous_branches = true;
  // Builds the backbone for a resolved spec.
  std::function<std::shared_ptr<BackboneImpl>(const ModelSpec&)> build;
};

// Process-wide registry of backbones, filled with the built-in ones on first use.
// Thread-safe for lookups after construction (it is immutable once built).
class BackboneRegistry {
 public:
  static const BackboneRegistry& Get();

  const BackboneInfo* Find(const std::string& name) const;
  std::vector<std::string> Names() const;

 private:
  BackboneRegistry();
  void Add(BackboneInfo info);
  std::map<std::string, BackboneInfo> backbones_;
};

// Built-in backbone factories (defined in xception.cc, mobilenetv2.cc, resnet.cc).
BackboneInfo Xception65BackboneInfo();
BackboneInfo MobileNetV2BackboneInfo();
BackboneInfo ResNetBackboneInfo(int depth);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_MODEL_BACKBONE_H_
