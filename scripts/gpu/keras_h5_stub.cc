// For scripts/gpu_check.sh only: a GPU machine has no HDF5, so the check is built without
// the Keras importer (its weights are random or native checkpoints).
#include "workers/weights/keras_h5.h"

namespace deeplab {

absl::Status LoadKerasH5(const std::string& path, DeepLabV3Plus&, const KerasH5Options&) {
  return absl::UnimplementedError("the GPU check is built without HDF5; cannot read " + path);
}

}  // namespace deeplab
