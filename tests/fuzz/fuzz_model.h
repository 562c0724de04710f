// The network the weight-file fuzzers load into: the demo weight set's architecture
// (models/demo/config.pbtxt), the smallest of the family, so that seeds can be cut from
// models/demo/demo.dlck and its Keras names match tests/tools/make_keras_h5.py's at alpha 0.5.
#ifndef DEEPLAB_TESTS_FUZZ_FUZZ_MODEL_H_
#define DEEPLAB_TESTS_FUZZ_FUZZ_MODEL_H_

#include "tests/fuzz/fuzz_util.h"
#include "workers/model/deeplab.h"

namespace deeplab::fuzz {

// Built once; every run loads into the same one (a failed load may leave it half written,
// which the next load does not care about).
inline DeepLabV3Plus& FuzzModel() {
  static DeepLabV3Plus* model = [] {
    torch::set_num_threads(1);  // tensors of a few KB: threads would only add noise
    ModelSpec spec;
    spec.backbone = "mobilenetv2";
    spec.num_classes = 5;
    spec.output_stride = 16;
    spec.alpha = 0.5;
    spec.decoder = 1;
    spec.head_channels = 64;
    absl::StatusOr<DeepLabV3Plus> built = BuildDeepLabV3Plus(spec);
    DEEPLAB_FUZZ_CHECK(built.ok(), built.status().ToString());
    return new DeepLabV3Plus(*std::move(built));
  }();
  return *model;
}

}  // namespace deeplab::fuzz

#endif  // DEEPLAB_TESTS_FUZZ_FUZZ_MODEL_H_
