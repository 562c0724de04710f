// DecodeJpegInBands: the bands put together are byte for byte OpenCV's (libjpeg's) reduced
// decode of the whole file, and every file it cannot decode that way is left to the caller.
#include "common/jpeg_bands.h"

#include <gtest/gtest.h>
#include <jpeglib.h>

#include <cstdio>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/image_codec.h"
#include "tests/common/test_files.h"

namespace deeplab {
namespace {

// Smooth colour gradients with noise on top: every coefficient of every block is in use, and
// the chroma differs from block to block, so a band that took a wrong neighbour would show.
cv::Mat TestPicture(int width, int height, unsigned seed) {
  cv::Mat rgb(height, width, CV_8UC3);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(-40, 40);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const int base[3] = {x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)};
      for (int c = 0; c < 3; ++c) {
        rgb.at<cv::Vec3b>(y, x)[c] = cv::saturate_cast<uchar>(base[c] + noise(rng));
      }
    }
  }
  return rgb;
}

struct JpegParams {
  int h_sampling = 2;  // of luma; chroma is 1x1
  int v_sampling = 2;
  bool grey = false;
  int restart_rows = 1;  // restart interval in MCU rows (0: use restart_mcus)
  int restart_mcus = 0;  // restart interval in MCUs
  bool progressive = false;
  int quality = 92;
};

// Writes a JPEG with libjpeg directly: OpenCV's writer sets neither the chroma sampling nor
// a progressive mode.
std::string WriteJpeg(const cv::Mat& rgb, const JpegParams& p) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr errors;
  cinfo.err = jpeg_std_error(&errors);
  jpeg_create_compress(&cinfo);
  unsigned char* out = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &out, &size);
  cv::Mat pixels = rgb;
  if (p.grey) cv::cvtColor(rgb, pixels, cv::COLOR_RGB2GRAY);
  cinfo.image_width = static_cast<JDIMENSION>(pixels.cols);
  cinfo.image_height = static_cast<JDIMENSION>(pixels.rows);
  cinfo.input_components = p.grey ? 1 : 3;
  cinfo.in_color_space = p.grey ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, p.quality, TRUE);
  if (!p.grey) {
    cinfo.comp_info[0].h_samp_factor = p.h_sampling;
    cinfo.comp_info[0].v_samp_factor = p.v_sampling;
  }
  cinfo.restart_in_rows = p.restart_rows;
  cinfo.restart_interval = static_cast<unsigned int>(p.restart_mcus);
  if (p.progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = pixels.ptr(static_cast<int>(cinfo.next_scanline));
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string bytes(reinterpret_cast<const char*>(out), size);
  free(out);  // NOLINT: jpeg_mem_dest's buffer comes from malloc
  return bytes;
}

// OpenCV's reduced decode of the whole file, in RGB: what the bands must equal.
cv::Mat OpenCvReduced(const std::string& bytes, int reduction) {
  const int flags = reduction == 2   ? cv::IMREAD_REDUCED_COLOR_2
                    : reduction == 4 ? cv::IMREAD_REDUCED_COLOR_4
                                     : cv::IMREAD_REDUCED_COLOR_8;
  const cv::Mat bgr = cv::imdecode(std::vector<uchar>(bytes.begin(), bytes.end()),
                                   flags | cv::IMREAD_IGNORE_ORIENTATION);
  cv::Mat rgb;
  if (!bgr.empty()) cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

int MaxDiff(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size() || a.type() != b.type()) return 256;
  cv::Mat diff;
  cv::absdiff(a, b, diff);
  return static_cast<int>(cv::norm(diff, cv::NORM_INF));
}

JpegBandOptions Threads(int n) {
  JpegBandOptions options;
  options.max_threads = n;
  options.min_pixels = 0;
  return options;
}

TEST(JpegBandsTest, BandsEqualTheWholeReducedDecodeForEverySamplingScaleAndCut) {
  // Sides that are not multiples of the MCU, so the last band and the last column are partial.
  const cv::Mat picture = TestPicture(517, 389, 1);
  struct Case {
    std::string name;
    JpegParams params;
  };
  std::vector<Case> cases = {
      {"4:2:0, restart every row", {2, 2, false, 1, 0}},
      {"4:2:2, restart every row", {2, 1, false, 1, 0}},
      {"4:4:4, restart every row", {1, 1, false, 1, 0}},
      {"grey, restart every row", {1, 1, true, 1, 0}},
      {"4:2:0, restart every 2 rows", {2, 2, false, 2, 0}},
      // 33 MCUs a row, 11 an interval: a row starts an interval every row, and a cut needs
      // the interval number to be a multiple of 8 as well (every 8th row).
      {"4:2:0, restart every 11 MCUs", {2, 2, false, 0, 11}},
      // 7 MCUs an interval, 33 a row: rows start intervals only every 7th row, and a cut
      // every 56th (so 389 pixels, 25 MCU rows, have no cut and are left to the caller).
      {"4:2:0, restart every 7 MCUs", {2, 2, false, 0, 7}},
  };
  for (const Case& c : cases) {
    const std::string jpeg = WriteJpeg(picture, c.params);
    for (int reduction : {2, 4, 8}) {
      const cv::Mat reference = OpenCvReduced(jpeg, reduction);
      ASSERT_FALSE(reference.empty()) << c.name;
      for (int threads : {2, 3, 5}) {
        const std::optional<cv::Mat> banded = DecodeJpegInBands(jpeg, reduction, Threads(threads));
        const std::string where =
            absl::StrCat(c.name, ", 1/", reduction, ", ", threads, " threads");
        if (c.params.restart_mcus == 7) {
          EXPECT_FALSE(banded.has_value()) << where;
          continue;
        }
        ASSERT_TRUE(banded.has_value()) << where;
        EXPECT_EQ(banded->size(), reference.size()) << where;
        EXPECT_EQ(MaxDiff(*banded, reference), 0) << where;
      }
    }
  }
}

TEST(JpegBandsTest, PhoneJpegsSplitAndMatch) {
  // Both photos have a restart marker after every row of MCUs, as phone cameras write them.
  for (const char* name : {"cat.jpg", "dog_baxter.jpg"}) {
    const std::string jpeg = ReadFile(PhotoPath(name));
    for (int reduction : {4, 8}) {
      const std::optional<cv::Mat> banded = DecodeJpegInBands(jpeg, reduction, Threads(2));
      ASSERT_TRUE(banded.has_value()) << name;
      EXPECT_EQ(MaxDiff(*banded, OpenCvReduced(jpeg, reduction)), 0) << name << " 1/" << reduction;
    }
  }
}

TEST(JpegBandsTest, FilesItCannotSplitExactlyAreLeftToTheCaller) {
  const cv::Mat picture = TestPicture(256, 256, 2);
  const std::string plain = WriteJpeg(picture, JpegParams{});
  ASSERT_TRUE(DecodeJpegInBands(plain, 4, Threads(2)).has_value());

  JpegParams none;
  none.restart_rows = 0;
  EXPECT_FALSE(DecodeJpegInBands(WriteJpeg(picture, none), 4, Threads(2)).has_value())
      << "no restart markers";
  JpegParams progressive;
  progressive.progressive = true;
  EXPECT_FALSE(DecodeJpegInBands(WriteJpeg(picture, progressive), 4, Threads(2)).has_value())
      << "progressive";
  EXPECT_FALSE(DecodeJpegInBands(plain, 1, Threads(2)).has_value()) << "full scale";
  EXPECT_FALSE(DecodeJpegInBands(plain, 3, Threads(2)).has_value()) << "not a DCT scale";
  EXPECT_FALSE(DecodeJpegInBands(plain, 4, Threads(1)).has_value()) << "one thread";
  JpegBandOptions big_only;
  big_only.max_threads = 2;  // min_pixels left at its default
  EXPECT_FALSE(DecodeJpegInBands(plain, 4, big_only).has_value()) << "small image";
  EXPECT_FALSE(DecodeJpegInBands(plain.substr(0, plain.size() / 2), 4, Threads(2)).has_value())
      << "truncated";
  EXPECT_FALSE(DecodeJpegInBands("", 4, Threads(2)).has_value()) << "empty";
  EXPECT_FALSE(DecodeJpegInBands("not a jpeg", 4, Threads(2)).has_value());
}

// The restart markers and the byte offsets after them, in the entropy-coded data.
std::vector<size_t> RestartMarkers(const std::string& jpeg) {
  std::vector<size_t> at;
  const size_t sos = jpeg.find("\xFF\xDA");
  for (size_t i = sos + 2; i + 1 < jpeg.size(); ++i) {
    const auto next = static_cast<unsigned char>(jpeg[i + 1]);
    if (static_cast<unsigned char>(jpeg[i]) == 0xFF && next >= 0xD0 && next <= 0xD7) {
      at.push_back(i);
    }
  }
  return at;
}

TEST(JpegBandsTest, DamagedDataIsLeftToTheCallerAndDecodesAsBefore) {
  const cv::Mat picture = TestPicture(256, 256, 3);
  const std::string jpeg = WriteJpeg(picture, JpegParams{});
  const std::vector<size_t> markers = RestartMarkers(jpeg);
  ASSERT_EQ(markers.size(), 15u);  // 16 rows of 16x16 MCUs

  // A marker out of order, one missing, and one more than the frame has room for.
  std::string swapped = jpeg;
  swapped[markers[3] + 1] = static_cast<char>(0xD5);
  std::string missing = jpeg;
  missing.erase(markers[9], 2);
  std::string extra = jpeg;
  extra.insert(jpeg.size() - 2, "\x11\x22\xFF\xD7", 4);
  // Garbage in the second band's data: libjpeg's warnings fail the band.
  std::string garbage = jpeg;
  for (size_t i = markers[10] + 2; i < markers[10] + 40; ++i) garbage[i] = '\x5A';

  for (const auto& [name, bytes] :
       {std::pair{"out of order", swapped}, std::pair{"missing", missing},
        std::pair{"extra", extra}, std::pair{"garbage", garbage}}) {
    EXPECT_FALSE(DecodeJpegInBands(bytes, 4, Threads(2)).has_value()) << name;
    // DecodeImageAtLeast then answers exactly as OpenCV alone does: the same pixels, or the
    // same refusal.
    const auto minimum = [](int, int) { return cv::Size(64, 64); };
    const absl::StatusOr<DecodedImage> with_bands =
        DecodeImageAtLeast(bytes, ImageLimits{}, minimum, Threads(2));
    const absl::StatusOr<DecodedImage> one_thread =
        DecodeImageAtLeast(bytes, ImageLimits{}, minimum, Threads(1));
    ASSERT_EQ(with_bands.status(), one_thread.status()) << name;
    if (with_bands.ok()) {
      EXPECT_EQ(MaxDiff(with_bands->rgb, one_thread->rgb), 0) << name;
    }
  }
}

TEST(JpegBandsTest, ABandWithNoDataFailsSafely) {
  // 9 rows of MCUs: the only cut is at row 8, so the second band is the last interval alone.
  // Removing that interval's bytes leaves its band no data at all between RST7 and EOI: the
  // band fails (libjpeg meets the end marker where it needs data) and the caller answers as
  // before.
  const std::string jpeg = WriteJpeg(TestPicture(256, 144, 5), JpegParams{});
  const std::vector<size_t> markers = RestartMarkers(jpeg);
  ASSERT_EQ(markers.size(), 8u);
  ASSERT_TRUE(DecodeJpegInBands(jpeg, 4, Threads(2)).has_value());
  const size_t eoi = jpeg.rfind("\xFF\xD9");
  const std::string empty_last = jpeg.substr(0, markers[7] + 2) + jpeg.substr(eoi);
  EXPECT_FALSE(DecodeJpegInBands(empty_last, 4, Threads(2)).has_value());
  const auto minimum = [](int, int) { return cv::Size(64, 36); };
  const absl::StatusOr<DecodedImage> with_bands =
      DecodeImageAtLeast(empty_last, ImageLimits{}, minimum, Threads(2));
  const absl::StatusOr<DecodedImage> one_thread =
      DecodeImageAtLeast(empty_last, ImageLimits{}, minimum, Threads(1));
  ASSERT_EQ(with_bands.status(), one_thread.status());
  if (with_bands.ok()) {
    EXPECT_EQ(MaxDiff(with_bands->rgb, one_thread->rgb), 0);
  }
}

TEST(JpegBandsTest, DecodeImageAtLeastUsesBandsWithOrientationAndTheSamePixels) {
  // 600x420 stored, EXIF orientation 6 (turn clockwise): 420x600 upright. Bands on three
  // threads against one.
  const std::string stored = WriteJpeg(TestPicture(600, 420, 4), JpegParams{});
  // An APP1 Exif segment with orientation 6, big-endian TIFF, one IFD entry.
  std::string tiff("MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0", 26);
  std::string app1 = "\xFF\xE1";
  const size_t length = 2 + 6 + tiff.size();
  app1.push_back(static_cast<char>(length >> 8));
  app1.push_back(static_cast<char>(length & 0xFF));
  app1 += std::string("Exif\0\0", 6) + tiff;
  const std::string jpeg = stored.substr(0, 2) + app1 + stored.substr(2);

  const auto minimum = [](int height, int width) {
    EXPECT_EQ(height, 600);
    EXPECT_EQ(width, 420);
    return cv::Size(100, 140);
  };
  const absl::StatusOr<DecodedImage> banded =
      DecodeImageAtLeast(jpeg, ImageLimits{}, minimum, Threads(3));
  const absl::StatusOr<DecodedImage> single =
      DecodeImageAtLeast(jpeg, ImageLimits{}, minimum, Threads(1));
  ASSERT_TRUE(banded.ok()) << banded.status();
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(banded->reduction, 4);
  EXPECT_EQ(banded->height, 600);
  EXPECT_EQ(banded->width, 420);
  EXPECT_EQ(banded->rgb.size(), cv::Size(105, 150));
  EXPECT_EQ(MaxDiff(banded->rgb, single->rgb), 0);
  // And the stored picture did go through the bands.
  ASSERT_TRUE(DecodeJpegInBands(jpeg, 4, Threads(3)).has_value());
}

}  // namespace
}  // namespace deeplab
