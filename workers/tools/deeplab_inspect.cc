// deeplab-inspect: prints the size and cost of one network of the model family as JSON.
//   deeplab-inspect --arch xception65 --classes 21 [--output-stride 16] [--input 513x513]
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "workers/model/deeplab.h"
#include "workers/tools/tool_flags.h"

ABSL_FLAG(std::string, input, "513x513", "Input size HxW for multiply_adds");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Prints one JSON object describing a DeepLabv3+ network: parameters and multiply-adds.\n"
      "Usage: deeplab-inspect --arch ARCH --classes N [--output-stride 8|16] [--alpha A] "
      "[--input HxW]");
  deeplab::ParseToolCommandLine(argc, argv);

  absl::StatusOr<deeplab::ModelSpec> spec = deeplab::ModelSpecFromFlags();
  absl::StatusOr<std::pair<int64_t, int64_t>> size =
      deeplab::ParseImageSize(absl::GetFlag(FLAGS_input));
  if (!spec.ok() || !size.ok()) {
    std::cerr << "deeplab-inspect: " << (spec.ok() ? size.status() : spec.status()).message()
              << "\n";
    return 2;
  }
  absl::StatusOr<deeplab::DeepLabV3Plus> model = deeplab::BuildDeepLabV3Plus(*spec);
  if (!model.ok()) {
    std::cerr << "deeplab-inspect: " << model.status().message() << "\n";
    return 2;
  }
  const deeplab::ModelSpec& s = (*model)->spec();
  const deeplab::ParameterCounts params = deeplab::CountParameters(**model);
  const int64_t macs = deeplab::CountMultiplyAdds(*model, size->first, size->second);
  std::cout << absl::StrCat(
                   "{\"arch\": \"", s.backbone, "\", \"classes\": ", s.num_classes,
                   ", \"output_stride\": ", s.output_stride, ", \"alpha\": ", s.alpha,
                   ", \"decoder\": ", s.decoder == 1 ? "true" : "false",
                   ", \"logits_layer\": \"", s.logits_layer_name, "\", \"input\": [",
                   size->first, ", ", size->second,
                   "], \"parameters_trainable\": ", params.trainable,
                   ", \"parameters_total\": ", params.total,
                   ", \"parameters_bn_folded\": ", params.bn_folded, ", \"multiply_adds\": ", macs, "}")
            << std::endl;
  return 0;
}
