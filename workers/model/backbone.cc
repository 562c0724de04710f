#include "workers/model/backbone.h"

namespace deeplab {

const BackboneRegistry& BackboneRegistry::Get() {
  static const BackboneRegistry* registry = new BackboneRegistry();
  return *registry;
}

BackboneRegistry::BackboneRegistry() {
  // Registered explicitly rather than by static initialisers, which a static library's
  // linker would silently drop.
  Add(Xception65BackboneInfo());
  Add(MobileNetV2BackboneInfo());
  Add(ResNetBackboneInfo(50));
  Add(ResNetBackboneInfo(101));
}

void BackboneRegistry::Add(BackboneInfo info) { backbones_[info.name] = std::move(info); }

const BackboneInfo* BackboneRegistry::Find(const std::string& name) const {
  auto it = backbones_.find(name);
  return it == backbones_.end() ? nullptr : &it->second;
}

std::vector<std::string> BackboneRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, info] : backbones_) names.push_back(name);
  return names;
}

}  // namespace deeplab
