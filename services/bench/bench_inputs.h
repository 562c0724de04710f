// What deeplab-bench sends: the images (encoded files, read once), the outputs asked for,
// and the lists of steps given on the command line. Every failure is INVALID_ARGUMENT with
// a message that names the flag or file, since it is always the caller's input.
#ifndef DEEPLAB_SERVICES_BENCH_BENCH_INPUTS_H_
#define DEEPLAB_SERVICES_BENCH_BENCH_INPUTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "deeplab/v1/common.pb.h"

namespace deeplab::bench {

struct BenchImage {
  std::string path;
  std::string encoded;
};

// `file` alone, or every image in `dir` (recognised by its header, sorted by name; other
// files are skipped). Exactly one of the two must be non-empty.
absl::StatusOr<std::vector<BenchImage>> LoadImages(const std::string& file, const std::string& dir);

// Names from --outputs: label_png, label_raw, probabilities, overlay_png, class_stats.
absl::StatusOr<v1::OutputOptions> ParseOutputs(const std::vector<std::string>& names);

// "1,2,4" (already split by the flag): positive integers / positive numbers.
absl::StatusOr<std::vector<int>> ParsePositiveInts(const std::string& flag,
                                                   const std::vector<std::string>& values);
absl::StatusOr<std::vector<double>> ParsePositiveNumbers(const std::string& flag,
                                                         const std::vector<std::string>& values);

}  // namespace deeplab::bench

#endif  // DEEPLAB_SERVICES_BENCH_BENCH_INPUTS_H_
