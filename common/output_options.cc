#include "common/output_options.h"

#include "absl/strings/str_cat.h"

namespace deeplab {

absl::Status ValidateOutputOptions(const v1::OutputOptions& options) {
  const float alpha = options.overlay_alpha();
  if (!(alpha >= 0.0f && alpha <= 1.0f)) {  // false for NaN too
    return absl::InvalidArgumentError(absl::StrCat(
        "outputs.overlay_alpha must be between 0 and 1 (0: the default, 0.5), got ", alpha));
  }
  return absl::OkStatus();
}

}  // namespace deeplab
