#include "services/bench/bench_inputs.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/image_codec.h"

namespace deeplab::bench {
namespace {

absl::StatusOr<std::string> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Positive values up to a billion (no step needs more, and it keeps a typo's 1e99 out).
template <typename T>
absl::StatusOr<std::vector<T>> ParsePositive(const std::string& flag,
                                             const std::vector<std::string>& values,
                                             const char* what) {
  std::vector<T> out;
  for (const std::string& v : values) {
    T x{};
    bool parsed = false;
    if constexpr (std::is_integral_v<T>) {
      parsed = absl::SimpleAtoi(v, &x);
    } else {
      parsed = absl::SimpleAtod(v, &x);
    }
    if (!parsed || !(x > 0) || x > static_cast<T>(1e9)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", v, "' is not a positive ", what));
    }
    out.push_back(x);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<BenchImage>> LoadImages(const std::string& file,
                                                   const std::string& dir) {
  if (file.empty() == dir.empty()) {
    return absl::InvalidArgumentError("give exactly one of --image FILE and --images DIR");
  }
  std::vector<BenchImage> images;
  if (!file.empty()) {
    absl::StatusOr<std::string> bytes = ReadBytes(file);
    if (!bytes.ok()) return bytes.status();
    // Checked here so that a typo is a clear error, not a run full of INVALID_ARGUMENT.
    if (auto header = ProbeImageHeader(*bytes); !header.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": ", header.status().message()));
    }
    images.push_back({file, *std::move(bytes)});
    return images;
  }
  std::error_code error;
  std::vector<std::string> paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    if (entry.is_regular_file()) paths.push_back(entry.path().string());
  }
  if (error)
    return absl::InvalidArgumentError(absl::StrCat("cannot list ", dir, ": ", error.message()));
  std::sort(paths.begin(), paths.end());
  for (const std::string& path : paths) {
    absl::StatusOr<std::string> bytes = ReadBytes(path);
    if (bytes.ok() && ProbeImageHeader(*bytes).ok()) images.push_back({path, *std::move(bytes)});
  }
  if (images.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, " holds no image (JPEG, PNG, BMP, TIFF or WebP, recognised by content)"));
  }
  return images;
}

absl::StatusOr<v1::OutputOptions> ParseOutputs(const std::vector<std::string>& names) {
  v1::OutputOptions outputs;
  for (const std::string& name : names) {
    if (name == "label_png") {
      outputs.set_label_png(true);
    } else if (name == "label_raw") {
      outputs.set_label_raw(true);
    } else if (name == "probabilities") {
      outputs.set_probabilities(true);
    } else if (name == "overlay_png") {
      outputs.set_overlay_png(true);
    } else if (name == "class_stats") {
      outputs.set_class_stats(true);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--outputs: unknown output '", name,
                       "'; choose from label_png, label_raw, probabilities, overlay_png, "
                       "class_stats"));
    }
  }
  if (names.empty()) {
    return absl::InvalidArgumentError("--outputs must name at least one output");
  }
  return outputs;
}

absl::StatusOr<std::vector<int>> ParsePositiveInts(const std::string& flag,
                                                   const std::vector<std::string>& values) {
  return ParsePositive<int>(flag, values, "integer (give e.g. 1,2,4,8)");
}

absl::StatusOr<std::vector<double>> ParsePositiveNumbers(const std::string& flag,
                                                         const std::vector<std::string>& values) {
  return ParsePositive<double>(flag, values, "number (give e.g. 5,10,20.5)");
}

}  // namespace deeplab::bench
