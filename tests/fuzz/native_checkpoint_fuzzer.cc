// Native checkpoint (.dlck) bytes: ReadNativeCheckpointHeader, then LoadNativeCheckpoint
// into the demo network. Properties: a refusal is never INTERNAL or UNKNOWN; a header that
// loads completely was readable on its own.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/fuzz_model.h"
#include "workers/weights/native_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  deeplab::DeepLabV3Plus& model = deeplab::fuzz::FuzzModel();
  const std::string path = deeplab::fuzz::WriteScratchFile("input.dlck", data, size);
  const absl::StatusOr<deeplab::v1::CheckpointHeader> header =
      deeplab::ReadNativeCheckpointHeader(path);
  if (!header.ok()) deeplab::fuzz::CheckInputError(header.status());
  const absl::Status loaded = deeplab::LoadNativeCheckpoint(path, model);
  if (!loaded.ok()) {
    deeplab::fuzz::CheckInputError(loaded);
  } else {
    DEEPLAB_FUZZ_CHECK(header.ok(), "loaded a checkpoint whose header was refused");
  }
  return 0;
}
