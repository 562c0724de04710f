// Encoded image bytes, as a request's image.encoded: ProbeImageHeader and DecodeImage.
// Properties: errors are the caller's (INVALID_ARGUMENT) or memory (RESOURCE_EXHAUSTED); a
// decoded image is 8-bit RGB of the size the header promised (sides swapped by an EXIF or
// TIFF orientation that turns it); nothing is decoded that the probe refused.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "common/image_codec.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<deeplab::ImageHeader> header = deeplab::ProbeImageHeader(bytes);

  // 4 megapixels: the checks are the same at any limit, and each run stays fast.
  deeplab::ImageLimits limits;
  limits.max_pixels = 4 << 20;
  const absl::StatusOr<cv::Mat> rgb = deeplab::DecodeImage(bytes, limits);
  if (!rgb.ok()) {
    DEEPLAB_FUZZ_CHECK(
        absl::IsInvalidArgument(rgb.status()) || absl::IsResourceExhausted(rgb.status()),
        rgb.status().ToString());
    return 0;
  }
  DEEPLAB_FUZZ_CHECK(header.ok(), header.status().ToString());
  DEEPLAB_FUZZ_CHECK(rgb->type() == CV_8UC3, absl::StrCat("type ", rgb->type()));
  const bool same = rgb->cols == header->width && rgb->rows == header->height;
  const bool turned = rgb->cols == header->height && rgb->rows == header->width;
  DEEPLAB_FUZZ_CHECK(same || turned,
                     absl::StrCat(header->format, " header ", header->width, "x", header->height,
                                  ", decoded ", rgb->cols, "x", rgb->rows));
  DEEPLAB_FUZZ_CHECK(rgb->total() <= static_cast<size_t>(limits.max_pixels), "over the limit");
  return 0;
}
