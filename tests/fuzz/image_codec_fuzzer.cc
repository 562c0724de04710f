// Encoded image bytes, as a request's image.encoded: ProbeImageHeader, DecodeImage, and
// DecodeImageAtLeast (a JPEG decoded at a reduced scale: the result covers the minimum and
// reports the same original size as the full decode).
// Properties: errors are the caller's (INVALID_ARGUMENT) or memory (RESOURCE_EXHAUSTED); a
// decoded image is 8-bit RGB of the size the header promised (sides swapped by an EXIF or
// TIFF orientation that turns it); nothing is decoded that the probe refused. A JPEG that
// DecodeJpegInBands takes decodes to exactly OpenCV's reduced decode of the whole file.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/image_codec.h"
#include "common/jpeg_bands.h"
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

  // Bands on three threads, at any size: the same pixels as libjpeg's whole reduced decode.
  if (header->format == "jpeg") {
    deeplab::JpegBandOptions bands;
    bands.max_threads = 3;
    bands.min_pixels = 0;
    const std::optional<cv::Mat> banded = deeplab::DecodeJpegInBands(bytes, 4, bands);
    if (banded) {
      const cv::Mat bgr =
          cv::imdecode(std::vector<uchar>(data, data + size),
                       cv::IMREAD_REDUCED_COLOR_4 | cv::IMREAD_IGNORE_ORIENTATION);
      DEEPLAB_FUZZ_CHECK(!bgr.empty(), "bands decoded a JPEG that OpenCV refuses");
      cv::Mat whole;
      cv::cvtColor(bgr, whole, cv::COLOR_BGR2RGB);
      DEEPLAB_FUZZ_CHECK(whole.size() == banded->size() && cv::norm(whole, *banded, cv::NORM_INF) == 0,
                         absl::StrCat("bands differ from the whole decode: ", banded->cols, "x",
                                      banded->rows, " against ", whole.cols, "x", whole.rows));
    }
  }

  // The same bytes for a small network input: a quarter of each side at least.
  const absl::StatusOr<deeplab::DecodedImage> reduced = deeplab::DecodeImageAtLeast(
      bytes, limits, [](int height, int width) { return cv::Size((width + 3) / 4, (height + 3) / 4); });
  if (!reduced.ok()) {
    // A reduced JPEG decode reads fewer coefficients, but a file the full decode took must
    // not fail it for anything but memory.
    DEEPLAB_FUZZ_CHECK(absl::IsResourceExhausted(reduced.status()), reduced.status().ToString());
    return 0;
  }
  DEEPLAB_FUZZ_CHECK(reduced->height == rgb->rows && reduced->width == rgb->cols,
                     absl::StrCat("reduced decode reports ", reduced->width, "x", reduced->height,
                                  ", full ", rgb->cols, "x", rgb->rows));
  DEEPLAB_FUZZ_CHECK(reduced->rgb.type() == CV_8UC3 &&
                         reduced->rgb.cols >= (rgb->cols + 3) / 4 &&
                         reduced->rgb.rows >= (rgb->rows + 3) / 4,
                     absl::StrCat("reduced to ", reduced->rgb.cols, "x", reduced->rgb.rows,
                                  " from ", rgb->cols, "x", rgb->rows));
  return 0;
}
