#include "common/image_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "deeplab/v1/common.pb.h"
#include "tests/common/test_files.h"

namespace deeplab {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using std::string_literals::operator""s;

// ---------------------------------------------------------------------------------------------
// Builders. Images are made in memory; only the real photos come from disk.

const cv::Vec3b kRgbRed(255, 0, 0);
const cv::Vec3b kRgbGreen(0, 255, 0);
const cv::Vec3b kRgbBlue(0, 0, 255);
const cv::Vec3b kRgbWhite(255, 255, 255);

// A BGR card with four solid quadrants: red top-left, green top-right, blue bottom-left and
// white bottom-right. Solid blocks survive JPEG well, and the quadrants tell every rotation
// and mirror apart.
cv::Mat QuadrantsBgr(int width, int height) {
  cv::Mat bgr(height, width, CV_8UC3);
  const int w2 = width / 2, h2 = height / 2;
  bgr(cv::Rect(0, 0, w2, h2)).setTo(cv::Scalar(0, 0, 255));
  bgr(cv::Rect(w2, 0, width - w2, h2)).setTo(cv::Scalar(0, 255, 0));
  bgr(cv::Rect(0, h2, w2, height - h2)).setTo(cv::Scalar(255, 0, 0));
  bgr(cv::Rect(w2, h2, width - w2, height - h2)).setTo(cv::Scalar(255, 255, 255));
  return bgr;
}

std::string Encode(const cv::Mat& image, const std::string& ext,
                   const std::vector<int>& params = {}) {
  std::vector<uchar> bytes;
  EXPECT_TRUE(cv::imencode(ext, image, bytes, params)) << ext;
  return std::string(bytes.begin(), bytes.end());
}

void PutBe16(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}
void PutBe32(std::string& s, uint32_t v) {
  PutBe16(s, v >> 16);
  PutBe16(s, v & 0xFFFF);
}
void PutLe16(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v));
  s.push_back(static_cast<char>(v >> 8));
}
void PutLe32(std::string& s, uint32_t v) {
  PutLe16(s, v & 0xFFFF);
  PutLe16(s, v >> 16);
}
void Put16(std::string& s, uint32_t v, bool little) { little ? PutLe16(s, v) : PutBe16(s, v); }
void Put32(std::string& s, uint32_t v, bool little) { little ? PutLe32(s, v) : PutBe32(s, v); }

// A TIFF-structured EXIF block whose IFD0 holds only the orientation tag (SHORT).
std::string ExifBlock(int orientation, bool little = false) {
  std::string t = little ? std::string("II\x2a\0", 4) : std::string("MM\0\x2a", 4);
  Put32(t, 8, little);            // IFD0 offset
  Put16(t, 1, little);            // one entry
  Put16(t, 0x0112, little);       // Orientation
  Put16(t, 3, little);            // SHORT
  Put32(t, 1, little);            // count
  Put16(t, orientation, little);  // value, left-justified in the 4-byte field
  Put16(t, 0, little);
  Put32(t, 0, little);  // no next IFD
  return t;
}

// Inserts an APP1 Exif segment right after SOI, so it is the first Exif block in the file.
std::string JpegWithExifBlock(const std::string& jpeg, const std::string& tiff) {
  std::string segment = "\xFF\xE1";
  PutBe16(segment, static_cast<uint32_t>(2 + 6 + tiff.size()));
  segment += std::string("Exif\0\0", 6) + tiff;
  return jpeg.substr(0, 2) + segment + jpeg.substr(2);
}

std::string JpegWithExif(const std::string& jpeg, int orientation, bool little = false) {
  return JpegWithExifBlock(jpeg, ExifBlock(orientation, little));
}

uint32_t Crc32(std::string_view data) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    c ^= byte;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

std::string PngChunk(const std::string& type, const std::string& data) {
  std::string chunk;
  PutBe32(chunk, static_cast<uint32_t>(data.size()));
  chunk += type + data;
  PutBe32(chunk, Crc32(chunk.substr(4)));
  return chunk;
}

// Inserts an eXIf chunk right after IHDR (signature 8 bytes + IHDR chunk 25 bytes).
std::string PngWithExif(const std::string& png, int orientation) {
  return png.substr(0, 33) + PngChunk("eXIf", ExifBlock(orientation)) + png.substr(33);
}

// A PNG that claims width x height (8-bit RGB) with a one-byte body: a decompression bomb shape.
std::string PngClaiming(uint32_t width, uint32_t height) {
  std::string ihdr;
  PutBe32(ihdr, width);
  PutBe32(ihdr, height);
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + PngChunk("IHDR", ihdr) +
         PngChunk("IDAT", std::string("\x78\x9c\x03\x00\x00\x00\x00\x01", 8)) +
         PngChunk("IEND", "");
}

// Lossless WebP (OpenCV writes VP8L for quality above 100).
std::string WebpLossless(const cv::Mat& bgr) {
  return Encode(bgr, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101});
}

// Rewraps a simple WebP as extended (VP8X) with the given flags and an optional EXIF chunk.
std::string WebpExtended(const std::string& simple, int width, int height, uint8_t flags,
                         const std::string& exif) {
  std::string out = "RIFF";
  PutLe32(out, 0);  // patched below
  out += "WEBPVP8X";
  PutLe32(out, 10);
  out.push_back(static_cast<char>(flags | (exif.empty() ? 0 : 0x08)));
  out += std::string(3, '\0');
  PutLe32(out, static_cast<uint32_t>(width - 1));
  out.pop_back();  // 24-bit field
  PutLe32(out, static_cast<uint32_t>(height - 1));
  out.pop_back();
  out += simple.substr(12);
  if (out.size() % 2 != 0) out.push_back('\0');
  if (!exif.empty()) {
    out += "EXIF";
    PutLe32(out, static_cast<uint32_t>(exif.size()));
    out += exif;
    if (out.size() % 2 != 0) out.push_back('\0');
  }
  std::string riff_size;
  PutLe32(riff_size, static_cast<uint32_t>(out.size() - 8));
  out.replace(4, 4, riff_size);
  return out;
}

struct TiffSpec {
  bool little = true;
  int orientation = 0;          // 0: no tag
  uint32_t rows_per_strip = 0;  // 0: the image height
  bool width_as_short = false;
};

TiffSpec Tiff(bool little = true, int orientation = 0, uint32_t rows_per_strip = 0,
              bool width_as_short = false) {
  TiffSpec spec;
  spec.little = little;
  spec.orientation = orientation;
  spec.rows_per_strip = rows_per_strip;
  spec.width_as_short = width_as_short;
  return spec;
}

// An uncompressed single-strip TIFF of `image` (CV_8U/CV_16U/CV_32F, 1 or 3 channels, which
// are stored as given: pass RGB for RGB).
std::string MakeTiff(const cv::Mat& image, const TiffSpec& spec) {
  const bool le = spec.little;
  const int spp = image.channels();
  const int bits = static_cast<int>(image.elemSize1() * 8);
  const bool is_float = image.depth() == CV_32F;
  std::vector<std::pair<int, std::pair<int, uint32_t>>> entries;  // tag -> (type, value)
  const int count = 10 + (spec.orientation != 0 ? 1 : 0) + (is_float ? 1 : 0);
  const uint32_t ifd_end = 8 + 2 + 12 * count + 4;
  const uint32_t bps_offset = ifd_end;
  const uint32_t data_offset = bps_offset + 8;
  const uint32_t data_bytes = static_cast<uint32_t>(image.total() * image.elemSize());
  std::string t = le ? std::string("II\x2a\0", 4) : std::string("MM\0\x2a", 4);
  Put32(t, 8, le);
  Put16(t, count, le);
  const auto entry = [&](int tag, int type, uint32_t n, uint32_t value) {
    Put16(t, tag, le);
    Put16(t, type, le);
    Put32(t, n, le);
    if (type == 3 && n == 1) {
      Put16(t, value, le);
      Put16(t, 0, le);
    } else {
      Put32(t, value, le);
    }
  };
  entry(256, spec.width_as_short ? 3 : 4, 1, image.cols);
  entry(257, 4, 1, image.rows);
  if (spp == 1) {
    entry(258, 3, 1, bits);
  } else {
    entry(258, 3, spp, bps_offset);
  }
  entry(259, 3, 1, 1);                 // no compression
  entry(262, 3, 1, spp == 1 ? 1 : 2);  // BlackIsZero or RGB
  entry(273, 4, 1, data_offset);
  if (spec.orientation != 0) entry(274, 3, 1, spec.orientation);
  entry(277, 3, 1, spp);
  entry(278, 4, 1, spec.rows_per_strip != 0 ? spec.rows_per_strip : image.rows);
  entry(279, 4, 1, data_bytes);
  entry(284, 3, 1, 1);                // contiguous samples
  if (is_float) entry(339, 3, 1, 3);  // IEEE floating point
  Put32(t, 0, le);
  for (int i = 0; i < 4; ++i) Put16(t, i < spp ? bits : 0, le);
  for (int y = 0; y < image.rows; ++y) {
    const uchar* row = image.ptr(y);
    for (size_t i = 0; i < image.cols * image.elemSize(); i += image.elemSize1()) {
      // Samples are stored in the file's byte order.
      std::string sample(reinterpret_cast<const char*>(row + i), image.elemSize1());
      if (!le) std::reverse(sample.begin(), sample.end());
      t += sample;
    }
  }
  return t;
}

// A 24-bit BMP with a Windows (40-byte) or OS/2 (12-byte) header; rows bottom-up unless
// top_down (a negative height, Windows only).
std::string MakeBmp(const cv::Mat& bgr, bool top_down, bool core_header) {
  const int stride = (bgr.cols * 3 + 3) / 4 * 4;
  const uint32_t header_size = core_header ? 12 : 40;
  const uint32_t offset = 14 + header_size;
  std::string b = "BM";
  PutLe32(b, offset + stride * bgr.rows);
  PutLe32(b, 0);
  PutLe32(b, offset);
  PutLe32(b, header_size);
  if (core_header) {
    PutLe16(b, bgr.cols);
    PutLe16(b, bgr.rows);
    PutLe16(b, 1);
    PutLe16(b, 24);
  } else {
    PutLe32(b, bgr.cols);
    PutLe32(b, static_cast<uint32_t>(top_down ? -bgr.rows : bgr.rows));
    PutLe16(b, 1);
    PutLe16(b, 24);
    PutLe32(b, 0);  // BI_RGB
    PutLe32(b, stride * bgr.rows);
    PutLe32(b, 2835);
    PutLe32(b, 2835);
    PutLe32(b, 0);
    PutLe32(b, 0);
  }
  for (int i = 0; i < bgr.rows; ++i) {
    const int y = top_down ? i : bgr.rows - 1 - i;
    std::string row(reinterpret_cast<const char*>(bgr.ptr(y)), bgr.cols * 3);
    row.resize(stride, '\0');
    b += row;
  }
  return b;
}

// The upright picture for EXIF orientation o of `stored`, written from the EXIF definitions
// pixel by pixel, independently of the code under test.
cv::Mat Orient(const cv::Mat& stored, int o) {
  const int w = stored.cols, h = stored.rows;
  const bool swap = o >= 5;
  cv::Mat out(swap ? w : h, swap ? h : w, stored.type());
  for (int y = 0; y < out.rows; ++y) {
    for (int x = 0; x < out.cols; ++x) {
      int sx = x, sy = y;
      switch (o) {
        case 2:
          sx = w - 1 - x;
          break;
        case 3:
          sx = w - 1 - x;
          sy = h - 1 - y;
          break;
        case 4:
          sy = h - 1 - y;
          break;
        case 5:
          sx = y;
          sy = x;
          break;
        case 6:
          sx = y;
          sy = h - 1 - x;
          break;
        case 7:
          sx = w - 1 - y;
          sy = h - 1 - x;
          break;
        case 8:
          sx = w - 1 - y;
          sy = x;
          break;
        default:
          break;
      }
      out.at<cv::Vec3b>(y, x) = stored.at<cv::Vec3b>(sy, sx);
    }
  }
  return out;
}

cv::Mat BgrToRgb(const cv::Mat& bgr) {
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

// Largest per-channel difference; -1 when the shapes differ.
int MaxDiff(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size() || a.type() != b.type()) return -1;
  cv::Mat diff;
  cv::absdiff(a, b, diff);
  double max = 0;
  cv::minMaxLoc(diff.reshape(1), nullptr, &max);
  return static_cast<int>(max);
}

cv::Vec3b At(const cv::Mat& rgb, int x, int y) { return rgb.at<cv::Vec3b>(y, x); }

// Checks the colour at the middle of each quadrant of an upright RGB QuadrantsBgr card.
void ExpectColourNear(const cv::Vec3b& got, const cv::Vec3b& want, int tolerance,
                      const std::string& where) {
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(got[c], want[c], tolerance) << where << " channel " << c;
  }
}

void ExpectQuadrants(const cv::Mat& rgb, int tolerance) {
  ASSERT_EQ(rgb.type(), CV_8UC3);
  const int qx = rgb.cols / 4, qy = rgb.rows / 4;
  ExpectColourNear(At(rgb, qx, qy), kRgbRed, tolerance, "top-left");
  ExpectColourNear(At(rgb, 3 * qx, qy), kRgbGreen, tolerance, "top-right");
  ExpectColourNear(At(rgb, qx, 3 * qy), kRgbBlue, tolerance, "bottom-left");
  ExpectColourNear(At(rgb, 3 * qx, 3 * qy), kRgbWhite, tolerance, "bottom-right");
}

// Failing decoders write to stderr (libpng, libtiff, OpenCV); fuzz loops would bury the test
// log under thousands of those lines.
class QuietStderr {
 public:
  QuietStderr() {
    std::fflush(stderr);
    saved_ = dup(2);
    FILE* null = std::fopen("/dev/null", "w");
    if (null != nullptr) {
      dup2(fileno(null), 2);
      std::fclose(null);
    }
  }
  ~QuietStderr() {
    std::fflush(stderr);
    if (saved_ >= 0) {
      dup2(saved_, 2);
      close(saved_);
    }
  }
  QuietStderr(const QuietStderr&) = delete;
  QuietStderr& operator=(const QuietStderr&) = delete;

 private:
  int saved_ = -1;
};

const ImageLimits kDefaultLimits;

// ---------------------------------------------------------------------------------------------
// ProbeImageHeader

struct EncodedCase {
  std::string name;
  std::string bytes;
  std::string format;
};

// Valid files of every supported kind, 37x23 so that width and height cannot be confused.
std::vector<EncodedCase> ValidFiles() {
  const cv::Mat bgr = QuadrantsBgr(37, 23);
  cv::Mat rgb = BgrToRgb(bgr);
  std::vector<EncodedCase> cases = {
      {"jpeg", Encode(bgr, ".jpg"), "jpeg"},
      {"jpeg_progressive", Encode(bgr, ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1}), "jpeg"},
      {"jpeg_exif", JpegWithExif(Encode(bgr, ".jpg"), 1), "jpeg"},
      {"png", Encode(bgr, ".png"), "png"},
      {"bmp", Encode(bgr, ".bmp"), "bmp"},
      {"bmp_top_down", MakeBmp(bgr, /*top_down=*/true, /*core_header=*/false), "bmp"},
      {"bmp_core", MakeBmp(bgr, /*top_down=*/false, /*core_header=*/true), "bmp"},
      {"tiff_opencv", Encode(bgr, ".tiff"), "tiff"},
      {"tiff_little", MakeTiff(rgb, Tiff()), "tiff"},
      {"tiff_big", MakeTiff(rgb, Tiff(/*little=*/false)), "tiff"},
      {"tiff_short_width", MakeTiff(rgb, Tiff(true, 0, 0, /*width_as_short=*/true)), "tiff"},
      {"webp_lossy", Encode(bgr, ".webp", {cv::IMWRITE_WEBP_QUALITY, 90}), "webp"},
      {"webp_lossless", WebpLossless(bgr), "webp"},
      {"webp_extended", WebpExtended(WebpLossless(bgr), 37, 23, 0, ExifBlock(1)), "webp"},
  };
  return cases;
}

TEST(ProbeImageHeaderTest, ReadsTheSizeOfEveryFormat) {
  for (const EncodedCase& c : ValidFiles()) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<ImageHeader> header = ProbeImageHeader(c.bytes);
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->format, c.format);
    EXPECT_EQ(header->width, 37);
    EXPECT_EQ(header->height, 23);
  }
}

TEST(ProbeImageHeaderTest, WebpChunkKindsAreTheOnesExpected) {
  // The three WebP cases above must really cover VP8, VP8L and VP8X.
  const std::vector<EncodedCase> cases = ValidFiles();
  std::vector<std::string> chunks;
  for (const EncodedCase& c : cases) {
    if (c.format == "webp") chunks.push_back(c.bytes.substr(12, 4));
  }
  EXPECT_THAT(chunks, ::testing::ElementsAre("VP8 ", "VP8L", "VP8X"));
}

TEST(ProbeImageHeaderTest, JpegFillBytesAndJunkBetweenSegmentsAreSkippedLikeLibjpeg) {
  const std::string jpeg = Encode(QuadrantsBgr(40, 24), ".jpg");
  // After the first segment (OpenCV recognises a JPEG by FF D8 FF, so not before it): fill
  // bytes (extra 0xFF) before a marker are legal; junk bytes libjpeg skips with a warning.
  ASSERT_EQ(jpeg.substr(2, 2), "\xFF\xE0");
  const size_t after_app0 =
      4 + (static_cast<uint8_t>(jpeg[4]) << 8 | static_cast<uint8_t>(jpeg[5]));
  const std::string filled = jpeg.substr(0, after_app0) + "\xFF\xFF\xFF" + jpeg.substr(after_app0);
  const std::string junk = jpeg.substr(0, after_app0) + "junk" + jpeg.substr(after_app0);
  QuietStderr quiet;  // libjpeg warns about the junk
  for (const std::string& bytes : {filled, junk}) {
    absl::StatusOr<ImageHeader> header = ProbeImageHeader(bytes);
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->width, 40);
    EXPECT_EQ(header->height, 24);
    absl::StatusOr<cv::Mat> image = DecodeImage(bytes, kDefaultLimits);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->size(), cv::Size(40, 24));
  }
}

TEST(ProbeImageHeaderTest, JpegSkipsAnAppSegmentThatContainsAFakeFrameHeader) {
  // An APP segment whose payload looks like SOF 9999x9999 must be skipped by its length.
  const std::string jpeg = Encode(QuadrantsBgr(40, 24), ".jpg");
  std::string fake = "\xFF\xE5";
  PutBe16(fake, 2 + 11);
  fake += std::string("\xFF\xC0\x00\x11\x08\x27\x0F\x27\x0F\x03\x01", 11);
  absl::StatusOr<ImageHeader> header = ProbeImageHeader(jpeg.substr(0, 2) + fake + jpeg.substr(2));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->width, 40);
  EXPECT_EQ(header->height, 24);
}

TEST(ProbeImageHeaderTest, BmpNegativeHeightIsTopDown) {
  absl::StatusOr<ImageHeader> header =
      ProbeImageHeader(MakeBmp(QuadrantsBgr(5, 3), /*top_down=*/true, /*core_header=*/false));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->height, 3);
}

TEST(ProbeImageHeaderTest, RefusesUnknownFormatsListingTheSupportedOnes) {
  const std::vector<std::string> unknown = {
      "GIF89a\x01\x00\x01\x00",
      "<html><body>Not found</body></html>",
      std::string("\0\0\0\x18"
                  "ftypheic",
                  12),                       // HEIC from a phone
      std::string("II\x2b\0\x08\0\0\0", 8),  // BigTIFF
      "P6\n2 2\n255\n",                      // PPM, which OpenCV would decode
      "RIFF\x10\0\0\0WAVEfmt "s,
      "x",
  };
  for (const std::string& bytes : unknown) {
    absl::StatusOr<ImageHeader> header = ProbeImageHeader(bytes);
    ASSERT_FALSE(header.ok()) << bytes;
    EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(header.status().message(), AllOf(HasSubstr("unrecognised image format"),
                                                 HasSubstr("JPEG, PNG, BMP, TIFF or WebP")));
  }
  EXPECT_THAT(ProbeImageHeader("<html>").status().message(), HasSubstr("3c 68 74 6d"));
}

TEST(ProbeImageHeaderTest, RefusesEmptyInput) {
  absl::StatusOr<ImageHeader> header = ProbeImageHeader("");
  ASSERT_FALSE(header.ok());
  EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(header.status().message(), HasSubstr("empty"));
}

TEST(ProbeImageHeaderTest, RefusesHeadersTooShortToRead) {
  const std::vector<std::string> short_headers = {
      "\xFF\xD8\xFF",
      "\xFF\xD8\xFF\xE0\x00\x10JFIF"s,
      std::string("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0", 18),
      "BM\x10\0\0\0"s,
      std::string("BM\0\0\0\0\0\0\0\0\0\0\0\0\x28\0\0\0\x10\0", 20),
      std::string("II\x2a\0", 4),
      std::string("II\x2a\0\x08\0\0\0\x05\0", 10),
      std::string("MM\0\x2a\xFF\xFF\xFF\xF0", 8),
      "RIFF\0\0\0\0WEBP"s,
      "RIFF\0\0\0\0WEBPVP8 \x10\0\0\0"s,
  };
  for (const std::string& bytes : short_headers) {
    absl::StatusOr<ImageHeader> header = ProbeImageHeader(bytes);
    ASSERT_FALSE(header.ok()) << absl::CHexEscape(bytes);
    EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(header.status().message(), HasSubstr("truncated")) << absl::CHexEscape(bytes);
  }
}

TEST(ProbeImageHeaderTest, RefusesInvalidSizesAndStructures) {
  std::string jpeg_zero_height = Encode(QuadrantsBgr(8, 8), ".jpg");
  const size_t sof = jpeg_zero_height.find("\xFF\xC0");
  ASSERT_NE(sof, std::string::npos);
  jpeg_zero_height[sof + 5] = 0;  // height: defined by a DNL marker, which libjpeg lacks
  jpeg_zero_height[sof + 6] = 0;
  std::string bmp_min_height = MakeBmp(QuadrantsBgr(4, 4), false, false);
  bmp_min_height.replace(22, 4, std::string("\0\0\0\x80", 4));  // INT32_MIN
  std::string bmp_odd_header = MakeBmp(QuadrantsBgr(4, 4), false, false);
  bmp_odd_header[14] = 20;
  std::string png_not_ihdr = PngClaiming(4, 4);
  png_not_ihdr.replace(12, 4, "IDAT");
  const std::vector<std::string> bad = {
      jpeg_zero_height,
      std::string("\xFF\xD8\xFF\xE0\x00\x01", 6),  // segment length below 2
      std::string("\xFF\xD8\xFF\xDA\x00\x02", 6),  // image data before the frame header
      std::string("\xFF\xD8\xFF\xD9", 4),          // EOI before the frame header
      PngClaiming(0, 5),
      PngClaiming(0x80000000u, 5),
      png_not_ihdr,
      bmp_min_height,
      bmp_odd_header,
      "RIFF\0\0\0\0WEBPVP8 \x10\0\0\0\x01\x02\x03\x9d\x01\x2a\x10\0\x10\0"s,  // not a key frame
      "RIFF\0\0\0\0WEBPALPH\x10\0\0\0\x01\x02\x03\x9d\x01\x2a\x10\0\x10\0"s,  // unknown first chunk
      std::string("II\x2a\0\x08\0\0\0\0\0\0\0\0\0", 14),                      // IFD without a size
  };
  for (const std::string& bytes : bad) {
    absl::StatusOr<ImageHeader> header = ProbeImageHeader(bytes);
    EXPECT_FALSE(header.ok()) << absl::CHexEscape(bytes);
    EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(ProbeImageHeaderTest, SurvivesEveryPrefixOfValidFiles) {
  for (const EncodedCase& c : ValidFiles()) {
    for (size_t n = 0; n <= c.bytes.size(); ++n) {
      // Copy so that AddressSanitizer catches a read one past the prefix.
      const std::string prefix = c.bytes.substr(0, n);
      absl::StatusOr<ImageHeader> header = ProbeImageHeader(prefix);
      if (header.ok()) {
        EXPECT_EQ(header->width, 37) << c.name << " prefix " << n;
        EXPECT_EQ(header->height, 23) << c.name << " prefix " << n;
      } else {
        EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument);
      }
    }
  }
}

TEST(ProbeImageHeaderTest, SurvivesRandomBytesAndMutations) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> byte(0, 255);
  const std::vector<std::string> magics = {
      "\xFF\xD8\xFF",
      std::string("\x89PNG\r\n\x1a\n", 8),
      "BM",
      std::string("II\x2a\0", 4),
      std::string("MM\0\x2a", 4),
      "RIFF\x40\0\0\0WEBPVP8X"s,
      "RIFF\x40\0\0\0WEBPVP8L"s,
      "RIFF\x40\0\0\0WEBPVP8 "s,
  };
  for (int i = 0; i < 20000; ++i) {
    std::string bytes = magics[i % magics.size()];
    const int extra = std::uniform_int_distribution<int>(0, 80)(rng);
    for (int k = 0; k < extra; ++k) bytes.push_back(static_cast<char>(byte(rng)));
    (void)ProbeImageHeader(bytes);
  }
  for (const EncodedCase& c : ValidFiles()) {
    for (int i = 0; i < 2000; ++i) {
      std::string bytes = c.bytes;
      const int flips = std::uniform_int_distribution<int>(1, 4)(rng);
      for (int k = 0; k < flips; ++k) {
        // Mostly in the header, where the parser looks.
        const size_t limit = std::min<size_t>(bytes.size(), i % 2 == 0 ? 64 : bytes.size());
        bytes[std::uniform_int_distribution<size_t>(0, limit - 1)(rng)] =
            static_cast<char>(byte(rng));
      }
      absl::StatusOr<ImageHeader> header = ProbeImageHeader(bytes);
      if (header.ok()) {
        EXPECT_GT(header->width, 0);
        EXPECT_GT(header->height, 0);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// DecodeImage: formats, channels, depths

TEST(DecodeImageTest, EveryFormatDecodesToUprightRgb) {
  for (const EncodedCase& c : ValidFiles()) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<cv::Mat> image = DecodeImage(c.bytes, kDefaultLimits);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->type(), CV_8UC3);
    EXPECT_EQ(image->size(), cv::Size(37, 23));
    const bool lossy = c.format == "jpeg" || c.name == "webp_lossy";
    ExpectQuadrants(*image, lossy ? 40 : 0);
  }
}

TEST(DecodeImageTest, LosslessFormatsAreExact) {
  const cv::Mat bgr = QuadrantsBgr(37, 23);
  cv::Mat noise(23, 37, CV_8UC3);
  cv::randu(noise, 0, 256);
  for (const cv::Mat& picture : {bgr, noise}) {
    const cv::Mat rgb = BgrToRgb(picture);
    for (const std::string& bytes :
         {Encode(picture, ".png"), Encode(picture, ".bmp"), Encode(picture, ".tiff"),
          WebpLossless(picture), MakeTiff(rgb, Tiff(/*little=*/false)),
          MakeBmp(picture, true, false), MakeBmp(picture, false, true)}) {
      absl::StatusOr<cv::Mat> image = DecodeImage(bytes, kDefaultLimits);
      ASSERT_TRUE(image.ok()) << image.status();
      EXPECT_EQ(MaxDiff(*image, rgb), 0) << ProbeImageHeader(bytes)->format;
    }
  }
}

TEST(DecodeImageTest, GreyBecomesThreeEqualChannels) {
  cv::Mat grey(16, 24, CV_8UC1);
  for (int y = 0; y < grey.rows; ++y) {
    for (int x = 0; x < grey.cols; ++x) grey.at<uchar>(y, x) = static_cast<uchar>(10 * x);
  }
  cv::Mat grey_rgb;
  cv::cvtColor(grey, grey_rgb, cv::COLOR_GRAY2RGB);
  for (const std::string ext : {".png", ".bmp", ".tiff", ".jpg", ".webp"}) {
    std::vector<int> params;
    if (ext == ".webp") params = {cv::IMWRITE_WEBP_QUALITY, 101};
    absl::StatusOr<cv::Mat> image = DecodeImage(Encode(grey, ext, params), kDefaultLimits);
    ASSERT_TRUE(image.ok()) << ext << ": " << image.status();
    EXPECT_EQ(image->type(), CV_8UC3);
    EXPECT_LE(MaxDiff(*image, grey_rgb), ext == ".jpg" ? 8 : 0) << ext;
  }
}

TEST(DecodeImageTest, AlphaIsDropped) {
  // BGRA with varying alpha: the colours must come back untouched, not blended. (Alpha 1, not
  // 0: libwebp's encoder may rewrite the colour of fully transparent pixels.)
  cv::Mat bgra(10, 12, CV_8UC4, cv::Scalar(30, 20, 250, 1));
  bgra(cv::Rect(0, 0, 6, 10)).setTo(cv::Scalar(30, 20, 250, 128));
  const cv::Mat want(10, 12, CV_8UC3, cv::Scalar(250, 20, 30));  // RGB
  for (const std::string& bytes :
       {Encode(bgra, ".png"), Encode(bgra, ".tiff"), WebpLossless(bgra)}) {
    absl::StatusOr<cv::Mat> image = DecodeImage(bytes, kDefaultLimits);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(MaxDiff(*image, want), 0) << ProbeImageHeader(bytes)->format;
  }
}

TEST(DecodeImageTest, SixteenBitIsScaledNotClipped) {
  cv::Mat grey16(2, 3, CV_16UC1);
  grey16.at<uint16_t>(0, 0) = 65535;
  grey16.at<uint16_t>(0, 1) = 32768;
  grey16.at<uint16_t>(0, 2) = 0;
  grey16.at<uint16_t>(1, 0) = 257;
  grey16.at<uint16_t>(1, 1) = 1000;  // would be 255 if clipped
  grey16.at<uint16_t>(1, 2) = 65000;
  const std::vector<uchar> want = {255, 128, 0, 1, 4, 253};
  cv::Mat colour16(1, 2, CV_16UC3);
  colour16.at<cv::Vec<uint16_t, 3>>(0, 0) = {0, 32768, 65535};  // BGR
  colour16.at<cv::Vec<uint16_t, 3>>(0, 1) = {65535, 0, 0};
  for (const std::string ext : {".png", ".tiff"}) {
    SCOPED_TRACE(ext);
    absl::StatusOr<cv::Mat> grey = DecodeImage(Encode(grey16, ext), kDefaultLimits);
    ASSERT_TRUE(grey.ok()) << grey.status();
    ASSERT_EQ(grey->type(), CV_8UC3);
    for (int i = 0; i < 6; ++i) {
      const cv::Vec3b px = grey->at<cv::Vec3b>(i / 3, i % 3);
      EXPECT_EQ(px, cv::Vec3b(want[i], want[i], want[i])) << "pixel " << i;
    }
    absl::StatusOr<cv::Mat> colour = DecodeImage(Encode(colour16, ext), kDefaultLimits);
    ASSERT_TRUE(colour.ok()) << colour.status();
    EXPECT_EQ(colour->at<cv::Vec3b>(0, 0), cv::Vec3b(255, 128, 0));  // RGB
    EXPECT_EQ(colour->at<cv::Vec3b>(0, 1), cv::Vec3b(0, 0, 255));
  }
}

TEST(DecodeImageTest, FloatTiffIsScaledFromUnitRange) {
  cv::Mat f(1, 3, CV_32FC1);
  f.at<float>(0, 0) = 0.0f;
  f.at<float>(0, 1) = 0.5f;
  f.at<float>(0, 2) = 1.0f;
  absl::StatusOr<cv::Mat> image = DecodeImage(MakeTiff(f, Tiff()), kDefaultLimits);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 0));
  EXPECT_EQ(image->at<cv::Vec3b>(0, 1), cv::Vec3b(128, 128, 128));
  EXPECT_EQ(image->at<cv::Vec3b>(0, 2), cv::Vec3b(255, 255, 255));
}

TEST(DecodeImageTest, ResultOwnsItsPixels) {
  std::string bytes = Encode(QuadrantsBgr(8, 8), ".png");
  absl::StatusOr<cv::Mat> image = DecodeImage(bytes, kDefaultLimits);
  ASSERT_TRUE(image.ok());
  const cv::Mat copy = image->clone();
  bytes.assign(bytes.size(), '\0');
  EXPECT_EQ(MaxDiff(*image, copy), 0);
  EXPECT_TRUE(image->isContinuous());
}

// ---------------------------------------------------------------------------------------------
// EXIF orientation

// What OpenCV 4.6 itself does, recorded so that an upgrade that changes it fails here first:
// imdecode applies EXIF orientation for JPEG and PNG unless the flags are exactly
// IMREAD_UNCHANGED or include IMREAD_IGNORE_ORIENTATION, ignores WebP's EXIF chunk, and applies
// a TIFF's own orientation tag whatever the flags.
TEST(OpenCvBehaviourTest, WhereImdecodeAppliesOrientation) {
  const cv::Mat bgr = QuadrantsBgr(60, 40);
  const std::string jpeg6 = JpegWithExif(Encode(bgr, ".jpg"), 6);
  const std::string png6 = PngWithExif(Encode(bgr, ".png"), 6);
  const std::string webp6 = WebpExtended(WebpLossless(bgr), 60, 40, 0, ExifBlock(6));
  const std::string tiff6 = MakeTiff(BgrToRgb(bgr), Tiff(true, 6));
  const auto size = [](const std::string& bytes, int flags) {
    return cv::imdecode(std::vector<uchar>(bytes.begin(), bytes.end()), flags).size();
  };
  const cv::Size stored(60, 40), rotated(40, 60);
  for (const std::string* bytes : {&jpeg6, &png6}) {
    EXPECT_EQ(size(*bytes, cv::IMREAD_COLOR), rotated);
    EXPECT_EQ(size(*bytes, cv::IMREAD_ANYDEPTH | cv::IMREAD_ANYCOLOR), rotated);
    EXPECT_EQ(size(*bytes, cv::IMREAD_UNCHANGED), stored);
    EXPECT_EQ(
        size(*bytes, cv::IMREAD_ANYDEPTH | cv::IMREAD_ANYCOLOR | cv::IMREAD_IGNORE_ORIENTATION),
        stored);
  }
  EXPECT_EQ(size(webp6, cv::IMREAD_COLOR), stored);
  EXPECT_EQ(size(tiff6, cv::IMREAD_UNCHANGED), rotated);
  EXPECT_EQ(size(tiff6, cv::IMREAD_ANYDEPTH | cv::IMREAD_ANYCOLOR | cv::IMREAD_IGNORE_ORIENTATION),
            rotated);
}

TEST(ExifOrientationTest, SynthesizedJpegOrientationSixRotatesClockwise) {
  const std::string jpeg = JpegWithExif(Encode(QuadrantsBgr(64, 32), ".jpg"), 6);
  absl::StatusOr<ImageHeader> header = ProbeImageHeader(jpeg);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(header->width, 64);  // the header gives the stored size
  absl::StatusOr<cv::Mat> image = DecodeImage(jpeg, kDefaultLimits);
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_EQ(image->size(), cv::Size(32, 64));
  // 90 degrees clockwise: the stored top-left (red) is now top-right, bottom-left (blue) is
  // top-left, and so on round.
  ExpectColourNear(At(*image, 24, 8), kRgbRed, 40, "top-right");
  ExpectColourNear(At(*image, 24, 56), kRgbGreen, 40, "bottom-right");
  ExpectColourNear(At(*image, 8, 56), kRgbWhite, 40, "bottom-left");
  ExpectColourNear(At(*image, 8, 8), kRgbBlue, 40, "top-left");
}

TEST(ExifOrientationTest, SynthesizedJpegOrientationEightRotatesCounterClockwise) {
  const std::string jpeg = JpegWithExif(Encode(QuadrantsBgr(64, 32), ".jpg"), 8, /*little=*/true);
  absl::StatusOr<cv::Mat> image = DecodeImage(jpeg, kDefaultLimits);
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_EQ(image->size(), cv::Size(32, 64));
  ExpectColourNear(At(*image, 8, 56), kRgbRed, 40, "bottom-left");
  ExpectColourNear(At(*image, 8, 8), kRgbGreen, 40, "top-left");
}

TEST(ExifOrientationTest, PngAllEightOrientationsAreExact) {
  cv::Mat bgr(5, 7, CV_8UC3);
  cv::randu(bgr, 0, 256);
  const cv::Mat rgb = BgrToRgb(bgr);
  for (int o = 1; o <= 8; ++o) {
    absl::StatusOr<cv::Mat> image =
        DecodeImage(PngWithExif(Encode(bgr, ".png"), o), kDefaultLimits);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(MaxDiff(*image, Orient(rgb, o)), 0) << "orientation " << o;
  }
}

TEST(ExifOrientationTest, WebpAllEightOrientationsAreExact) {
  cv::Mat bgr(5, 7, CV_8UC3);
  cv::randu(bgr, 0, 256);
  const cv::Mat rgb = BgrToRgb(bgr);
  for (int o = 1; o <= 8; ++o) {
    for (bool prefixed : {false, true}) {
      const std::string exif = (prefixed ? std::string("Exif\0\0", 6) : "") + ExifBlock(o, true);
      absl::StatusOr<cv::Mat> image =
          DecodeImage(WebpExtended(WebpLossless(bgr), 7, 5, 0, exif), kDefaultLimits);
      ASSERT_TRUE(image.ok()) << image.status();
      EXPECT_EQ(MaxDiff(*image, Orient(rgb, o)), 0) << "orientation " << o;
    }
  }
}

TEST(ExifOrientationTest, TiffOrientationTagIsHonouredOnce) {
  // OpenCV's TIFF reader applies tag 274 itself; the codec must not apply it a second time.
  cv::Mat rgb(5, 7, CV_8UC3);
  cv::randu(rgb, 0, 256);
  cv::Mat rgb16;
  rgb.convertTo(rgb16, CV_16U, 257);
  for (int o = 1; o <= 8; ++o) {
    for (const cv::Mat* stored : {&rgb, &rgb16}) {
      for (bool little : {true, false}) {
        absl::StatusOr<cv::Mat> image =
            DecodeImage(MakeTiff(*stored, Tiff(little, o)), kDefaultLimits);
        ASSERT_TRUE(image.ok()) << image.status();
        EXPECT_EQ(MaxDiff(*image, Orient(rgb, o)), 0)
            << "orientation " << o << " depth " << stored->depth() << " little " << little;
      }
    }
  }
}

TEST(ExifOrientationTest, JpegMatchesOpenCvsOwnOrientationForAllEight) {
  // Same decoder underneath, so the pixels must agree exactly with IMREAD_COLOR's rotation.
  const std::string jpeg = Encode(QuadrantsBgr(48, 32), ".jpg");
  for (int o = 1; o <= 8; ++o) {
    const std::string bytes = JpegWithExif(jpeg, o);
    absl::StatusOr<cv::Mat> image = DecodeImage(bytes, kDefaultLimits);
    ASSERT_TRUE(image.ok()) << image.status();
    const cv::Mat reference =
        BgrToRgb(cv::imdecode(std::vector<uchar>(bytes.begin(), bytes.end()), cv::IMREAD_COLOR));
    EXPECT_EQ(MaxDiff(*image, reference), 0) << "orientation " << o;
  }
}

TEST(ExifOrientationTest, BrokenOrUnusualExifIsIgnored) {
  const std::string jpeg = Encode(QuadrantsBgr(48, 32), ".jpg");
  std::string bad_offset = ExifBlock(6);
  bad_offset[7] = '\x7F';  // IFD0 far beyond the block
  std::string many_entries = ExifBlock(6);
  many_entries[9] = '\x7F';   // 127 entries in a 26-byte block: the loop must stop at the end
  many_entries[11] = '\x13';  // and the only real entry is no longer Orientation
  const std::vector<std::string> variants = {
      JpegWithExif(jpeg, 0),
      JpegWithExif(jpeg, 9),
      JpegWithExif(jpeg, 65535),
      JpegWithExifBlock(jpeg, bad_offset),
      JpegWithExifBlock(jpeg, many_entries),
      JpegWithExifBlock(jpeg, "MM"),
      JpegWithExifBlock(jpeg, ""),
      JpegWithExifBlock(jpeg, "XX\0\x2a\0\0\0\x08"s),
  };
  for (const std::string& bytes : variants) {
    absl::StatusOr<cv::Mat> image = DecodeImage(bytes, kDefaultLimits);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->size(), cv::Size(48, 32));
  }
}

TEST(ExifOrientationTest, FirstExifSegmentWins) {
  const std::string jpeg = Encode(QuadrantsBgr(48, 32), ".jpg");
  // JpegWithExif puts its segment first, so orientation 6 comes before orientation 1.
  absl::StatusOr<cv::Mat> image =
      DecodeImage(JpegWithExif(JpegWithExif(jpeg, 1), 6), kDefaultLimits);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->size(), cv::Size(32, 48));
}

// ---------------------------------------------------------------------------------------------
// Real photos

// Orientation from a JPEG's first Exif APP1, read independently of the code under test.
int PhotoOrientation(const std::string& jpeg) {
  size_t pos = 2;
  while (pos + 4 <= jpeg.size() && static_cast<uint8_t>(jpeg[pos]) == 0xFF) {
    const int marker = static_cast<uint8_t>(jpeg[pos + 1]);
    const size_t length =
        static_cast<uint8_t>(jpeg[pos + 2]) << 8 | static_cast<uint8_t>(jpeg[pos + 3]);
    if (marker == 0xDA) break;
    if (marker == 0xE1 && jpeg.compare(pos + 4, 6, std::string("Exif\0\0", 6)) == 0) {
      const std::string t = jpeg.substr(pos + 10, length - 8);
      const bool le = t[0] == 'I';
      const auto u16 = [&](size_t i) {
        const int a = static_cast<uint8_t>(t[i]), b = static_cast<uint8_t>(t[i + 1]);
        return le ? a | b << 8 : a << 8 | b;
      };
      const size_t ifd =
          static_cast<size_t>(u16(le ? 4 : 6)) | (static_cast<size_t>(u16(le ? 6 : 4)) << 16);
      for (int i = 0; i < u16(ifd); ++i) {
        if (u16(ifd + 2 + 12 * i) == 0x0112) return u16(ifd + 2 + 12 * i + 8);
      }
      return 1;
    }
    pos += 2 + length;
  }
  return 1;
}

struct Photo {
  std::string name;
  int stored_width;
  int stored_height;
};

// Sizes from the files' frame headers / IHDR. None of these photos carries an EXIF
// Orientation tag (the phone pictures went through an editor that wrote pixels upright), so
// each decodes at its stored size; PhotoOrientation would say otherwise.
const std::vector<Photo> kPhotos = {
    {"baptist400.jpg", 400, 602}, {"cat.jpg", 3024, 4032},  {"dog_baxter.jpg", 2602, 2448},
    {"image1.jpg", 640, 427},     {"image2.jpg", 500, 358}, {"image3.jpg", 500, 475},
    {"rgba.png", 1024, 768},
};

TEST(RealPhotosTest, AllDecodeAtTheirUprightSize) {
  for (const Photo& photo : kPhotos) {
    SCOPED_TRACE(photo.name);
    const std::string bytes = ReadFile(PhotoPath(photo.name));
    ASSERT_FALSE(bytes.empty());
    absl::StatusOr<ImageHeader> header = ProbeImageHeader(bytes);
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->width, photo.stored_width);
    EXPECT_EQ(header->height, photo.stored_height);
    const int orientation = header->format == "jpeg" ? PhotoOrientation(bytes) : 1;
    const cv::Size upright = orientation >= 5 ? cv::Size(photo.stored_height, photo.stored_width)
                                              : cv::Size(photo.stored_width, photo.stored_height);
    absl::StatusOr<cv::Mat> image = DecodeImage(bytes, kDefaultLimits);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->type(), CV_8UC3);
    EXPECT_EQ(image->size(), upright);
    // The same pixels OpenCV gives with its own EXIF handling (IMREAD_COLOR), or, for the PNG,
    // the stored colours without alpha.
    const std::vector<uchar> buffer(bytes.begin(), bytes.end());
    cv::Mat reference;
    if (header->format == "png") {
      const cv::Mat bgra = cv::imdecode(buffer, cv::IMREAD_UNCHANGED);
      ASSERT_EQ(bgra.channels(), 4) << "the PNG photo is expected to have alpha";
      cv::cvtColor(bgra, reference, cv::COLOR_BGRA2RGB);
    } else {
      reference = BgrToRgb(cv::imdecode(buffer, cv::IMREAD_COLOR));
    }
    EXPECT_EQ(MaxDiff(*image, reference), 0);
  }
}

TEST(RealPhotosTest, PhoneJpegWithOrientationSixIsTurnedUpright) {
  // cat.jpg (3024x4032) already has an Exif block without Orientation; ours goes first.
  const std::string original = ReadFile(PhotoPath("cat.jpg"));
  absl::StatusOr<cv::Mat> upright = DecodeImage(original, kDefaultLimits);
  ASSERT_TRUE(upright.ok()) << upright.status();
  const std::string rotated_file = JpegWithExif(original, 6);
  absl::StatusOr<cv::Mat> rotated = DecodeImage(rotated_file, kDefaultLimits);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  ASSERT_EQ(rotated->size(), cv::Size(4032, 3024));
  cv::Mat want;
  cv::rotate(*upright, want, cv::ROTATE_90_CLOCKWISE);
  EXPECT_EQ(MaxDiff(*rotated, want), 0);
  // And OpenCV's own EXIF handling agrees.
  const cv::Mat reference = BgrToRgb(
      cv::imdecode(std::vector<uchar>(rotated_file.begin(), rotated_file.end()), cv::IMREAD_COLOR));
  EXPECT_EQ(MaxDiff(*rotated, reference), 0);
}

// ---------------------------------------------------------------------------------------------
// Reduced decoding (DecodeImageAtLeast)

MinimumSize AtLeast(int width, int height) {
  return [width, height](int, int) { return cv::Size(width, height); };
}

TEST(ReducedDecodeTest, JpegTakesTheLargestReductionThatKeepsTheMinimum) {
  // 3024x4032 (its sides divide by 8): 1/8 is 378x504, 1/4 756x1008, 1/2 1512x2016.
  const std::string jpeg = ReadFile(PhotoPath("cat.jpg"));
  absl::StatusOr<DecodedImage> full = DecodeImageAtLeast(jpeg, kDefaultLimits, nullptr);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->reduction, 1);
  const int h = full->height, w = full->width;
  EXPECT_EQ(full->rgb.size(), cv::Size(w, h));
  struct Case {
    cv::Size minimum;
    int reduction;
  };
  for (const Case& c : {Case{{w / 8, h / 8}, 8}, Case{{w / 8 + 1, 1}, 4}, Case{{w / 4, h / 4}, 4},
                        Case{{1, h / 4 + 1}, 2}, Case{{w / 2 + 1, 1}, 1}}) {
    absl::StatusOr<DecodedImage> d =
        DecodeImageAtLeast(jpeg, kDefaultLimits, AtLeast(c.minimum.width, c.minimum.height));
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->reduction, c.reduction) << c.minimum;
    // The original size is reported whatever the reduction; the pixels round up.
    EXPECT_EQ(d->height, h);
    EXPECT_EQ(d->width, w);
    const int r = c.reduction;
    EXPECT_EQ(d->rgb.size(), cv::Size((w + r - 1) / r, (h + r - 1) / r)) << c.minimum;
    EXPECT_GE(d->rgb.cols, c.minimum.width);
    EXPECT_GE(d->rgb.rows, c.minimum.height);
    // The same picture: close to the full decode shrunk to the same size.
    cv::Mat shrunk;
    cv::resize(full->rgb, shrunk, d->rgb.size(), 0, 0, cv::INTER_AREA);
    EXPECT_LT(cv::norm(shrunk, d->rgb, cv::NORM_L1) / static_cast<double>(shrunk.total() * 3), 4.0)
        << "mean absolute difference per sample at 1/" << r;
  }
}

TEST(ReducedDecodeTest, OrientationIsHonouredAndTheMinimumSeesTheUprightSize) {
  // Stored 64 wide, 32 high; orientation 6 makes it 32 wide, 64 high.
  const std::string jpeg = JpegWithExif(Encode(QuadrantsBgr(64, 32), ".jpg"), 6);
  int seen_height = 0, seen_width = 0;
  absl::StatusOr<DecodedImage> d =
      DecodeImageAtLeast(jpeg, kDefaultLimits, [&](int height, int width) {
        seen_height = height;
        seen_width = width;
        return cv::Size(16, 32);
      });
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(seen_height, 64);
  EXPECT_EQ(seen_width, 32);
  EXPECT_EQ(d->reduction, 2);
  EXPECT_EQ(d->height, 64);
  EXPECT_EQ(d->width, 32);
  ASSERT_EQ(d->rgb.size(), cv::Size(16, 32));
  ExpectColourNear(At(d->rgb, 12, 4), kRgbRed, 60, "top-right");
  ExpectColourNear(At(d->rgb, 4, 4), kRgbBlue, 60, "top-left");
}

TEST(ReducedDecodeTest, OtherFormatsAndRawPixelsDecodeAtFullSize) {
  const cv::Mat bgr = QuadrantsBgr(64, 32);
  for (const char* ext : {".png", ".bmp", ".webp"}) {
    absl::StatusOr<DecodedImage> d =
        DecodeImageAtLeast(Encode(bgr, ext), kDefaultLimits, AtLeast(4, 4));
    ASSERT_TRUE(d.ok()) << ext << ": " << d.status();
    EXPECT_EQ(d->reduction, 1) << ext;
    EXPECT_EQ(d->rgb.size(), cv::Size(64, 32)) << ext;
  }
  v1::Image raw;
  raw.mutable_raw()->set_height(2);
  raw.mutable_raw()->set_width(3);
  raw.mutable_raw()->set_channels(3);
  raw.mutable_raw()->set_data(std::string(18, '\x10'));
  absl::StatusOr<DecodedImage> d = DecodeImageMessageAtLeast(raw, kDefaultLimits, AtLeast(1, 1));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->reduction, 1);
  EXPECT_EQ(d->height, 2);
  EXPECT_EQ(d->width, 3);
}

TEST(ReducedDecodeTest, LimitsAndCorruptionStillApply) {
  const std::string jpeg = ReadFile(PhotoPath("cat.jpg"));
  ImageLimits small = kDefaultLimits;
  small.max_pixels = 1000;
  EXPECT_EQ(DecodeImageAtLeast(jpeg, small, AtLeast(8, 8)).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::string truncated = jpeg.substr(0, jpeg.size() / 2);
  absl::StatusOr<DecodedImage> d = DecodeImageAtLeast(truncated, kDefaultLimits, AtLeast(8, 8));
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("truncated"));
}

// ---------------------------------------------------------------------------------------------
// Limits

TEST(DecodeLimitsTest, ByteLimitNamesBothNumbers) {
  const std::string png = Encode(QuadrantsBgr(32, 32), ".png");
  ImageLimits limits;
  limits.max_bytes = static_cast<int64_t>(png.size()) - 1;
  absl::StatusOr<cv::Mat> image = DecodeImage(png, limits);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(),
              AllOf(HasSubstr(absl::StrCat(png.size(), " bytes")),
                    HasSubstr(absl::StrCat("limit of ", limits.max_bytes, " bytes"))));
  limits.max_bytes = static_cast<int64_t>(png.size());
  EXPECT_TRUE(DecodeImage(png, limits).ok());
}

TEST(DecodeLimitsTest, PixelLimitIsExactAndNamesSizeAndLimit) {
  const std::string png = Encode(QuadrantsBgr(10, 10), ".png");
  ImageLimits limits;
  limits.max_pixels = 100;
  EXPECT_TRUE(DecodeImage(png, limits).ok());
  limits.max_pixels = 99;
  absl::StatusOr<cv::Mat> image = DecodeImage(png, limits);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(),
              AllOf(HasSubstr("10x10"), HasSubstr("100 pixels"), HasSubstr("limit of 99 pixels")));
}

TEST(DecodeLimitsTest, DecompressionBombsAreRefusedBeforeDecoding) {
  // Tiny files whose headers claim enormous images. Decoding any of them would allocate
  // gigabytes; the refusal must come from the header, at once.
  std::string jpeg = Encode(QuadrantsBgr(8, 8), ".jpg");
  const size_t sof = jpeg.find("\xFF\xC0");
  ASSERT_NE(sof, std::string::npos);
  jpeg.replace(sof + 5, 4, "\xFF\xFF\xFF\xFF");  // 65535x65535
  std::string bmp = MakeBmp(QuadrantsBgr(4, 4), false, false);
  bmp.replace(18, 8, std::string("\xFF\xFF\x00\x00\xFF\xFF\x00\x00", 8));  // 65535x65535
  std::string tiff = MakeTiff(cv::Mat(2, 2, CV_8UC3, cv::Scalar(1, 2, 3)), Tiff());
  tiff.replace(8 + 2 + 8, 4, std::string("\xA0\x86\x01\x00", 4));       // width 100000
  tiff.replace(8 + 2 + 12 + 8, 4, std::string("\xA0\x86\x01\x00", 4));  // height 100000
  const std::vector<std::pair<std::string, std::string>> bombs = {
      {PngClaiming(100000, 100000), "100000x100000"},
      {jpeg, "65535x65535"},
      {WebpExtended(WebpLossless(QuadrantsBgr(4, 4)), 1 << 24, 1 << 24, 0, ""),
       "16777216x16777216"},
      {bmp, "65535x65535"},
      {tiff, "100000x100000"},
  };
  for (const auto& [bytes, size] : bombs) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<cv::Mat> image = DecodeImage(bytes, kDefaultLimits);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(image.ok()) << size;
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(image.status().message(),
                AllOf(HasSubstr(size), HasSubstr("over the limit of 50000000 pixels")));
    EXPECT_LT(elapsed, std::chrono::milliseconds(200)) << size;
  }
}

TEST(DecodeLimitsTest, TiffStripLargerThanTheLimitIsRefused) {
  // A 15x1 image declaring 2^24-1 rows per strip: OpenCV 4.6 would size its strip buffer from
  // that, about 1 GB for 15 pixels.
  const std::string tiff =
      MakeTiff(cv::Mat(1, 15, CV_8UC3, cv::Scalar(1, 2, 3)), Tiff(true, 0, (1u << 24) - 1));
  absl::StatusOr<cv::Mat> image = DecodeImage(tiff, kDefaultLimits);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr("strips or tiles"));
  // A strip of more rows than the image within the limit is fine.
  EXPECT_TRUE(DecodeImage(MakeTiff(cv::Mat(1, 15, CV_8UC3, cv::Scalar(1, 2, 3)), Tiff(true, 0, 64)),
                          kDefaultLimits)
                  .ok());
}

TEST(DecodeLimitsTest, FormatsTheProbeDoesNotKnowNeverReachOpenCv) {
  // OpenCV decodes PPM (and other formats) whose size we never checked; they must be refused.
  const std::string ppm = std::string("P6\n2 1\n255\n") + std::string("\xFF\0\0\0\xFF\0", 6);
  ASSERT_FALSE(cv::imdecode(std::vector<uchar>(ppm.begin(), ppm.end()), cv::IMREAD_COLOR).empty());
  absl::StatusOr<cv::Mat> image = DecodeImage(ppm, kDefaultLimits);
  ASSERT_FALSE(image.ok());
  EXPECT_THAT(image.status().message(), HasSubstr("unrecognised image format"));
}

TEST(DecodeImageTest, EmptyInputSaysSo) {
  absl::StatusOr<cv::Mat> image = DecodeImage("", kDefaultLimits);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr("empty"));
}

// ---------------------------------------------------------------------------------------------
// Truncated and corrupt files

TEST(DecodeImageTest, TruncatedFilesSayTruncated) {
  cv::Mat noise(64, 96, CV_8UC3);
  cv::randu(noise, 0, 256);
  const std::vector<std::pair<std::string, std::string>> files = {
      {"jpeg", Encode(noise, ".jpg")},
      {"jpeg_progressive", Encode(noise, ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1})},
      {"png", Encode(noise, ".png")},
      {"bmp", Encode(noise, ".bmp")},
      {"webp", Encode(noise, ".webp")},
  };
  for (const auto& [name, bytes] : files) {
    for (size_t cut : {bytes.size() / 2, bytes.size() - 1}) {
      absl::StatusOr<cv::Mat> image = DecodeImage(bytes.substr(0, cut), kDefaultLimits);
      ASSERT_FALSE(image.ok()) << name << " cut at " << cut;
      EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(image.status().message(), HasSubstr("truncated")) << name;
    }
  }
  // libjpeg alone would hand back the top half and grey below: the reason for the EOI check.
  const std::string jpeg = Encode(noise, ".jpg");
  const std::string half = jpeg.substr(0, jpeg.size() / 2);
  EXPECT_FALSE(
      cv::imdecode(std::vector<uchar>(half.begin(), half.end()), cv::IMREAD_COLOR).empty());
  EXPECT_THAT(DecodeImage(half, kDefaultLimits).status().message(), HasSubstr("EOI"));
}

TEST(DecodeImageTest, TruncatedTiffIsRefused) {
  cv::Mat noise(64, 96, CV_8UC3);
  cv::randu(noise, 0, 256);
  const std::string tiff = Encode(noise, ".tiff");
  QuietStderr quiet;
  absl::StatusOr<cv::Mat> image = DecodeImage(tiff.substr(0, tiff.size() / 2), kDefaultLimits);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DecodeImageTest, DataAfterTheEndMarkerIsAllowed) {
  // Zero padding, and "motion photos" that append a video after the JPEG's EOI.
  const std::string jpeg = Encode(QuadrantsBgr(16, 16), ".jpg");
  const std::string png = Encode(QuadrantsBgr(16, 16), ".png");
  for (const std::string& bytes :
       {jpeg + std::string(100, '\0'), jpeg + "ftypmp42 and more", png + std::string(7, '\0')}) {
    absl::StatusOr<cv::Mat> image = DecodeImage(bytes, kDefaultLimits);
    EXPECT_TRUE(image.ok()) << image.status();
  }
}

TEST(DecodeImageTest, CorruptDataIsRefusedAsCorrupt) {
  std::mt19937 rng(7);
  std::string garbage(300, '\0');
  for (char& c : garbage) c = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));

  // A valid PNG header, then garbage where the compressed pixels should be.
  std::string ihdr;
  PutBe32(ihdr, 16);
  PutBe32(ihdr, 16);
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + PngChunk("IHDR", ihdr) +
                          PngChunk("IDAT", garbage) + PngChunk("IEND", "");
  // A JPEG whose Huffman table is nonsense (libjpeg: "Bogus Huffman table definition").
  std::string jpeg = Encode(QuadrantsBgr(16, 16), ".jpg");
  const size_t dht = jpeg.find("\xFF\xC4");
  ASSERT_NE(dht, std::string::npos);
  jpeg.replace(dht + 5, 16, std::string(16, '\xFF'));
  // A lossless WebP header, then garbage.
  const std::string webp_ok = WebpLossless(QuadrantsBgr(16, 16));
  std::string webp = webp_ok.substr(0, 25) + garbage.substr(0, webp_ok.size() - 25);
  // A TIFF whose single strip lies beyond the end of the file.
  std::string tiff = MakeTiff(cv::Mat(4, 4, CV_8UC3, cv::Scalar(1, 2, 3)), Tiff());
  const size_t strip_offset = 8 + 2 + 12 * 5 + 8;  // the value of the 6th entry, tag 273
  tiff.replace(strip_offset, 4, std::string("\x00\x00\x10\x00", 4));
  // A BMP with 7 bits per pixel.
  std::string bmp = MakeBmp(QuadrantsBgr(4, 4), false, false);
  bmp[28] = 7;

  const std::vector<std::pair<std::string, std::string>> files = {
      {"PNG", png}, {"JPEG", jpeg}, {"WebP", webp}, {"TIFF", tiff}, {"BMP", bmp}};
  QuietStderr quiet;
  for (const auto& [name, bytes] : files) {
    absl::StatusOr<cv::Mat> image = DecodeImage(bytes, kDefaultLimits);
    ASSERT_FALSE(image.ok()) << name;
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(image.status().message(),
                HasSubstr(absl::StrCat("could not decode ", name, " image: the data is corrupt")));
  }
}

TEST(DecodeImageTest, AnimatedWebpIsRefusedWithAReason) {
  const std::string webp = WebpExtended(WebpLossless(QuadrantsBgr(8, 8)), 8, 8, 0x02, "");
  absl::StatusOr<cv::Mat> image = DecodeImage(webp, kDefaultLimits);
  ASSERT_FALSE(image.ok());
  EXPECT_THAT(image.status().message(), HasSubstr("animated WebP"));
}

TEST(DecodeImageTest, SurvivesMutatedFiles) {
  // Decoding, not just probing, of damaged files: any outcome but a crash (or, under
  // AddressSanitizer, a bad read) is fine. Small limits keep hostile sizes cheap.
  ImageLimits limits;
  limits.max_pixels = 1 << 16;
  std::mt19937 rng(99);
  QuietStderr quiet;
  for (const EncodedCase& c : ValidFiles()) {
    for (int i = 0; i < 150; ++i) {
      std::string bytes = c.bytes;
      const int flips = std::uniform_int_distribution<int>(1, 8)(rng);
      for (int k = 0; k < flips; ++k) {
        bytes[std::uniform_int_distribution<size_t>(0, bytes.size() - 1)(rng)] =
            static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
      }
      if (i % 3 == 0) bytes.resize(std::uniform_int_distribution<size_t>(1, bytes.size())(rng));
      absl::StatusOr<cv::Mat> image = DecodeImage(bytes, limits);
      if (image.ok()) {
        EXPECT_EQ(image->type(), CV_8UC3);
      } else {
        EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << image.status();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Raw images and the message

v1::RawImage Raw(int height, int width, int channels, const std::string& data) {
  v1::RawImage raw;
  raw.set_height(height);
  raw.set_width(width);
  raw.set_channels(channels);
  raw.set_data(data);
  return raw;
}

TEST(ImageFromRawTest, OneThreeAndFourChannelsBecomeRgb) {
  absl::StatusOr<cv::Mat> grey = ImageFromRaw(Raw(1, 2, 1, "\x10\x20"), kDefaultLimits);
  ASSERT_TRUE(grey.ok()) << grey.status();
  EXPECT_EQ(grey->at<cv::Vec3b>(0, 1), cv::Vec3b(0x20, 0x20, 0x20));

  absl::StatusOr<cv::Mat> rgb =
      ImageFromRaw(Raw(2, 1, 3, "\x01\x02\x03\x04\x05\x06"), kDefaultLimits);
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  EXPECT_EQ(rgb->size(), cv::Size(1, 2));
  EXPECT_EQ(rgb->at<cv::Vec3b>(1, 0), cv::Vec3b(4, 5, 6));  // kept in R, G, B order

  absl::StatusOr<cv::Mat> rgba =
      ImageFromRaw(Raw(1, 2, 4, "\x01\x02\x03\xFF\x04\x05\x06\x00"s), kDefaultLimits);
  ASSERT_TRUE(rgba.ok()) << rgba.status();
  EXPECT_EQ(rgba->type(), CV_8UC3);
  EXPECT_EQ(rgba->at<cv::Vec3b>(0, 0), cv::Vec3b(1, 2, 3));
  EXPECT_EQ(rgba->at<cv::Vec3b>(0, 1), cv::Vec3b(4, 5, 6));  // alpha 0 does not blank it
}

TEST(ImageFromRawTest, ResultIsADeepCopy) {
  v1::RawImage raw = Raw(1, 2, 3, "\x01\x02\x03\x04\x05\x06");
  absl::StatusOr<cv::Mat> image = ImageFromRaw(raw, kDefaultLimits);
  ASSERT_TRUE(image.ok());
  EXPECT_NE(static_cast<const void*>(image->data), static_cast<const void*>(raw.data().data()));
  raw.set_data(std::string(6, '\0'));
  EXPECT_EQ(image->at<cv::Vec3b>(0, 1), cv::Vec3b(4, 5, 6));
}

TEST(ImageFromRawTest, RefusesBadShapes) {
  const struct {
    v1::RawImage raw;
    std::vector<std::string> words;
  } cases[] = {
      {Raw(1, 1, 2, "ab"), {"2 channels", "expected 1 (grey), 3 (RGB) or 4 (RGBA)"}},
      {Raw(1, 1, 0, ""), {"0 channels"}},
      {Raw(1, 1, 5, "abcde"), {"5 channels"}},
      {Raw(0, 4, 3, ""), {"must be positive", "height 0"}},
      {Raw(4, -1, 3, ""), {"must be positive", "width -1"}},
      {Raw(2, 3, 3, std::string(17, 'x')), {"17 bytes", "2x3x3 = 18 bytes"}},
      {Raw(2, 3, 1, std::string(7, 'x')), {"7 bytes", "= 6 bytes"}},
  };
  for (const auto& c : cases) {
    absl::StatusOr<cv::Mat> image = ImageFromRaw(c.raw, kDefaultLimits);
    ASSERT_FALSE(image.ok());
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& word : c.words) EXPECT_THAT(image.status().message(), HasSubstr(word));
  }
}

TEST(ImageFromRawTest, EnforcesPixelAndByteLimits) {
  ImageLimits limits;
  limits.max_pixels = 6;
  EXPECT_TRUE(ImageFromRaw(Raw(2, 3, 1, std::string(6, 'x')), limits).ok());
  absl::StatusOr<cv::Mat> too_many = ImageFromRaw(Raw(2, 4, 1, std::string(8, 'x')), limits);
  ASSERT_FALSE(too_many.ok());
  EXPECT_THAT(too_many.status().message(),
              AllOf(HasSubstr("4x2 = 8 pixels"), HasSubstr("limit of 6 pixels")));
  // The pixel limit holds even when the data is absent: nothing is allocated for a liar.
  EXPECT_THAT(ImageFromRaw(Raw(100000, 100000, 3, ""), kDefaultLimits).status().message(),
              HasSubstr("over the limit"));

  limits = ImageLimits();
  limits.max_bytes = 10;
  absl::StatusOr<cv::Mat> too_big = ImageFromRaw(Raw(2, 2, 3, std::string(12, 'x')), limits);
  ASSERT_FALSE(too_big.ok());
  EXPECT_THAT(too_big.status().message(),
              AllOf(HasSubstr("12 bytes"), HasSubstr("limit of 10 bytes")));
}

TEST(DecodeImageMessageTest, DispatchesOnTheOneof) {
  v1::Image encoded;
  encoded.set_encoded(Encode(QuadrantsBgr(6, 4), ".png"));
  absl::StatusOr<cv::Mat> from_file = DecodeImageMessage(encoded, kDefaultLimits);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ(from_file->size(), cv::Size(6, 4));

  v1::Image raw;
  *raw.mutable_raw() = Raw(1, 1, 3, "\x01\x02\x03");
  absl::StatusOr<cv::Mat> from_pixels = DecodeImageMessage(raw, kDefaultLimits);
  ASSERT_TRUE(from_pixels.ok()) << from_pixels.status();
  EXPECT_EQ(from_pixels->at<cv::Vec3b>(0, 0), cv::Vec3b(1, 2, 3));

  absl::StatusOr<cv::Mat> empty = DecodeImageMessage(v1::Image(), kDefaultLimits);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(empty.status().message(),
            "the image is empty: set image.encoded (file bytes) or image.raw (pixels)");

  v1::Image empty_bytes;
  empty_bytes.set_encoded("");
  EXPECT_THAT(DecodeImageMessage(empty_bytes, kDefaultLimits).status().message(),
              HasSubstr("empty"));
}

// ---------------------------------------------------------------------------------------------
// EncodePng

TEST(EncodePngTest, RoundTripsRgbAndGrey) {
  cv::Mat rgb(9, 13, CV_8UC3);
  cv::randu(rgb, 0, 256);
  const std::string png = EncodePng(rgb);
  absl::StatusOr<ImageHeader> header = ProbeImageHeader(png);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->format, "png");
  absl::StatusOr<cv::Mat> back = DecodeImage(png, kDefaultLimits);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(MaxDiff(*back, rgb), 0);

  cv::Mat labels(9, 13, CV_8UC1);
  cv::randu(labels, 0, 21);
  const std::string label_png = EncodePng(labels);
  const cv::Mat decoded =
      cv::imdecode(std::vector<uchar>(label_png.begin(), label_png.end()), cv::IMREAD_UNCHANGED);
  ASSERT_EQ(decoded.type(), CV_8UC1);  // a one-channel PNG, as label maps need
  EXPECT_EQ(MaxDiff(decoded, labels), 0);
}

TEST(EncodePngTest, InputIsRgbNotBgr) {
  const cv::Mat red(2, 2, CV_8UC3, cv::Scalar(255, 0, 0));  // R, G, B
  const std::string png = EncodePng(red);
  const cv::Mat bgr = cv::imdecode(std::vector<uchar>(png.begin(), png.end()), cv::IMREAD_COLOR);
  ASSERT_FALSE(bgr.empty());
  EXPECT_EQ(bgr.at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 255));
}

TEST(EncodePngTest, CompressionLevelIsUsedAndClamped) {
  cv::Mat labels(64, 64, CV_8UC1, cv::Scalar(0));
  labels(cv::Rect(10, 10, 30, 30)).setTo(7);
  const std::string stored = EncodePng(labels, 0);
  const std::string best = EncodePng(labels, 9);
  EXPECT_LT(best.size(), stored.size());
  for (int level : {-5, 0, 1, 9, 42}) {
    const std::string png = EncodePng(labels, level);
    const cv::Mat back =
        cv::imdecode(std::vector<uchar>(png.begin(), png.end()), cv::IMREAD_UNCHANGED);
    EXPECT_EQ(MaxDiff(back, labels), 0) << level;
  }
}

// Label maps are deflated by EncodePng itself in IDAT chunks of 256 KiB (None for a row,
// Up for a row that repeats the one above): noise needs several chunks, and rows that
// repeat, then differ, then repeat again come back exactly, at every level.
TEST(EncodePngTest, LabelMapsOfManyChunksAndRepeatedRowsAreExact) {
  cv::Mat noise(700, 1100, CV_8UC1);
  cv::randu(noise, 0, 256);
  noise.row(5).copyTo(noise.row(6));
  noise.row(5).copyTo(noise.row(7));
  noise.row(100).setTo(0);
  noise.row(100).copyTo(noise.row(101));
  for (int level : {0, 1, 9}) {
    const std::string png = EncodePng(noise, level);
    ASSERT_GT(png.size(), size_t{1} << 19) << level;  // more than two chunks
    const cv::Mat back =
        cv::imdecode(std::vector<uchar>(png.begin(), png.end()), cv::IMREAD_UNCHANGED);
    ASSERT_EQ(back.type(), CV_8UC1) << level;
    EXPECT_EQ(MaxDiff(back, noise), 0) << level;
  }
  cv::Mat one(1, 1, CV_8UC1, cv::Scalar(20));
  const std::string png = EncodePng(one);
  const cv::Mat back = cv::imdecode(std::vector<uchar>(png.begin(), png.end()), cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(back.empty());
  EXPECT_EQ(back.at<uchar>(0, 0), 20);
}

// A label map as a network gives it (regions, upscaled to a photo's size), seen through a
// view whose rows are not contiguous: exact after decoding, and no larger than OpenCV's own
// PNG writer at the same zlib level (which the worker used before) makes it.
TEST(EncodePngTest, LargeLabelMapsAndViewsAreExactAndSmallerThanOpenCvs) {
  cv::Mat grid(18, 25, CV_8UC1);
  cv::randu(grid, 0, 21);
  cv::Mat big;
  cv::resize(grid, big, cv::Size(2003, 1401), 0, 0, cv::INTER_NEAREST);
  cv::circle(big, cv::Point(700, 500), 300, cv::Scalar(15), -1);
  const cv::Mat view = big(cv::Rect(3, 1, 2000, 1400));
  ASSERT_FALSE(view.isContinuous());
  const std::string png = EncodePng(view);
  const cv::Mat back = cv::imdecode(std::vector<uchar>(png.begin(), png.end()), cv::IMREAD_UNCHANGED);
  ASSERT_EQ(back.type(), CV_8UC1);
  ASSERT_EQ(back.size(), view.size());
  EXPECT_EQ(MaxDiff(back, view), 0);
  std::vector<uchar> opencv;
  ASSERT_TRUE(cv::imencode(".png", view, opencv, {cv::IMWRITE_PNG_COMPRESSION, 1}));
  EXPECT_LE(png.size(), opencv.size());

  cv::Mat photo(601, 803, CV_8UC3);
  cv::randu(photo, 0, 256);
  cv::GaussianBlur(photo, photo, cv::Size(9, 9), 3);
  const cv::Mat photo_view = photo(cv::Rect(2, 1, 800, 600));
  const std::string overlay = EncodePng(photo_view);
  absl::StatusOr<cv::Mat> rgb = DecodeImage(overlay, kDefaultLimits);
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  EXPECT_EQ(MaxDiff(*rgb, photo_view), 0);
}

TEST(EncodePngTest, OtherTypesGiveAnEmptyString) {
  EXPECT_EQ(EncodePng(cv::Mat()), "");
  EXPECT_EQ(EncodePng(cv::Mat(2, 2, CV_16UC1, cv::Scalar(1))), "");
  EXPECT_EQ(EncodePng(cv::Mat(2, 2, CV_8UC2, cv::Scalar(1))), "");
  EXPECT_EQ(EncodePng(cv::Mat(2, 2, CV_32FC3, cv::Scalar(1))), "");
}

}  // namespace
}  // namespace deeplab
