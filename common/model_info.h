// What the public API says of a weight set (ModelInfo) from its config: shared by the
// gateway's ListModels and deeplab-bench's direct-to-worker mode, so both describe a weight
// set the same way.
#ifndef DEEPLAB_COMMON_MODEL_INFO_H_
#define DEEPLAB_COMMON_MODEL_INFO_H_

#include <string>

#include "deeplab/v1/model_config.pb.h"
#include "deeplab/v1/segmentation.pb.h"

namespace deeplab {

// Name, description, classes, input size, tiling, batching and backbone; readiness and
// workers are left for the caller.
v1::ModelInfo ModelInfoFromConfig(const std::string& name, const v1::ModelConfig& config);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_MODEL_INFO_H_
