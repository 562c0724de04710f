#include "common/model_info.h"

namespace deeplab {

v1::ModelInfo ModelInfoFromConfig(const std::string& name, const v1::ModelConfig& config) {
  v1::ModelInfo info;
  info.set_name(name);
  info.set_description(config.description());
  info.set_num_classes(config.architecture().num_classes());
  *info.mutable_class_names() = config.class_names();
  info.set_input_height(config.input().height());
  info.set_input_width(config.input().width());
  info.set_tile_stride(config.has_tiling() ? config.tiling().stride() : 0);
  info.set_max_batch_size(config.batching().max_batch_size());
  info.set_backbone(config.architecture().backbone());
  return info;
}

}  // namespace deeplab
