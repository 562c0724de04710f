#include "common/image_codec.h"

#include <climits>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace deeplab {
namespace {

// The header parsers below read untrusted bytes: every read goes through Has() first, and
// offsets are compared by subtraction so that a huge length cannot wrap around.

bool Has(std::string_view b, size_t offset, size_t n) {
  return offset <= b.size() && n <= b.size() - offset;
}

uint32_t U8(std::string_view b, size_t i) { return static_cast<uint8_t>(b[i]); }
uint32_t Be16(std::string_view b, size_t i) { return U8(b, i) << 8 | U8(b, i + 1); }
uint32_t Be32(std::string_view b, size_t i) { return Be16(b, i) << 16 | Be16(b, i + 2); }
uint32_t Le16(std::string_view b, size_t i) { return U8(b, i) | U8(b, i + 1) << 8; }
uint32_t Le24(std::string_view b, size_t i) { return Le16(b, i) | U8(b, i + 2) << 16; }
uint32_t Le32(std::string_view b, size_t i) { return Le16(b, i) | Le16(b, i + 2) << 16; }

// absl::string_view: Debian's Abseil does not alias std::string_view.
absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

// Magic numbers with NUL bytes in them, so the lengths are explicit.
constexpr std::string_view kExifPrefix("Exif\0\0", 6);
constexpr std::string_view kTiffLittle("II\x2a\0", 4);
constexpr std::string_view kTiffBig("MM\0\x2a", 4);

enum class Format { kJpeg, kPng, kBmp, kTiff, kWebp };

// The name people know, for messages.
const char* FormatName(Format f) {
  switch (f) {
    case Format::kJpeg:
      return "JPEG";
    case Format::kPng:
      return "PNG";
    case Format::kBmp:
      return "BMP";
    case Format::kTiff:
      return "TIFF";
    case Format::kWebp:
      return "WebP";
  }
  return "unknown";
}

std::string SizeText(int64_t width, int64_t height) { return absl::StrCat(width, "x", height); }

// ---------------------------------------------------------------------------------------------
// EXIF orientation

// The orientation (1-8) in a TIFF-structured block: a JPEG's APP1 "Exif" payload, a PNG eXIf
// chunk or a WebP EXIF chunk. Broken or missing metadata gives 1 (as stored): EXIF is an
// annotation, and a damaged one is no reason to refuse the pixels; viewers ignore it too.
int ExifOrientation(std::string_view tiff);

// Reads TIFF's small unsigned scalars: BYTE, SHORT or LONG with count 1, the value held in the
// entry itself. libtiff accepts all three for the tags we read, so a file that uses LONG for its
// width is read the same here and there.
bool TiffScalar(std::string_view b, bool little, size_t entry, uint32_t* value) {
  if (!Has(b, entry, 12)) return false;
  const auto u16 = [&](size_t i) { return little ? Le16(b, i) : Be16(b, i); };
  const auto u32 = [&](size_t i) { return little ? Le32(b, i) : Be32(b, i); };
  const uint32_t type = u16(entry + 2);
  if (u32(entry + 4) != 1) return false;
  switch (type) {
    case 1:  // BYTE
      *value = U8(b, entry + 8);
      return true;
    case 3:  // SHORT
      *value = u16(entry + 8);
      return true;
    case 4:  // LONG
      *value = u32(entry + 8);
      return true;
    default:
      return false;
  }
}

int ExifOrientation(std::string_view tiff) {
  if (!Has(tiff, 0, 8)) return 1;
  bool little;
  if (tiff.substr(0, 2) == "II") {
    little = true;
  } else if (tiff.substr(0, 2) == "MM") {
    little = false;
  } else {
    return 1;
  }
  const auto u16 = [&](size_t i) { return little ? Le16(tiff, i) : Be16(tiff, i); };
  if (u16(2) != 42) return 1;
  const size_t ifd = little ? Le32(tiff, 4) : Be32(tiff, 4);
  if (!Has(tiff, ifd, 2)) return 1;
  const size_t count = u16(ifd);
  for (size_t i = 0; i < count; ++i) {
    const size_t entry = ifd + 2 + 12 * i;
    if (!Has(tiff, entry, 12)) return 1;
    if (u16(entry) != 0x0112) continue;
    uint32_t value = 0;
    if (!TiffScalar(tiff, little, entry, &value) || value < 1 || value > 8) return 1;
    return static_cast<int>(value);
  }
  return 1;
}

// Turns stored pixels upright for an EXIF orientation; the same transforms as OpenCV's own
// (loadsave.cpp), which the tests compare against.
void ApplyOrientation(int orientation, cv::Mat& image) {
  switch (orientation) {
    case 2:
      cv::flip(image, image, 1);
      break;
    case 3:
      cv::rotate(image, image, cv::ROTATE_180);
      break;
    case 4:
      cv::flip(image, image, 0);
      break;
    case 5:
      cv::transpose(image, image);
      break;
    case 6:
      cv::rotate(image, image, cv::ROTATE_90_CLOCKWISE);
      break;
    case 7:
      cv::transpose(image, image);
      cv::flip(image, image, -1);
      break;
    case 8:
      cv::rotate(image, image, cv::ROTATE_90_COUNTERCLOCKWISE);
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// JPEG

bool IsJpegSof(uint32_t marker) {
  // SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range.
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

struct JpegScan {
  int64_t width = 0;
  int64_t height = 0;
  int orientation = 1;
};

// Walks a JPEG's markers the way libjpeg's next_marker() does: bytes other than 0xFF are
// skipped, runs of 0xFF are fill, FF 00 is a stuffed data byte and RSTn/TEM stand alone. Taking
// libjpeg's path matters: the frame header found here must be the one libjpeg decodes, or the
// pixel limit could be checked against a size the decoder never uses. Where libjpeg would
// tolerate something we cannot follow (a segment length below 2), we refuse instead.
//
// With to_end false it stops at the first frame header (SOFn), which is all the probe needs.
// With to_end true it goes on through the scans to the EOI marker: libjpeg decodes a truncated
// file "successfully", greying the missing rows, so a missing EOI is how truncation shows.
absl::StatusOr<JpegScan> ScanJpeg(std::string_view b, bool to_end) {
  JpegScan scan;
  bool have_frame = false;
  bool have_exif = false;
  bool in_scans = false;
  size_t pos = 2;  // after SOI
  while (true) {
    const void* ff = pos < b.size() ? std::memchr(b.data() + pos, 0xFF, b.size() - pos) : nullptr;
    size_t m =
        ff == nullptr ? b.size() : static_cast<size_t>(static_cast<const char*>(ff) - b.data()) + 1;
    while (m < b.size() && U8(b, m) == 0xFF) ++m;
    if (m >= b.size()) {
      if (!have_frame) {
        return Invalid("the JPEG is truncated: it ends before its frame header (SOF)");
      }
      return Invalid("the image is truncated: a JPEG must end with an EOI marker (FF D9)");
    }
    const uint32_t marker = U8(b, m);
    pos = m + 1;
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;
    if (marker == 0xD8) {
      return Invalid("the JPEG is corrupt: it has a second start-of-image marker");
    }
    if (marker == 0xD9) {
      if (!have_frame) return Invalid("the JPEG is corrupt: it ends before its frame header (SOF)");
      return scan;
    }
    if (!Has(b, pos, 2)) {
      return Invalid(have_frame
                         ? "the image is truncated: a JPEG must end with an EOI marker (FF D9)"
                         : "the JPEG is truncated: it ends before its frame header (SOF)");
    }
    const size_t length = Be16(b, pos);
    if (length < 2) {
      return Invalid(absl::StrCat("the JPEG is corrupt: segment FF ", absl::Hex(marker),
                                  " at offset ", m - 1, " has length ", length));
    }
    if (!Has(b, pos, length)) {
      return Invalid(have_frame
                         ? "the image is truncated: a JPEG must end with an EOI marker (FF D9)"
                         : "the JPEG is truncated: it ends inside a header segment");
    }
    const std::string_view payload = b.substr(pos + 2, length - 2);
    if (IsJpegSof(marker) && !have_frame) {
      if (payload.size() < 6) return Invalid("the JPEG is corrupt: its frame header is too short");
      scan.height = Be16(payload, 1);
      scan.width = Be16(payload, 3);
      if (scan.width == 0 || scan.height == 0) {
        // Height 0 means "defined later by a DNL marker", which libjpeg does not support.
        return Invalid(absl::StrCat("the JPEG frame header gives an invalid size ",
                                    SizeText(scan.width, scan.height)));
      }
      have_frame = true;
      if (!to_end) return scan;
    } else if (marker == 0xDA) {
      if (!have_frame) {
        return Invalid("the JPEG is corrupt: image data comes before the frame header");
      }
      in_scans = true;
    } else if (marker == 0xE1 && !in_scans && !have_exif && payload.substr(0, 6) == kExifPrefix) {
      // Like OpenCV and browsers: the first Exif APP1 before the image data counts.
      have_exif = true;
      scan.orientation = ExifOrientation(payload.substr(6));
    }
    pos += length;
  }
}

// ---------------------------------------------------------------------------------------------
// PNG

constexpr std::string_view kPngSignature = "\x89PNG\r\n\x1a\n";
constexpr uint32_t kPngMaxLength = 0x7FFFFFFF;  // PNG's limit for lengths and sides

absl::StatusOr<ImageHeader> ProbePng(std::string_view b) {
  if (!Has(b, 0, 24)) {
    return Invalid(absl::StrCat("the PNG header is truncated: need 24 bytes, got ", b.size()));
  }
  if (Be32(b, 8) != 13 || b.substr(12, 4) != "IHDR") {
    return Invalid("the PNG is corrupt: it does not start with an IHDR chunk");
  }
  const uint32_t width = Be32(b, 16);
  const uint32_t height = Be32(b, 20);
  if (width == 0 || height == 0 || width > kPngMaxLength || height > kPngMaxLength) {
    return Invalid(absl::StrCat("the PNG header gives an invalid size ", SizeText(width, height)));
  }
  return ImageHeader{"png", width, height};
}

// Walks the chunks to IEND (a cut file has none: libpng may otherwise hand back what it got)
// and returns the eXIf orientation. Only an eXIf before the image data counts, as in libpng.
absl::StatusOr<int> ScanPng(std::string_view b) {
  int orientation = 1;
  bool have_exif = false;
  bool seen_idat = false;
  size_t pos = kPngSignature.size();
  while (true) {
    if (!Has(b, pos, 8)) {
      return Invalid("the image is truncated: a PNG must end with an IEND chunk");
    }
    const uint32_t length = Be32(b, pos);
    if (length > kPngMaxLength) {
      return Invalid(
          absl::StrCat("the PNG is corrupt: chunk at offset ", pos, " has length ", length));
    }
    const std::string_view type = b.substr(pos + 4, 4);
    if (!Has(b, pos + 8, size_t{length} + 4)) {
      return Invalid("the image is truncated: a PNG must end with an IEND chunk");
    }
    if (type == "IEND") return orientation;
    if (type == "IDAT") seen_idat = true;
    if (type == "eXIf" && !seen_idat && !have_exif) {
      have_exif = true;
      orientation = ExifOrientation(b.substr(pos + 8, length));
    }
    pos += size_t{length} + 12;
  }
}

// ---------------------------------------------------------------------------------------------
// BMP

absl::StatusOr<ImageHeader> ProbeBmp(std::string_view b) {
  if (!Has(b, 0, 18)) {
    return Invalid(absl::StrCat("the BMP header is truncated: need 18 bytes, got ", b.size()));
  }
  const uint32_t header_size = Le32(b, 14);
  if (header_size == 12) {
    // OS/2 BITMAPCOREHEADER: unsigned 16-bit sides, always bottom-up.
    if (!Has(b, 0, 22)) {
      return Invalid(absl::StrCat("the BMP header is truncated: need 22 bytes, got ", b.size()));
    }
    const uint32_t width = Le16(b, 18);
    const uint32_t height = Le16(b, 20);
    if (width == 0 || height == 0) {
      return Invalid(
          absl::StrCat("the BMP header gives an invalid size ", SizeText(width, height)));
    }
    return ImageHeader{"bmp", width, height};
  }
  if (header_size < 40) {
    // OpenCV reads sizes 13-35 as nothing and 36-39 as a BITMAPINFOHEADER; no real writer
    // produces either, so refusing them keeps our reading and OpenCV's identical.
    return Invalid(absl::StrCat("the BMP header size ", header_size,
                                " is not supported: expected 12 (OS/2) or at least 40 (Windows)"));
  }
  if (!Has(b, 0, 26)) {
    return Invalid(absl::StrCat("the BMP header is truncated: need 26 bytes, got ", b.size()));
  }
  const int32_t width = static_cast<int32_t>(Le32(b, 18));
  const int32_t height = static_cast<int32_t>(Le32(b, 22));
  // A negative height means top-down rows. INT32_MIN has no positive counterpart (and would be
  // undefined behaviour in OpenCV's std::abs).
  if (width <= 0 || height == 0 || height == INT32_MIN) {
    return Invalid(absl::StrCat("the BMP header gives an invalid size ", SizeText(width, height)));
  }
  return ImageHeader{"bmp", width, height < 0 ? -int64_t{height} : int64_t{height}};
}

// OpenCV's BMP reader fails on a short file, but the reason it gives ("corrupt") is wrong for
// the common case of a cut upload; uncompressed layouts let us tell the truth.
absl::Status CheckBmpLength(std::string_view b, const ImageHeader& header) {
  const bool core = Le32(b, 14) == 12;
  if (!Has(b, 0, core ? 26 : 34)) return absl::OkStatus();  // too short to tell: OpenCV decides
  const uint32_t bits = Le16(b, core ? 24 : 28);
  const uint32_t compression = core ? 0 : Le32(b, 30);
  const bool uncompressed = compression == 0 || compression == 3;  // BI_RGB, BI_BITFIELDS
  const bool plain_depth =
      bits == 1 || bits == 4 || bits == 8 || bits == 16 || bits == 24 || bits == 32;
  if (!uncompressed || !plain_depth) return absl::OkStatus();
  const uint64_t offset = Le32(b, 10);
  const uint64_t stride = (static_cast<uint64_t>(header.width) * bits + 31) / 32 * 4;
  const uint64_t size = b.size();
  // Division, not multiplication: stride * height can exceed 64 bits for a hostile header.
  if (offset > size || stride > (size - offset) / static_cast<uint64_t>(header.height)) {
    return Invalid(absl::StrCat("the image is truncated: this BMP needs ",
                                offset + stride * static_cast<uint64_t>(header.height),
                                " bytes, got ", size));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// TIFF

struct TiffInfo {
  ImageHeader header;
  int orientation = 1;        // tag 274, which OpenCV's TIFF reader applies itself
  uint64_t block_pixels = 0;  // pixels per strip or tile as OpenCV sizes its buffer; 0 unknown
};

absl::StatusOr<TiffInfo> ParseTiff(std::string_view b) {
  if (!Has(b, 0, 8)) {
    return Invalid(absl::StrCat("the TIFF header is truncated: need 8 bytes, got ", b.size()));
  }
  const bool little = b[0] == 'I';
  const auto u16 = [&](size_t i) { return little ? Le16(b, i) : Be16(b, i); };
  const size_t ifd = little ? Le32(b, 4) : Be32(b, 4);
  if (!Has(b, ifd, 2)) {
    return Invalid(absl::StrCat("the TIFF is truncated: its first directory at offset ", ifd,
                                " lies beyond the ", b.size(), " bytes received"));
  }
  const size_t count = u16(ifd);
  if (!Has(b, ifd + 2, 12 * count)) {
    return Invalid("the TIFF is truncated: its first directory ends beyond the data received");
  }
  // libtiff ignores repeats of a tag after the first; so do we.
  uint32_t width = 0, height = 0, orientation = 0, rows_per_strip = 0, tile_width = 0,
           tile_length = 0;
  bool have_width = false, have_height = false, have_orientation = false, have_rows = false,
       have_tile_width = false, have_tile_length = false;
  for (size_t i = 0; i < count; ++i) {
    const size_t entry = ifd + 2 + 12 * i;
    const auto take = [&](uint32_t* value, bool* have) {
      if (!*have) *have = TiffScalar(b, little, entry, value);
    };
    switch (u16(entry)) {
      case 256:
        take(&width, &have_width);
        break;
      case 257:
        take(&height, &have_height);
        break;
      case 274:
        take(&orientation, &have_orientation);
        break;
      case 278:
        take(&rows_per_strip, &have_rows);
        break;
      case 322:
        take(&tile_width, &have_tile_width);
        break;
      case 323:
        take(&tile_length, &have_tile_length);
        break;
      default:
        break;
    }
  }
  if (!have_width || !have_height) {
    return Invalid(
        "the TIFF is corrupt: its first directory has no readable ImageWidth and "
        "ImageLength tags");
  }
  // OpenCV keeps the sides in an int.
  if (width == 0 || height == 0 || width > INT_MAX || height > INT_MAX) {
    return Invalid(absl::StrCat("the TIFF header gives an invalid size ", SizeText(width, height)));
  }
  TiffInfo info;
  info.header = ImageHeader{"tiff", width, height};
  // libtiff replaces values outside 1-8 by the default, top-left.
  if (have_orientation && orientation >= 1 && orientation <= 8) {
    info.orientation = static_cast<int>(orientation);
  }
  // OpenCV sizes its read buffer from the tile or strip, not from the image: a 1-row image
  // declaring 2^24 rows per strip makes it allocate up to 1 GiB (its own cap).
  if (have_tile_width || have_tile_length) {
    info.block_pixels = uint64_t{tile_width} * tile_length;
  } else if (have_rows && rows_per_strip != UINT32_MAX) {
    info.block_pixels = uint64_t{width} * rows_per_strip;
  }
  return info;
}

// ---------------------------------------------------------------------------------------------
// WebP

constexpr uint32_t kWebpAnimationFlag = 0x02;

absl::StatusOr<ImageHeader> ProbeWebp(std::string_view b) {
  const auto truncated = [&](size_t need) {
    return Invalid(
        absl::StrCat("the WebP header is truncated: need ", need, " bytes, got ", b.size()));
  };
  if (!Has(b, 0, 20)) return truncated(20);
  const std::string_view chunk = b.substr(12, 4);
  uint32_t width = 0, height = 0;
  if (chunk == "VP8 ") {
    // Lossy: 3-byte frame tag (bit 0 clear on a key frame), start code 9D 01 2A, then 14-bit
    // sides (the top 2 bits are an upscaling hint that does not change the decoded size).
    if (!Has(b, 0, 30)) return truncated(30);
    if ((U8(b, 20) & 1) != 0 || b.substr(23, 3) != "\x9d\x01\x2a") {
      return Invalid("the WebP is corrupt: its VP8 frame header is invalid");
    }
    width = Le16(b, 26) & 0x3FFF;
    height = Le16(b, 28) & 0x3FFF;
  } else if (chunk == "VP8L") {
    // Lossless: signature 0x2F, then 14 bits of width-1 and 14 bits of height-1.
    if (!Has(b, 0, 25)) return truncated(25);
    if (U8(b, 20) != 0x2F) return Invalid("the WebP is corrupt: its VP8L header is invalid");
    const uint32_t bits = Le32(b, 21);
    width = (bits & 0x3FFF) + 1;
    height = ((bits >> 14) & 0x3FFF) + 1;
  } else if (chunk == "VP8X") {
    // Extended: flags, 3 reserved bytes, then 24 bits each of canvas width-1 and height-1.
    if (!Has(b, 0, 30)) return truncated(30);
    width = Le24(b, 24) + 1;
    height = Le24(b, 27) + 1;
  } else {
    return Invalid(absl::StrCat("the WebP is corrupt or unsupported: its first chunk is '",
                                absl::CHexEscape(absl::string_view(chunk.data(), chunk.size())),
                                "', expected VP8, VP8L or VP8X"));
  }
  if (width == 0 || height == 0) {
    return Invalid(absl::StrCat("the WebP header gives an invalid size ", SizeText(width, height)));
  }
  return ImageHeader{"webp", width, height};
}

// Checks the RIFF length (libwebp refuses a short file, but would not say why), refuses
// animations (libwebp's still-image decoder cannot read them) and finds the EXIF orientation,
// which OpenCV 4.6 does not apply for WebP.
absl::StatusOr<int> ScanWebp(std::string_view b) {
  const uint64_t riff_end = uint64_t{Le32(b, 4)} + 8;
  if (riff_end > b.size()) {
    return Invalid(absl::StrCat("the image is truncated: this WebP needs ", riff_end,
                                " bytes, got ", b.size()));
  }
  if (b.substr(12, 4) != "VP8X") return 1;
  if ((U8(b, 20) & kWebpAnimationFlag) != 0) {
    return Invalid("animated WebP is not supported: send a single frame");
  }
  const std::string_view riff = b.substr(0, riff_end);
  size_t pos = 12;
  while (Has(riff, pos, 8)) {
    const size_t length = Le32(riff, pos + 4);
    if (!Has(riff, pos + 8, length)) break;  // libwebp judges a bad chunk
    if (riff.substr(pos, 4) == "EXIF") {
      std::string_view exif = riff.substr(pos + 8, length);
      // Some writers keep JPEG's "Exif\0\0" prefix.
      if (exif.substr(0, 6) == kExifPrefix) exif.remove_prefix(6);
      return ExifOrientation(exif);
    }
    pos += 8 + length + (length & 1);
  }
  return 1;
}

// ---------------------------------------------------------------------------------------------
// Probe and decode

struct Probed {
  Format format;
  ImageHeader header;
};

absl::StatusOr<Probed> Probe(std::string_view b) {
  if (b.empty()) return Invalid("the image is empty: no bytes were sent");
  // The magic numbers are those OpenCV's decoders match, and no other OpenCV decoder claims
  // data starting with them, so the decoder imdecode picks is the one whose header we read.
  absl::StatusOr<ImageHeader> header;
  Format format;
  if (b.substr(0, 3) == "\xFF\xD8\xFF") {
    format = Format::kJpeg;
    absl::StatusOr<JpegScan> scan = ScanJpeg(b, /*to_end=*/false);
    if (!scan.ok()) return scan.status();
    header = ImageHeader{"jpeg", scan->width, scan->height};
  } else if (b.substr(0, kPngSignature.size()) == kPngSignature) {
    format = Format::kPng;
    header = ProbePng(b);
  } else if (b.substr(0, 2) == "BM") {
    format = Format::kBmp;
    header = ProbeBmp(b);
  } else if (b.substr(0, 4) == kTiffLittle || b.substr(0, 4) == kTiffBig) {
    format = Format::kTiff;
    absl::StatusOr<TiffInfo> info = ParseTiff(b);
    if (!info.ok()) return info.status();
    header = info->header;
  } else if (Has(b, 0, 12) && b.substr(0, 4) == "RIFF" && b.substr(8, 4) == "WEBP") {
    format = Format::kWebp;
    header = ProbeWebp(b);
  } else {
    std::string start;
    for (size_t i = 0; i < b.size() && i < 4; ++i) {
      absl::StrAppend(&start, i == 0 ? "" : " ", absl::Hex(U8(b, i), absl::kZeroPad2));
    }
    return Invalid(absl::StrCat("unrecognised image format (the data starts with ", start,
                                "): send a JPEG, PNG, BMP, TIFF or WebP file"));
  }
  if (!header.ok()) return header.status();
  return Probed{format, *std::move(header)};
}

// What the whole-file checks learn beyond the size.
struct Layout {
  int orientation = 1;              // EXIF orientation we apply after decoding
  bool decoder_transposes = false;  // TIFF orientations 5-8: OpenCV's reader swaps the sides
};

absl::StatusOr<Layout> CheckLayout(const Probed& probed, std::string_view b,
                                   const ImageLimits& limits) {
  Layout layout;
  switch (probed.format) {
    case Format::kJpeg: {
      absl::StatusOr<JpegScan> scan = ScanJpeg(b, /*to_end=*/true);
      if (!scan.ok()) return scan.status();
      layout.orientation = scan->orientation;
      break;
    }
    case Format::kPng: {
      absl::StatusOr<int> orientation = ScanPng(b);
      if (!orientation.ok()) return orientation.status();
      layout.orientation = *orientation;
      break;
    }
    case Format::kBmp: {
      absl::Status status = CheckBmpLength(b, probed.header);
      if (!status.ok()) return status;
      break;
    }
    case Format::kTiff: {
      absl::StatusOr<TiffInfo> info = ParseTiff(b);
      if (!info.ok()) return info.status();
      if (limits.max_pixels >= 0 && info->block_pixels > static_cast<uint64_t>(limits.max_pixels)) {
        return Invalid(absl::StrCat("the TIFF's strips or tiles hold ", info->block_pixels,
                                    " pixels each, over the limit of ", limits.max_pixels,
                                    " pixels"));
      }
      layout.decoder_transposes = info->orientation >= 5;
      break;
    }
    case Format::kWebp: {
      absl::StatusOr<int> orientation = ScanWebp(b);
      if (!orientation.ok()) return orientation.status();
      layout.orientation = *orientation;
      break;
    }
  }
  return layout;
}

// Any depth and channel count the decoders give, to 8-bit RGB.
absl::StatusOr<cv::Mat> ToRgb8(const cv::Mat& decoded, Format format) {
  cv::Mat eight_bit;
  switch (decoded.depth()) {
    case CV_8U:
      eight_bit = decoded;
      break;
    case CV_16U:
      // Scale, not clip or shift: 65535 -> 255 and 32768 -> 128 keep the full range.
      decoded.convertTo(eight_bit, CV_8U, 255.0 / 65535.0);
      break;
    case CV_32F:
    case CV_64F:
      // Floating-point TIFF: nominal range [0, 1], as OpenCV and most writers use it.
      decoded.convertTo(eight_bit, CV_8U, 255.0);
      break;
    default:
      return Invalid(absl::StrCat("this ", FormatName(format),
                                  " image uses signed integer samples, which are not supported: "
                                  "send 8- or 16-bit unsigned or floating-point samples"));
  }
  cv::Mat rgb;
  switch (eight_bit.channels()) {
    case 1:
      cv::cvtColor(eight_bit, rgb, cv::COLOR_GRAY2RGB);
      break;
    case 3:
      cv::cvtColor(eight_bit, rgb, cv::COLOR_BGR2RGB);
      break;
    case 4:
      cv::cvtColor(eight_bit, rgb, cv::COLOR_BGRA2RGB);
      break;
    default:
      return Invalid(absl::StrCat("this ", FormatName(format), " image has ", eight_bit.channels(),
                                  " channels; expected 1, 3 or 4"));
  }
  return rgb;
}

absl::Status PixelLimit(int64_t width, int64_t height, const ImageLimits& limits) {
  const int64_t pixels = width * height;  // both sides < 2^31: no overflow
  if (pixels > limits.max_pixels) {
    return Invalid(absl::StrCat("the image is ", SizeText(width, height), " = ", pixels,
                                " pixels, over the limit of ", limits.max_pixels, " pixels"));
  }
  return absl::OkStatus();
}

// ANYDEPTH keeps 16-bit samples for us to scale (8-bit mode would let each codec pick its own
// rounding). ANYCOLOR keeps grey as one channel and makes every colour image 3-channel BGR,
// stripping alpha in the codec. IGNORE_ORIENTATION because OpenCV 4.6 applies EXIF for JPEG
// and PNG but not WebP, and not at all with IMREAD_UNCHANGED; we apply it ourselves everywhere.
// (TIFF's own orientation tag is applied by OpenCV's TIFF reader whatever the flags say.)
//
// BMP is the exception: OpenCV 4.6 reports an OS/2 (12-byte header) BMP as grey, so anything
// but IMREAD_COLOR loses its colours. BMP has no 16-bit samples and no EXIF, so nothing is lost.
int ImreadFlags(Format format) {
  if (format == Format::kBmp) return cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION;
  return cv::IMREAD_ANYDEPTH | cv::IMREAD_ANYCOLOR | cv::IMREAD_IGNORE_ORIENTATION;
}

// `what`: "image" or "raw image".
absl::Status ByteLimit(int64_t size, const ImageLimits& limits, const char* what) {
  if (size > limits.max_bytes) {
    return Invalid(absl::StrCat("the ", what, " is ", size, " bytes, over the limit of ",
                                limits.max_bytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ImageHeader> ProbeImageHeader(std::string_view bytes) {
  absl::StatusOr<Probed> probed = Probe(bytes);
  if (!probed.ok()) return probed.status();
  return probed->header;
}

absl::Status CheckImageBytes(const v1::Image& image, const ImageLimits& limits) {
  if (image.has_raw()) {
    return ByteLimit(static_cast<int64_t>(image.raw().data().size()), limits, "raw image");
  }
  return ByteLimit(static_cast<int64_t>(image.encoded().size()), limits, "image");
}

absl::StatusOr<DecodedImage> DecodeImageAtLeast(std::string_view bytes, const ImageLimits& limits,
                                                const MinimumSize& minimum,
                                                const JpegBandOptions& bands) {
  if (bytes.empty()) return Invalid("the image is empty: no bytes were sent");
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (absl::Status status = ByteLimit(size, limits, "image"); !status.ok()) return status;
  if (size > INT_MAX) {  // cv::Mat sides are int
    return Invalid(absl::StrCat("the image is ", size, " bytes, over the decoder's limit of ",
                                INT_MAX, " bytes"));
  }
  // Every byte reaches OpenCV only after its header was read here and its size accepted: a
  // format we cannot probe is refused. OpenCV's own cap (2^30 pixels) cannot be lowered from
  // here: it reads OPENCV_IO_MAX_IMAGE_PIXELS once, while its library loads. A deployment may
  // set that variable as a second guard, at or above max_pixels (OpenCV then throws, which
  // would read as "corrupt" below).
  absl::StatusOr<Probed> probed = Probe(bytes);
  if (!probed.ok()) return probed.status();
  const ImageHeader& header = probed->header;
  const Format format = probed->format;
  if (absl::Status status = PixelLimit(header.width, header.height, limits); !status.ok()) {
    return status;
  }
  absl::StatusOr<Layout> layout = CheckLayout(*probed, bytes, limits);
  if (!layout.ok()) return layout.status();

  DecodedImage out;
  // The original size after orientation: EXIF orientations 5-8 swap the sides.
  const bool swaps = layout->orientation >= 5 || layout->decoder_transposes;
  out.height = static_cast<int>(swaps ? header.width : header.height);
  out.width = static_cast<int>(swaps ? header.height : header.width);
  int flags = ImreadFlags(format);
  if (format == Format::kJpeg && minimum) {
    const cv::Size need = minimum(out.height, out.width);
    for (const auto& [denominator, reduced_flags] :
         {std::pair{8, cv::IMREAD_REDUCED_COLOR_8}, std::pair{4, cv::IMREAD_REDUCED_COLOR_4},
          std::pair{2, cv::IMREAD_REDUCED_COLOR_2}}) {
      // libjpeg's scaled size rounds up.
      if ((out.height + denominator - 1) / denominator >= need.height &&
          (out.width + denominator - 1) / denominator >= need.width) {
        out.reduction = denominator;
        flags = reduced_flags | cv::IMREAD_IGNORE_ORIENTATION;
        break;
      }
    }
  }

  const std::string corrupt =
      absl::StrCat("could not decode ", FormatName(format), " image: the data is corrupt");
  // OpenCV reports failures by exceptions as well as by an empty result; neither may escape.
  try {
    if (out.reduction > 1) {
      // Bands decode only what they can decode exactly, and leave everything else (corrupt
      // data included) to OpenCV below.
      std::optional<cv::Mat> banded = DecodeJpegInBands(bytes, out.reduction, bands, &out.bands);
      if (banded) {
        ApplyOrientation(layout->orientation, *banded);
        out.rgb = *std::move(banded);
        return out;
      }
    }
    // imdecode only reads the buffer, so wrapping it without a copy is safe.
    const cv::Mat buffer(1, static_cast<int>(size), CV_8UC1, const_cast<char*>(bytes.data()));
    const cv::Mat decoded = cv::imdecode(buffer, flags);
    if (decoded.empty()) return Invalid(corrupt);
    const int r = out.reduction;
    int64_t want_width = (header.width + r - 1) / r, want_height = (header.height + r - 1) / r;
    if (layout->decoder_transposes) std::swap(want_width, want_height);
    if (decoded.cols != want_width || decoded.rows != want_height) {
      return Invalid(absl::StrCat(corrupt, " (the header says ", SizeText(want_width, want_height),
                                  ", the pixels are ", SizeText(decoded.cols, decoded.rows), ")"));
    }
    absl::StatusOr<cv::Mat> rgb = ToRgb8(decoded, format);
    if (!rgb.ok()) return rgb.status();
    ApplyOrientation(layout->orientation, *rgb);
    out.rgb = *std::move(rgb);
    return out;
  } catch (const std::bad_alloc&) {
    // Within the pixel limit this is the process running short, not the caller's fault.
    return absl::ResourceExhaustedError(absl::StrCat("out of memory decoding a ",
                                                     SizeText(header.width, header.height), " ",
                                                     FormatName(format), " image"));
  } catch (const std::exception&) {
    // cv::Exception from a decoder's assertion; its text names OpenCV internals, not the input.
    return Invalid(corrupt);
  }
}

absl::StatusOr<cv::Mat> DecodeImage(std::string_view bytes, const ImageLimits& limits) {
  absl::StatusOr<DecodedImage> decoded = DecodeImageAtLeast(bytes, limits, nullptr);
  if (!decoded.ok()) return decoded.status();
  return std::move(decoded->rgb);
}

absl::StatusOr<cv::Mat> ImageFromRaw(const v1::RawImage& raw, const ImageLimits& limits) {
  const int channels = raw.channels();
  if (channels != 1 && channels != 3 && channels != 4) {
    return Invalid(absl::StrCat("the raw image has ", channels,
                                " channels; expected 1 (grey), 3 (RGB) or 4 (RGBA)"));
  }
  if (raw.height() <= 0 || raw.width() <= 0) {
    return Invalid(absl::StrCat("the raw image size must be positive, got height ", raw.height(),
                                " and width ", raw.width()));
  }
  const int64_t size = static_cast<int64_t>(raw.data().size());
  if (absl::Status status = ByteLimit(size, limits, "raw image"); !status.ok()) return status;
  if (absl::Status status = PixelLimit(raw.width(), raw.height(), limits); !status.ok()) {
    return status;
  }
  const int64_t expected = int64_t{raw.height()} * raw.width() * channels;
  if (size != expected) {
    return Invalid(absl::StrCat("the raw image data is ", size,
                                " bytes; expected height x width x ", "channels = ", raw.height(),
                                "x", raw.width(), "x", channels, " = ", expected, " bytes"));
  }
  try {
    const cv::Mat view(raw.height(), raw.width(), CV_8UC(channels),
                       const_cast<char*>(raw.data().data()));
    cv::Mat rgb;  // always a new buffer: the result must not alias the message
    switch (channels) {
      case 1:
        cv::cvtColor(view, rgb, cv::COLOR_GRAY2RGB);
        break;
      case 3:
        rgb = view.clone();
        break;
      default:
        cv::cvtColor(view, rgb, cv::COLOR_RGBA2RGB);
        break;
    }
    return rgb;
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory copying a ", SizeText(raw.width(), raw.height()), " image"));
  }
}

absl::StatusOr<cv::Mat> DecodeImageMessage(const v1::Image& image, const ImageLimits& limits) {
  switch (image.source_case()) {
    case v1::Image::kEncoded:
      return DecodeImage(image.encoded(), limits);
    case v1::Image::kRaw:
      return ImageFromRaw(image.raw(), limits);
    case v1::Image::SOURCE_NOT_SET:
      break;
  }
  return Invalid("the image is empty: set image.encoded (file bytes) or image.raw (pixels)");
}

absl::StatusOr<DecodedImage> DecodeImageMessageAtLeast(const v1::Image& image,
                                                       const ImageLimits& limits,
                                                       const MinimumSize& minimum,
                                                       const JpegBandOptions& bands) {
  if (image.source_case() == v1::Image::kEncoded) {
    return DecodeImageAtLeast(image.encoded(), limits, minimum, bands);
  }
  absl::StatusOr<cv::Mat> rgb = DecodeImageMessage(image, limits);
  if (!rgb.ok()) return rgb.status();
  DecodedImage out;
  out.height = rgb->rows;
  out.width = rgb->cols;
  out.rgb = *std::move(rgb);
  return out;
}

namespace {

// libpng reports errors by longjmp: nothing with a destructor may live in a frame it jumps
// over, so the callbacks catch everything and the jump lands in WritePng, whose locals are
// plain pointers and ints.
struct PngSink {
  std::string* out;
};

void PngWrite(png_structp png, png_bytep data, png_size_t length) {
  auto* sink = static_cast<PngSink*>(png_get_io_ptr(png));
  bool failed = false;
  try {
    sink->out->append(reinterpret_cast<const char*>(data), length);
  } catch (...) {
    failed = true;
  }
  if (failed) png_error(png, "out of memory");
}

void PngFlush(png_structp) {}
void PngError(png_structp png, png_const_charp) { png_longjmp(png, 1); }
void PngWarning(png_structp, png_const_charp) {}

// The grey (label map) writer's state, owned by EncodePng's frame, which libpng's longjmp
// never crosses (see PngSink).
struct GreyDeflate {
  z_stream z{};
  bool open = false;
  std::vector<unsigned char> row;    // filter byte, then one row
  std::vector<unsigned char> chunk;  // deflate output, written as an IDAT chunk when full
  ~GreyDeflate() {
    if (open) deflateEnd(&z);
  }
};

// Label maps are long runs of one value, and most rows of a map restored to a photo's size
// repeat the row above. So each row is filtered with None, except a row equal to the one
// above, which goes out as Up (all zeros); run-length deflate packs either. libpng offers no
// per-row choice short of its heuristic (which computes every enabled filter on every row:
// twice the time), so this part deflates with zlib itself and libpng frames the chunks.
// Only plain locals here: png_write_chunk may longjmp to WritePng.
bool WriteGreyIdat(png_structp png, const cv::Mat& image, int level, GreyDeflate& grey) {
  z_stream& z = grey.z;
  if (deflateInit2(&z, level, Z_DEFLATED, 15, 8, Z_RLE) != Z_OK) return false;
  grey.open = true;
  const size_t width = static_cast<size_t>(image.cols);
  unsigned char* row = grey.row.data();
  unsigned char* chunk = grey.chunk.data();
  const size_t chunk_size = grey.chunk.size();
  z.next_out = chunk;
  z.avail_out = static_cast<uInt>(chunk_size);
  bool row_is_zeros = false;
  for (int y = 0; y < image.rows; ++y) {
    const unsigned char* pixels = image.ptr<unsigned char>(y);
    const bool repeat = y > 0 && std::memcmp(pixels, image.ptr<unsigned char>(y - 1), width) == 0;
    if (repeat) {
      row[0] = PNG_FILTER_VALUE_UP;
      if (!row_is_zeros) std::memset(row + 1, 0, width);
    } else {
      row[0] = PNG_FILTER_VALUE_NONE;
      std::memcpy(row + 1, pixels, width);
    }
    row_is_zeros = repeat;
    z.next_in = row;
    z.avail_in = static_cast<uInt>(width + 1);
    while (z.avail_in > 0) {
      if (deflate(&z, Z_NO_FLUSH) != Z_OK) return false;
      if (z.avail_out == 0) {
        png_write_chunk(png, reinterpret_cast<png_const_bytep>("IDAT"), chunk, chunk_size);
        z.next_out = chunk;
        z.avail_out = static_cast<uInt>(chunk_size);
      }
    }
  }
  for (;;) {
    const int r = deflate(&z, Z_FINISH);
    if (r != Z_OK && r != Z_STREAM_END) return false;
    const size_t have = chunk_size - z.avail_out;
    if (have > 0 && (r == Z_STREAM_END || z.avail_out == 0)) {
      png_write_chunk(png, reinterpret_cast<png_const_bytep>("IDAT"), chunk, have);
      z.next_out = chunk;
      z.avail_out = static_cast<uInt>(chunk_size);
    }
    if (r == Z_STREAM_END) return true;
  }
}

bool WritePng(const cv::Mat& image, int level, std::string* out, GreyDeflate* grey) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, PngError, PngWarning);
  if (png == nullptr) return false;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  PngSink sink{out};
  png_set_write_fn(png, &sink, PngWrite, PngFlush);
  const bool is_grey = image.channels() == 1;
  png_set_IHDR(png, info, static_cast<png_uint_32>(image.cols), static_cast<png_uint_32>(image.rows),
               8, is_grey ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (is_grey) {
    png_write_info(png, info);  // signature and IHDR
    const bool written = WriteGreyIdat(png, image, level, *grey);
    if (written) png_write_chunk(png, reinterpret_cast<png_const_bytep>("IEND"), nullptr, 0);
    png_destroy_write_struct(&png, &info);
    return written;
  }
  // One filter for every row instead of libpng's adaptive choice among five, which costs
  // more than the deflate: overlays are photos, and Sub turns smooth rows into small numbers.
  png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_SUB);
  png_set_compression_level(png, level);
  png_set_compression_strategy(png, Z_RLE);
  png_write_info(png, info);
  for (int y = 0; y < image.rows; ++y) {
    png_write_row(png, const_cast<png_bytep>(image.ptr<png_byte>(y)));
  }
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

std::string EncodePng(const cv::Mat& image, int compression) {
  if (image.depth() != CV_8U || (image.channels() != 1 && image.channels() != 3) ||
      image.empty()) {
    return {};
  }
  std::string png;
  GreyDeflate grey;
  try {
    // Room for a well-compressed label map; larger outputs grow it as they go.
    png.reserve(std::min<size_t>(image.total() * image.channels() / 8 + 1024, size_t{64} << 20));
    if (image.channels() == 1) {
      grey.row.resize(static_cast<size_t>(image.cols) + 1);
      // IDAT chunks of up to 256 KiB; a small map's whole filtered rows fit in less.
      grey.chunk.resize(std::min(size_t{256} << 10, image.total() + image.rows + 1024));
    }
  } catch (const std::exception&) {
    return {};
  }
  const int level = compression < 0 ? 0 : (compression > 9 ? 9 : compression);
  if (!WritePng(image, level, &png, &grey)) return {};
  return png;
}

}  // namespace deeplab
