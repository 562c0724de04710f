// config.pbtxt text, as a weight set's folder holds it: LoadModelConfig (parse, validate,
// fill defaults), then what the gateway and worker derive from a loaded config. The folder
// is named "fuzz", so the seeds say name: "fuzz". Properties: a refusal is INVALID_ARGUMENT;
// a loaded config validates again, has positive batching limits and a colour per class.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/model_info.h"
#include "tests/fuzz/fuzz_util.h"
#include "workers/repository/model_repository.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string file = deeplab::fuzz::WriteScratchFile("fuzz/config.pbtxt", data, size);
  const std::string dir = file.substr(0, file.rfind('/'));
  const absl::StatusOr<deeplab::v1::ModelConfig> config = deeplab::LoadModelConfig(dir);
  if (!config.ok()) {
    DEEPLAB_FUZZ_CHECK(absl::IsInvalidArgument(config.status()), config.status().ToString());
    return 0;
  }
  const absl::Status again = deeplab::ValidateModelConfig(*config, "loaded config");
  DEEPLAB_FUZZ_CHECK(again.ok(), again.ToString());
  const deeplab::v1::BatchingConfig& batching = config->batching();
  DEEPLAB_FUZZ_CHECK(batching.max_batch_size() > 0 && batching.max_queue_size() > 0 &&
                         batching.default_timeout_micros() > 0,
                     batching.ShortDebugString());
  const int classes = config->architecture().num_classes();
  DEEPLAB_FUZZ_CHECK(config->palette_size() >= classes,
                     absl::StrCat(config->palette_size(), " colours for ", classes, " classes"));
  DEEPLAB_FUZZ_CHECK(deeplab::ResolvePalette(*config).size() >= static_cast<size_t>(classes),
                     "ResolvePalette");
  const deeplab::v1::ModelInfo info = deeplab::ModelInfoFromConfig("fuzz", *config);
  DEEPLAB_FUZZ_CHECK(info.class_names_size() == classes, info.ShortDebugString());
  return 0;
}
