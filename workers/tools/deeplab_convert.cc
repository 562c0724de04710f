// deeplab-convert: turns published Keras weights into our native checkpoint.
//   deeplab-convert --arch xception65 --classes 21 --from voc.h5 --to voc.dlck
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "workers/tools/tool_flags.h"
#include "workers/weights/keras_h5.h"
#include "workers/weights/native_checkpoint.h"

ABSL_FLAG(std::string, from, "", "Keras HDF5 weight file to read");
ABSL_FLAG(std::string, to, "", "Native checkpoint (.dlck) to write");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Converts Keras HDF5 weights (keras-deeplab-v3-plus, DigiPathAI) to a native checkpoint.\n"
      "Usage: deeplab-convert --arch ARCH --classes N [--output-stride 8|16] [--alpha A] "
      "--from FILE.h5 --to FILE.dlck");
  deeplab::ParseToolCommandLine(argc, argv);
  const std::string from = absl::GetFlag(FLAGS_from);
  const std::string to = absl::GetFlag(FLAGS_to);
  if (from.empty() || to.empty()) {
    std::cerr << "deeplab-convert: --from and --to are required\n";
    return 2;
  }
  absl::StatusOr<deeplab::ModelSpec> spec = deeplab::ModelSpecFromFlags();
  absl::StatusOr<deeplab::DeepLabV3Plus> model =
      spec.ok() ? deeplab::BuildDeepLabV3Plus(*spec) : spec.status();
  if (!model.ok()) {
    std::cerr << "deeplab-convert: " << model.status().message() << "\n";
    return 2;
  }
  if (absl::Status s = deeplab::LoadKerasH5(from, *model); !s.ok()) {
    std::cerr << "deeplab-convert: " << s.message() << "\n";
    return 1;
  }
  if (absl::Status s = deeplab::SaveNativeCheckpoint(to, *model, absl::StrCat("keras_h5:", from));
      !s.ok()) {
    std::cerr << "deeplab-convert: " << s.message() << "\n";
    return 1;
  }
  std::cout << "wrote " << to << " (" << deeplab::DescribeModelSpec((*model)->spec()) << ")\n";
  return 0;
}
