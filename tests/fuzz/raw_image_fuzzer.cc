// Raw pixels, as a request's image.raw, through DecodeImageMessage (the worker's entry).
// Input layout (little-endian): int32 height, int32 width, int8 channels, then the pixel
// bytes; shorter inputs are zero-padded. Properties: a refusal is INVALID_ARGUMENT; an
// accepted image is a new 8-bit RGB buffer of height x width whose pixels are the input's
// (grey repeated, alpha dropped); one pixel or one byte less in the limits refuses it.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/image_codec.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

constexpr size_t kHeaderBytes = 9;

int32_t ReadInt32(const uint8_t* p) {
  const uint32_t u =
      uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
  int32_t value;
  std::memcpy(&value, &u, sizeof(value));
  return value;
}

// The RGB value raw pixel i must become.
void ExpectedPixel(const std::string& data, int channels, size_t i, uint8_t out[3]) {
  const auto* p = reinterpret_cast<const uint8_t*>(data.data()) + i * channels;
  for (int c = 0; c < 3; ++c) out[c] = channels == 1 ? p[0] : p[c];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint8_t header[kHeaderBytes] = {};
  std::memcpy(header, data, size < kHeaderBytes ? size : kHeaderBytes);
  deeplab::v1::Image image;
  deeplab::v1::RawImage& raw = *image.mutable_raw();
  raw.set_height(ReadInt32(header));
  raw.set_width(ReadInt32(header + 4));
  raw.set_channels(static_cast<int8_t>(header[8]));
  if (size > kHeaderBytes) {
    raw.set_data(reinterpret_cast<const char*>(data) + kHeaderBytes, size - kHeaderBytes);
  }

  const deeplab::ImageLimits limits;
  const absl::StatusOr<cv::Mat> rgb = deeplab::DecodeImageMessage(image, limits);
  if (!rgb.ok()) {
    DEEPLAB_FUZZ_CHECK(absl::IsInvalidArgument(rgb.status()), rgb.status().ToString());
    return 0;
  }
  const std::string where = absl::StrCat(raw.height(), "x", raw.width(), "x", raw.channels(), " (",
                                         raw.data().size(), " bytes)");
  DEEPLAB_FUZZ_CHECK(rgb->type() == CV_8UC3 && rgb->isContinuous(), where);
  DEEPLAB_FUZZ_CHECK(rgb->rows == raw.height() && rgb->cols == raw.width(), where);
  const auto* begin = reinterpret_cast<const uint8_t*>(raw.data().data());
  DEEPLAB_FUZZ_CHECK(
      rgb->data + rgb->total() * 3 <= begin || rgb->data >= begin + raw.data().size(),
      "the result aliases the request: " + where);
  for (size_t i = 0; i < rgb->total(); ++i) {
    uint8_t want[3];
    ExpectedPixel(raw.data(), raw.channels(), i, want);
    DEEPLAB_FUZZ_CHECK(std::memcmp(rgb->data + 3 * i, want, 3) == 0,
                       absl::StrCat("pixel ", i, " of ", where));
  }

  deeplab::ImageLimits fewer_pixels = limits;
  fewer_pixels.max_pixels = int64_t{raw.height()} * raw.width() - 1;
  DEEPLAB_FUZZ_CHECK(absl::IsInvalidArgument(deeplab::ImageFromRaw(raw, fewer_pixels).status()),
                     "max_pixels not enforced: " + where);
  deeplab::ImageLimits fewer_bytes = limits;
  fewer_bytes.max_bytes = static_cast<int64_t>(raw.data().size()) - 1;
  DEEPLAB_FUZZ_CHECK(absl::IsInvalidArgument(deeplab::ImageFromRaw(raw, fewer_bytes).status()),
                     "max_bytes not enforced: " + where);
  return 0;
}
