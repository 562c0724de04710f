// Writes the image_codec fuzzer's seeds: tiny JPEG, PNG, BMP, TIFF and WebP files in the
// layouts the decoder treats differently (grey, 16-bit, float, alpha, progressive, EXIF
// orientation, OS/2 and top-down BMP, big-endian TIFF, VP8X with EXIF). OpenCV encodes the
// pixels; the metadata is spliced in here. Built and run by tests/fuzz/make_corpus.sh.
//
//   make_image_seeds OUT_DIR
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

namespace {

using Bytes = std::string;

void Put16(Bytes& b, uint32_t v, bool little) {
  if (little) {
    b += static_cast<char>(v & 0xFF);
    b += static_cast<char>(v >> 8 & 0xFF);
  } else {
    b += static_cast<char>(v >> 8 & 0xFF);
    b += static_cast<char>(v & 0xFF);
  }
}

void Put32(Bytes& b, uint32_t v, bool little) {
  if (little) {
    Put16(b, v & 0xFFFF, true);
    Put16(b, v >> 16, true);
  } else {
    Put16(b, v >> 16, false);
    Put16(b, v & 0xFFFF, false);
  }
}

// A TIFF-structured block with one IFD entry: Orientation (SHORT) = orientation.
Bytes ExifTiff(int orientation, bool little) {
  Bytes b = little ? Bytes("II\x2a\0", 4) : Bytes("MM\0\x2a", 4);
  Put32(b, 8, little);
  Put16(b, 1, little);       // one entry
  Put16(b, 0x0112, little);  // Orientation
  Put16(b, 3, little);       // SHORT
  Put32(b, 1, little);       // count
  Put16(b, orientation, little);
  Put16(b, 0, little);
  Put32(b, 0, little);  // no next IFD
  return b;
}

Bytes Encode(const std::string& ext, const cv::Mat& image, const std::vector<int>& params = {}) {
  std::vector<uchar> out;
  if (!cv::imencode(ext, image, out, params)) {
    std::fprintf(stderr, "cannot encode %s\n", ext.c_str());
    std::exit(1);
  }
  return Bytes(out.begin(), out.end());
}

// A small picture with some structure, so that the codecs have something to code.
cv::Mat Picture(int rows, int cols, int type) {
  cv::Mat image(rows, cols, type);
  const double scale = image.depth() == CV_16U ? 257.0 : image.depth() == CV_32F ? 1.0 / 255 : 1;
  for (int y = 0; y < rows; ++y) {
    for (int x = 0; x < cols; ++x) {
      for (int c = 0; c < image.channels(); ++c) {
        const double v = ((x * 37 + y * 91 + c * 60) % 256) * scale;
        if (image.depth() == CV_8U) image.ptr<uchar>(y)[x * image.channels() + c] = v;
        if (image.depth() == CV_16U) image.ptr<uint16_t>(y)[x * image.channels() + c] = v;
        if (image.depth() == CV_32F) image.ptr<float>(y)[x * image.channels() + c] = v;
      }
    }
  }
  return image;
}

Bytes JpegWithExif(const Bytes& jpeg, int orientation) {
  const Bytes payload = Bytes("Exif\0\0", 6) + ExifTiff(orientation, false);
  Bytes app1 = "\xFF\xE1";
  Put16(app1, payload.size() + 2, false);
  return jpeg.substr(0, 2) + app1 + payload + jpeg.substr(2);
}

Bytes PngChunk(const std::string& type, const Bytes& data) {
  Bytes chunk;
  Put32(chunk, data.size(), false);
  const Bytes body = type + data;
  chunk += body;
  Put32(chunk, crc32(0, reinterpret_cast<const Bytef*>(body.data()), body.size()), false);
  return chunk;
}

Bytes PngWithExif(const Bytes& png, int orientation) {
  const size_t after_ihdr = 8 + 12 + 13;
  return png.substr(0, after_ihdr) + PngChunk("eXIf", ExifTiff(orientation, true)) +
         png.substr(after_ihdr);
}

// An uncompressed 24-bit BMP, written by hand: OpenCV writes neither of these headers.
Bytes Bmp(int width, int height, bool os2) {
  const uint32_t stride = (width * 3 + 3) / 4 * 4;
  const uint32_t header = os2 ? 12 : 40;
  const uint32_t offset = 14 + header;
  const int rows = height < 0 ? -height : height;
  Bytes b = "BM";
  Put32(b, offset + stride * rows, true);
  Put32(b, 0, true);
  Put32(b, offset, true);
  Put32(b, header, true);
  if (os2) {
    Put16(b, width, true);
    Put16(b, height, true);
    Put16(b, 1, true);   // planes
    Put16(b, 24, true);  // bits
  } else {
    Put32(b, width, true);
    Put32(b, static_cast<uint32_t>(height), true);  // negative: top-down
    Put16(b, 1, true);
    Put16(b, 24, true);
    Put32(b, 0, true);  // BI_RGB
    Put32(b, stride * rows, true);
    Put32(b, 2835, true);
    Put32(b, 2835, true);
    Put32(b, 0, true);
    Put32(b, 0, true);
  }
  for (int y = 0; y < rows; ++y) {
    for (uint32_t x = 0; x < stride; ++x) b += static_cast<char>((x * 40 + y * 90) & 0xFF);
  }
  return b;
}

// A big-endian, uncompressed, 8-bit grey TIFF with an orientation tag.
Bytes BigEndianTiff(int width, int height, int orientation) {
  struct Entry {
    uint16_t tag, type;
    uint32_t value;
  };
  const uint32_t pixels_at = 8;
  const uint32_t ifd_at = pixels_at + width * height + ((width * height) & 1);
  const std::vector<Entry> entries = {{256, 3, static_cast<uint32_t>(width)},
                                      {257, 3, static_cast<uint32_t>(height)},
                                      {258, 3, 8},
                                      {259, 3, 1},
                                      {262, 3, 1},
                                      {273, 4, pixels_at},
                                      {274, 3, static_cast<uint32_t>(orientation)},
                                      {277, 3, 1},
                                      {278, 3, static_cast<uint32_t>(height)},
                                      {279, 4, static_cast<uint32_t>(width * height)}};
  Bytes b("MM\0\x2a", 4);
  Put32(b, ifd_at, false);
  for (int i = 0; i < width * height; ++i) b += static_cast<char>(i * 53 & 0xFF);
  if ((width * height) & 1) b += '\0';
  Put16(b, entries.size(), false);
  for (const Entry& e : entries) {
    Put16(b, e.tag, false);
    Put16(b, e.type, false);
    Put32(b, 1, false);
    if (e.type == 3) {
      Put16(b, e.value, false);
      Put16(b, 0, false);
    } else {
      Put32(b, e.value, false);
    }
  }
  Put32(b, 0, false);
  return b;
}

// Wraps a simple (VP8 or VP8L) WebP in the extended format, with an EXIF chunk and, when
// asked, the animation flag (which the decoder refuses).
Bytes WebpExtended(const Bytes& simple, int width, int height, int orientation, bool animated) {
  const Bytes image_chunk = simple.substr(12);  // after "RIFF" size "WEBP"
  Bytes vp8x = "VP8X";
  Put32(vp8x, 10, true);
  vp8x += static_cast<char>(0x08 | (animated ? 0x02 : 0));  // EXIF (and animation)
  vp8x += Bytes(3, '\0');
  const uint32_t w = width - 1, h = height - 1;
  for (uint32_t v : {w, h}) {
    vp8x += static_cast<char>(v & 0xFF);
    vp8x += static_cast<char>(v >> 8 & 0xFF);
    vp8x += static_cast<char>(v >> 16 & 0xFF);
  }
  const Bytes exif_data = ExifTiff(orientation, true);
  Bytes exif = "EXIF";
  Put32(exif, exif_data.size(), true);
  exif += exif_data;
  if (exif_data.size() & 1) exif += '\0';
  const Bytes body = "WEBP" + vp8x + image_chunk + exif;
  Bytes riff = "RIFF";
  Put32(riff, body.size(), true);
  return riff + body;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const auto write = [&](const std::string& name, const Bytes& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
  };
  const cv::Mat bgr = Picture(6, 8, CV_8UC3);
  const cv::Mat grey = Picture(3, 5, CV_8UC1);

  const Bytes jpeg = Encode(".jpg", bgr, {cv::IMWRITE_JPEG_QUALITY, 90});
  write("rgb_8x6.jpg", jpeg);
  write("grey_progressive_5x3.jpg", Encode(".jpg", grey, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
  write("exif_orientation6.jpg", JpegWithExif(jpeg, 6));
  // A restart marker after every MCU: 2 MCUs a row, so bands can be cut at rows 4 and 8.
  write("restart_every_mcu_24x144.jpg",
        Encode(".jpg", Picture(144, 24, CV_8UC3), {cv::IMWRITE_JPEG_RST_INTERVAL, 1}));

  const Bytes png = Encode(".png", bgr);
  write("rgb_8x6.png", png);
  write("grey16_5x3.png", Encode(".png", Picture(3, 5, CV_16UC1)));
  write("rgba_4x3.png", Encode(".png", Picture(3, 4, CV_8UC4)));
  write("exif_orientation8.png", PngWithExif(png, 8));

  write("rgb_8x6.bmp", Encode(".bmp", bgr));
  write("grey_5x3.bmp", Encode(".bmp", grey));
  write("os2_3x2.bmp", Bmp(3, 2, true));
  write("top_down_3x2.bmp", Bmp(3, -2, false));

  write("rgb_8x6.tiff", Encode(".tiff", bgr));
  write("grey16_5x3.tiff", Encode(".tiff", Picture(3, 5, CV_16UC1)));
  write("float_5x3.tiff", Encode(".tiff", Picture(3, 5, CV_32FC1)));
  write("big_endian_orientation6_3x2.tiff", BigEndianTiff(3, 2, 6));

  write("lossy_8x6.webp", Encode(".webp", bgr, {cv::IMWRITE_WEBP_QUALITY, 80}));
  const Bytes lossless = Encode(".webp", bgr, {cv::IMWRITE_WEBP_QUALITY, 101});
  write("lossless_8x6.webp", lossless);
  write("vp8x_exif_orientation6.webp", WebpExtended(lossless, 8, 6, 6, false));
  write("vp8x_animated.webp", WebpExtended(lossless, 8, 6, 1, true));
  return 0;
}
