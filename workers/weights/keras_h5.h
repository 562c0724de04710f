// Import of Keras HDF5 weight files (keras-deeplab-v3-plus, DigiPathAI) into DeepLabV3Plus.
//
// Both layouts Keras writes are read: model.save_weights() (layers at the root) and
// model.save() (layers under /model_weights). The import is strict: every tensor of the model
// must be in the file with its exact shape and every tensor of the file must be used;
// otherwise the error names the first missing, extra or mis-shaped tensor and the file.
// Stateless functions; safe to call from several threads on different models (each read
// runs in its own child process).
#ifndef DEEPLAB_WORKERS_WEIGHTS_KERAS_H5_H_
#define DEEPLAB_WORKERS_WEIGHTS_KERAS_H5_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "workers/model/deeplab.h"

namespace deeplab {

// Where one PyTorch tensor of the model lives in a Keras file, and how to transpose it.
struct KerasWeightRef {
  enum class Layout {
    kVector,          // BatchNorm vectors and biases: unchanged
    kConvKernel,      // Keras (kh, kw, in, out) -> PyTorch (out, in, kh, kw)
    kDepthwiseKernel  // Keras (kh, kw, C, 1)    -> PyTorch (C, 1, kh, kw)
  };
  std::string layer;     // e.g. "entry_flow_block1_separable_conv1_depthwise"
  std::string variable;  // e.g. "depthwise_kernel", "gamma", "moving_mean"
  Layout layout = Layout::kVector;
  std::vector<int64_t> keras_shape;
};

// The Keras layer name of a module path: the path below the top-level part (backbone, aspp,
// decoder, head) with '.' replaced by '_'. "aspp.aspp1.depthwise_BN" -> "aspp1_depthwise_BN".
std::string KerasLayerName(const std::string& module_path);

// Every float tensor of the model (parameters and BatchNorm running statistics), keyed by its
// state-dict name, with its place in a Keras file.
std::map<std::string, KerasWeightRef> KerasWeightMap(DeepLabV3Plus& model);

struct KerasH5Options {
  // Read the file in a forked child process. libhdf5 (1.10, Debian 12) is not safe against
  // damaged files: fuzzing found inputs that make it read out of bounds, crash or loop
  // forever inside the library. Isolated, such a file becomes an error for this one load
  // (DATA_LOSS after a crash, DEADLINE_EXCEEDED after `timeout`) and the caller, a worker
  // serving other weight sets, goes on. Off only where the caller wants the crash itself:
  // the fuzzer.
  bool isolate = true;
  absl::Duration timeout = absl::Minutes(5);
};

// Loads the file's weights into the model. The model is changed only when every tensor was
// read; an error names the first missing, extra or mis-shaped tensor and the file.
absl::Status LoadKerasH5(const std::string& path, DeepLabV3Plus& model,
                         const KerasH5Options& options = {});

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_WEIGHTS_KERAS_H5_H_
