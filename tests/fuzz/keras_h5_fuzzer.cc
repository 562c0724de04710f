// Keras HDF5 weight file bytes: LoadKerasH5 into the demo network. HDF5 opens files by
// path, so each input is written to the scratch folder first. Property: a refusal is never
// INTERNAL or UNKNOWN. The file is read in this process (not in the child LoadKerasH5 forks
// by default), so that libFuzzer sees the coverage and ASan the faults; faults inside
// libhdf5 itself are what that child contains (scripts/fuzz.sh reports them apart).
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/fuzz_model.h"
#include "workers/weights/keras_h5.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  deeplab::DeepLabV3Plus& model = deeplab::fuzz::FuzzModel();
  const std::string path = deeplab::fuzz::WriteScratchFile("input.h5", data, size);
  deeplab::KerasH5Options in_process;
  in_process.isolate = false;
  const absl::Status loaded = deeplab::LoadKerasH5(path, model, in_process);
  if (!loaded.ok()) deeplab::fuzz::CheckInputError(loaded);
  return 0;
}
