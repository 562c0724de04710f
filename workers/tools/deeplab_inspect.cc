// deeplab-inspect: prints the size and cost of one network of the model family as JSON.
//   deeplab-inspect --arch xception65 --classes 21 [--output-stride 16] [--input 513x513]
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/cpu_count.h"
#include "workers/model/deeplab.h"
#include "workers/tools/tool_flags.h"
#include "workers/weights/segmentation_model.h"

ABSL_FLAG(std::string, input, "513x513", "Input size HxW for multiply_adds (and --bench)");
ABSL_FLAG(int, bench, 0,
          "If > 0, also time this many forward passes per runtime variant (fp32 as built, "
          "BatchNorm folded, channels-last, bf16) side by side and print the median ms");
ABSL_FLAG(int, batch, 1, "Batch size for --bench");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads for --bench; 0: one per core");

namespace {

// Median milliseconds of `runs` forward passes of the spec's network (random weights from a
// fixed seed, so every variant computes the same function) under the given options.
absl::StatusOr<double> TimeVariant(const deeplab::ModelSpec& spec,
                                   const deeplab::RuntimeOptions& options, int runs, int batch,
                                   int64_t height, int64_t width) {
  torch::manual_seed(0);
  auto model = deeplab::LoadSegmentationModel(spec, deeplab::WeightsFormat::kRandom, "", options);
  if (!model.ok()) return model.status();
  torch::Tensor x = torch::randn({batch, 3, height, width});
  if (auto warm = (*model)->Forward(x); !warm.ok()) return warm.status();
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    if (auto out = (*model)->Forward(x); !out.ok()) return out.status();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                           start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// "\"timings_ms\": {...}" for the --bench variants, each against the same network.
std::string BenchJson(const deeplab::ModelSpec& spec, int runs, int batch, int64_t height,
                      int64_t width) {
  struct Variant {
    const char* name;
    bool fold, channels_last;
    deeplab::Precision precision;
  };
  const Variant variants[] = {
      {"fp32_nchw", false, false, deeplab::Precision::kFp32},
      {"fp32_nchw_bn_folded", true, false, deeplab::Precision::kFp32},
      {"fp32_channels_last", false, true, deeplab::Precision::kFp32},
      {"fp32_channels_last_bn_folded", true, true, deeplab::Precision::kFp32},
      {"bf16_channels_last_bn_folded", true, true, deeplab::Precision::kBf16},
  };
  std::string json = absl::StrCat(", \"bench\": {\"batch\": ", batch, ", \"threads\": ",
                                  at::get_num_threads(), ", \"cpu_native_bf16\": ",
                                  deeplab::CpuHasNativeBf16() ? "true" : "false",
                                  ", \"median_ms\": {");
  for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); ++i) {
    deeplab::RuntimeOptions options;
    options.fold_batch_norm = variants[i].fold;
    options.channels_last = variants[i].channels_last;
    options.precision = variants[i].precision;
    options.force_precision = true;  // measure bf16 even where it is emulated
    absl::StatusOr<double> ms = TimeVariant(spec, options, runs, batch, height, width);
    absl::StrAppend(&json, i ? ", " : "", "\"", variants[i].name, "\": ",
                    ms.ok() ? absl::StrCat(*ms) : "null");
  }
  return json + "}}";
}

}  // namespace

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
  std::string bench;
  if (absl::GetFlag(FLAGS_bench) > 0) {
    const int threads = absl::GetFlag(FLAGS_threads);
    at::set_num_threads(threads > 0 ? threads : deeplab::UsableCores().usable);
    bench = BenchJson(s, absl::GetFlag(FLAGS_bench), std::max(1, absl::GetFlag(FLAGS_batch)),
                      size->first, size->second);
  }
  std::cout << absl::StrCat(
                   "{\"arch\": \"", s.backbone, "\", \"classes\": ", s.num_classes,
                   ", \"output_stride\": ", s.output_stride, ", \"alpha\": ", s.alpha,
                   ", \"decoder\": ", s.decoder == 1 ? "true" : "false",
                   ", \"logits_layer\": \"", s.logits_layer_name, "\", \"input\": [",
                   size->first, ", ", size->second,
                   "], \"parameters_trainable\": ", params.trainable,
                   ", \"parameters_total\": ", params.total,
                   ", \"parameters_bn_folded\": ", params.bn_folded, ", \"multiply_adds\": ", macs, bench, "}")
            << std::endl;
  return 0;
}
