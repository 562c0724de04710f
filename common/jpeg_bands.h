// Reduced JPEG decoding on several threads, for JPEGs with restart markers.
//
// A baseline JPEG's entropy-coded data must be read from the first bit to the last, whatever
// the output scale: at 1/4 or 1/8 that Huffman decoding is most of the work, and one thread
// does it. Restart markers (which phone cameras write, typically one per row of MCUs) end
// every N MCUs with a reset of the decoder's state, so the image can be cut there into
// horizontal bands that libjpeg decodes independently, each as a JPEG of its own: the frame
// header with the band's height, the band's slice of the data, and an end marker.
//
// At 1/2, 1/4 and 1/8 scale libjpeg reconstructs the subsampled chroma by a larger inverse
// DCT instead of upsampling, so no output row depends on a neighbouring band: the bands put
// together are the whole reduced decode, byte for byte (tests/common/image_codec_test.cc
// compares them with OpenCV's reduced decode, and the image codec fuzzer does too).
#ifndef DEEPLAB_COMMON_JPEG_BANDS_H_
#define DEEPLAB_COMMON_JPEG_BANDS_H_

#include <cstdint>
#include <opencv2/core.hpp>
#include <optional>
#include <string_view>

namespace deeplab {

struct JpegBandOptions {
  // Threads (bands) for one image at most; 0: the machine's hardware threads, at most 8.
  int max_threads = 0;
  // Smaller images decode on one thread: a few milliseconds are not worth the threads.
  int64_t min_pixels = 2'000'000;
};

// Decodes `bytes` at 1/`reduction` scale (2, 4 or 8) into 8-bit RGB, as stored (no EXIF
// orientation), in bands on up to options.max_threads threads.
//
// Returns nullopt whenever the file is not one this decodes exactly as a whole libjpeg decode
// would, and the caller decodes it the usual way: not a single-scan baseline (Huffman, 8-bit)
// JPEG of 1 or 3 components with 4:4:4, 4:2:2 or 4:2:0 sampling; no restart markers, or not
// where the frame says they must be; too small, one thread only, or no place to cut; and any
// error or warning from libjpeg in any band (corrupt data): the usual decode then decides
// what the caller is told. The caller checks limits and the file's structure first.
// `bands`, when not null, is set to the number of bands of a decode that succeeded.
std::optional<cv::Mat> DecodeJpegInBands(std::string_view bytes, int reduction,
                                         const JpegBandOptions& options = {}, int* bands = nullptr);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_JPEG_BANDS_H_
