// Image decoding and encoding with OpenCV, for the worker (and any client-side tool).
//
// Every failure is INVALID_ARGUMENT with a message a person understands ("the image is
// truncated: a JPEG must end with an EOI marker", "image is 20000x20000 = 400 megapixels,
// over the limit of 50"), because a bad image is always the caller's input, never our bug.
// The one exception is RESOURCE_EXHAUSTED when memory runs out decoding an image within limits.
// Stateless functions; safe to call from any thread.
#ifndef DEEPLAB_COMMON_IMAGE_CODEC_H_
#define DEEPLAB_COMMON_IMAGE_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>

#include <functional>

#include <opencv2/core.hpp>

#include "absl/status/statusor.h"
#include "common/jpeg_bands.h"
#include "deeplab/v1/common.pb.h"

namespace deeplab {

struct ImageLimits {
  // Largest encoded (or raw) image accepted, in bytes.
  int64_t max_bytes = 64 << 20;
  // Largest decoded image, in pixels (width * height), checked from the file header before
  // the pixels are decoded, so a decompression bomb cannot exhaust memory.
  int64_t max_pixels = 50'000'000;
};

// What the header says, read without decoding pixels.
struct ImageHeader {
  std::string format;  // "jpeg", "png", "bmp", "tiff", "webp"
  int64_t width = 0;
  int64_t height = 0;
};

// Recognises JPEG, PNG, BMP, TIFF (both byte orders) and WebP (VP8, VP8L, VP8X) by their
// magic bytes and reads the stored size. INVALID_ARGUMENT for empty input, an unknown
// format, or a header too short or inconsistent to read.
absl::StatusOr<ImageHeader> ProbeImageHeader(std::string_view bytes);

// Decodes an encoded image to 8-bit RGB (CV_8UC3, channels in R, G, B order):
// EXIF orientation applied (JPEG), grey expanded, alpha dropped, 16-bit scaled to 8-bit.
// Checks limits.max_bytes, then the header's size against limits.max_pixels, then decodes;
// a truncated or corrupt file is refused, not returned half grey.
absl::StatusOr<cv::Mat> DecodeImage(std::string_view bytes, const ImageLimits& limits);

// An image decoded for a network input of known size: `rgb` may be smaller than the
// original (`height` x `width`, after EXIF orientation) when a JPEG was decoded at a
// reduced scale (`reduction` 2, 4 or 8: libjpeg's DCT scaling, which skips most of the
// decoding work); otherwise `rgb` is the original and `reduction` 1.
struct DecodedImage {
  cv::Mat rgb;
  int height = 0;
  int width = 0;
  int reduction = 1;
  // Threads the JPEG was decoded on, in bands (common/jpeg_bands.h); 1 for one thread.
  int bands = 1;
};

// The smallest size (cv::Size(width, height)) the caller will resize an image of the given
// original size to; the decoder keeps at least that many pixels on each side.
using MinimumSize = std::function<cv::Size(int height, int width)>;

// DecodeImage, except that a JPEG is decoded at the largest reduction (1/2, 1/4, 1/8) that
// still gives at least `minimum(height, width)`. Other formats, and a null `minimum`,
// decode at full size. Limits, orientation and errors as DecodeImage.
// A large reduced JPEG with restart markers is decoded in bands on several threads
// (common/jpeg_bands.h), with the same pixels as on one.
absl::StatusOr<DecodedImage> DecodeImageAtLeast(std::string_view bytes, const ImageLimits& limits,
                                                const MinimumSize& minimum,
                                                const JpegBandOptions& bands = {});

// The same for raw pixels (1, 3 or 4 interleaved uint8 channels; RGB order).
absl::StatusOr<cv::Mat> ImageFromRaw(const v1::RawImage& raw, const ImageLimits& limits);

// INVALID_ARGUMENT when the image's bytes (encoded, or raw pixels) exceed limits.max_bytes:
// the check DecodeImageMessage makes first, for callers that refuse before decoding (the
// gateway).
absl::Status CheckImageBytes(const v1::Image& image, const ImageLimits& limits);

// Dispatches on the oneof: encoded bytes or raw pixels; an empty Image is an error.
absl::StatusOr<cv::Mat> DecodeImageMessage(const v1::Image& image, const ImageLimits& limits);
// The same with DecodeImageAtLeast for encoded images (raw pixels are never reduced).
absl::StatusOr<DecodedImage> DecodeImageMessageAtLeast(const v1::Image& image,
                                                       const ImageLimits& limits,
                                                       const MinimumSize& minimum,
                                                       const JpegBandOptions& bands = {});

// PNG of an 8-bit image: 1 channel (grey) or 3 channels in R, G, B order, with run-length
// deflate and one filter per row: for grey (label maps) None, or Up (zeros) where a row
// repeats the one above; Sub for colour (overlays). On a 5000x3500 label map that is about
// 0.22 of OpenCV's PNG writer's time and a quarter of its size at level 1
// (docs/BENCHMARKS.md). `compression` is zlib's level 0-9.
// Any other image type is a programming error and gives an empty string.
std::string EncodePng(const cv::Mat& image, int compression = 1);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_IMAGE_CODEC_H_
