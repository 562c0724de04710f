#include "common/jpeg_bands.h"

#include <jpeglib.h>

#include <algorithm>
#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/cpu_count.h"

namespace deeplab {
namespace {

uint32_t U8(std::string_view b, size_t i) { return static_cast<uint8_t>(b[i]); }
uint32_t Be16(std::string_view b, size_t i) { return U8(b, i) << 8 | U8(b, i + 1); }

// What the headers say, and where each restart interval's data starts.
struct Layout {
  size_t sof_height_offset = 0;  // the frame header's height field
  size_t scan_start = 0;         // first byte of entropy-coded data
  int width = 0;
  int height = 0;
  int mcu_height = 0;
  int64_t mcus_per_row = 0;
  int64_t mcu_rows = 0;
  int64_t restart_interval = 0;  // MCUs
  // interval_start[i]: the first byte of interval i; interval_end[i]: one past its last byte
  // (the 0xFF that begins the marker after it).
  std::vector<size_t> interval_start;
  std::vector<size_t> interval_end;
};

// Reads the markers up to the first scan: sizes, sampling, restart interval. nullopt for
// anything but the simple, common case described in the header.
std::optional<Layout> ReadHeaders(std::string_view b) {
  if (b.size() < 4 || U8(b, 0) != 0xFF || U8(b, 1) != 0xD8) return std::nullopt;
  Layout layout;
  int components = 0;
  int h0 = 0, v0 = 0;
  size_t pos = 2;
  bool have_frame = false;
  while (true) {
    // Segments follow each other directly here; anything unusual is left to libjpeg alone.
    if (pos + 4 > b.size() || U8(b, pos) != 0xFF) return std::nullopt;
    const uint32_t marker = U8(b, pos + 1);
    const size_t length = Be16(b, pos + 2);
    if (length < 2 || length > b.size() - pos - 2) return std::nullopt;
    const std::string_view payload = b.substr(pos + 4, length - 2);
    if ((marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xCC) || marker == 0xDC) {
      // Frame headers: only one, baseline or extended sequential Huffman (SOF0, SOF1), 8-bit.
      if (have_frame || (marker != 0xC0 && marker != 0xC1)) return std::nullopt;
      if (payload.size() < 6 || U8(payload, 0) != 8) return std::nullopt;
      layout.sof_height_offset = pos + 5;
      layout.height = static_cast<int>(Be16(payload, 1));
      layout.width = static_cast<int>(Be16(payload, 3));
      components = static_cast<int>(U8(payload, 5));
      if (layout.height == 0 || layout.width == 0) return std::nullopt;
      if (components != 1 && components != 3) return std::nullopt;
      if (payload.size() != 6 + 3 * static_cast<size_t>(components)) return std::nullopt;
      for (int c = 0; c < components; ++c) {
        const uint32_t sampling = U8(payload, 7 + 3 * c);
        const int h = static_cast<int>(sampling >> 4), v = static_cast<int>(sampling & 15);
        if (c == 0) {
          h0 = h;
          v0 = v;
        } else if (h != 1 || v != 1) {
          return std::nullopt;
        }
      }
      const bool sampling_ok =
          components == 1 ? (h0 == 1 && v0 == 1)
                          : ((h0 == 1 && v0 == 1) || (h0 == 2 && v0 == 1) || (h0 == 2 && v0 == 2));
      if (!sampling_ok) return std::nullopt;
      have_frame = true;
    } else if (marker == 0xDD) {  // DRI
      if (payload.size() != 2) return std::nullopt;
      layout.restart_interval = Be16(payload, 0);
    } else if (marker == 0xDA) {  // SOS: one scan with every component, all coefficients
      if (!have_frame || payload.empty()) return std::nullopt;
      const size_t n = U8(payload, 0);
      if (static_cast<int>(n) != components || payload.size() != 1 + 2 * n + 3) return std::nullopt;
      const size_t spectral = 1 + 2 * n;
      if (U8(payload, spectral) != 0 || U8(payload, spectral + 1) != 63 ||
          U8(payload, spectral + 2) != 0) {
        return std::nullopt;
      }
      layout.scan_start = pos + 2 + length;
      break;
    } else if (marker == 0xD8 || marker == 0xD9 || (marker >= 0xD0 && marker <= 0xD7) ||
               marker == 0x01 || marker == 0x00 || marker == 0xFF) {
      return std::nullopt;  // not a segment with a length where one is expected
    }
    pos += 2 + length;
  }
  if (layout.restart_interval == 0) return std::nullopt;
  const int mcu_width = 8 * h0;
  layout.mcu_height = 8 * v0;
  layout.mcus_per_row = (layout.width + mcu_width - 1) / mcu_width;
  layout.mcu_rows = (layout.height + layout.mcu_height - 1) / layout.mcu_height;
  return layout;
}

// Finds where each restart interval's data starts and ends, up to EOI. False unless the
// markers are exactly the ones the frame calls for, in order.
bool FindIntervals(std::string_view b, Layout& layout) {
  const int64_t intervals = (layout.mcus_per_row * layout.mcu_rows + layout.restart_interval - 1) /
                            layout.restart_interval;

  // The entropy-coded data: FF 00 is a stuffed byte, FF FF fill, FF D0-D7 the restart markers
  // (which must come in order), FF D9 the end. Any other marker (a second scan, DNL) and we
  // leave the file to libjpeg. Each interval but the last ends with a 2-byte marker: a header
  // claiming more than the file can hold reserves no more than the file's size allows.
  const size_t expected = std::min(static_cast<size_t>(intervals), b.size() / 2 + 1);
  layout.interval_start.reserve(expected);
  layout.interval_end.reserve(expected);
  layout.interval_start.push_back(layout.scan_start);
  size_t p = layout.scan_start;
  while (true) {
    const void* ff = p < b.size() ? std::memchr(b.data() + p, 0xFF, b.size() - p) : nullptr;
    if (ff == nullptr) return false;
    const size_t at = static_cast<size_t>(static_cast<const char*>(ff) - b.data());
    if (at + 1 >= b.size()) return false;
    const uint32_t next = U8(b, at + 1);
    if (next == 0x00) {
      p = at + 2;
    } else if (next == 0xFF) {
      p = at + 1;
    } else if (next >= 0xD0 && next <= 0xD7) {
      const size_t index = layout.interval_end.size();
      if (next - 0xD0 != index % 8 || static_cast<int64_t>(index) + 1 >= intervals) {
        return false;
      }
      layout.interval_end.push_back(at);
      layout.interval_start.push_back(at + 2);
      p = at + 2;
    } else if (next == 0xD9) {
      layout.interval_end.push_back(at);
      break;
    } else {
      return false;
    }
  }
  return static_cast<int64_t>(layout.interval_end.size()) == intervals;
}

// ---------------------------------------------------------------------------------------------
// One band through libjpeg. Errors longjmp back to Decode(), so nothing in it may need a
// destructor; warnings (corrupt data that libjpeg would paper over) count as failure.

struct ErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
};

void ErrorExit(j_common_ptr cinfo) {
  std::longjmp(reinterpret_cast<ErrorManager*>(cinfo->err)->jump, 1);
}

void EmitMessage(j_common_ptr cinfo, int level) {
  if (level < 0) ++cinfo->err->num_warnings;
}

void OutputMessage(j_common_ptr) {}

// Feeds the band's pieces in turn, straight from the file (no copies): the headers up to the
// frame header's height, the band's height, the rest of the headers, the band's data, and
// an end marker.
constexpr int kPieces = 5;
struct Source {
  jpeg_source_mgr pub;
  const JOCTET* pieces[kPieces];
  size_t sizes[kPieces];
  int next;
};

constexpr JOCTET kEndOfImage[2] = {0xFF, 0xD9};

void InitSource(j_decompress_ptr) {}

boolean FillInputBuffer(j_decompress_ptr cinfo) {
  Source* source = reinterpret_cast<Source*>(cinfo->src);
  // libjpeg reads a byte after every refill: never hand it an empty piece (a damaged file
  // may have two restart markers in a row, an interval of no bytes).
  while (source->next < kPieces && source->sizes[source->next] == 0) ++source->next;
  if (source->next < kPieces) {
    source->pub.next_input_byte = source->pieces[source->next];
    source->pub.bytes_in_buffer = source->sizes[source->next];
    ++source->next;
  } else {
    // Past the end: what libjpeg's own sources do, an end marker and a warning (so the band
    // fails).
    ++cinfo->err->num_warnings;
    source->pub.next_input_byte = kEndOfImage;
    source->pub.bytes_in_buffer = 2;
  }
  return TRUE;
}

void SkipInputData(j_decompress_ptr cinfo, long count) {
  Source* source = reinterpret_cast<Source*>(cinfo->src);
  while (count > 0) {
    if (source->pub.bytes_in_buffer >= static_cast<size_t>(count)) {
      source->pub.next_input_byte += count;
      source->pub.bytes_in_buffer -= static_cast<size_t>(count);
      return;
    }
    count -= static_cast<long>(source->pub.bytes_in_buffer);
    source->pub.bytes_in_buffer = 0;
    FillInputBuffer(cinfo);
  }
}

void TermSource(j_decompress_ptr) {}

struct Band {
  std::string_view file;            // the whole JPEG
  size_t height_offset = 0;         // of the frame header's height field in it
  size_t scan_start = 0;            // where the headers end
  JOCTET frame_height[2] = {0, 0};  // this band's height, big-endian, for the frame header
  const JOCTET* data = nullptr;
  size_t size = 0;
  int reduction = 1;
  int width = 0;  // expected output size
  int height = 0;
  unsigned char* rows = nullptr;  // where row 0 of the band goes
  size_t stride = 0;
  bool ok = false;
};

void Decode(Band* band) {
  jpeg_decompress_struct cinfo;
  ErrorManager errors;
  Source source;
  cinfo.err = jpeg_std_error(&errors.pub);
  errors.pub.error_exit = ErrorExit;
  errors.pub.emit_message = EmitMessage;
  errors.pub.output_message = OutputMessage;
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&cinfo);
    band->ok = false;
    return;
  }
  jpeg_create_decompress(&cinfo);
  source.pub.init_source = InitSource;
  source.pub.fill_input_buffer = FillInputBuffer;
  source.pub.skip_input_data = SkipInputData;
  source.pub.resync_to_restart = jpeg_resync_to_restart;
  source.pub.term_source = TermSource;
  source.pub.next_input_byte = nullptr;
  source.pub.bytes_in_buffer = 0;
  const JOCTET* file = reinterpret_cast<const JOCTET*>(band->file.data());
  source.pieces[0] = file;
  source.sizes[0] = band->height_offset;
  source.pieces[1] = band->frame_height;
  source.sizes[1] = 2;
  source.pieces[2] = file + band->height_offset + 2;
  source.sizes[2] = band->scan_start - band->height_offset - 2;
  source.pieces[3] = band->data;
  source.sizes[3] = band->size;
  source.pieces[4] = kEndOfImage;
  source.sizes[4] = sizeof(kEndOfImage);
  source.next = 0;
  cinfo.src = &source.pub;
  jpeg_read_header(&cinfo, TRUE);
  cinfo.scale_num = 1;
  cinfo.scale_denom = static_cast<unsigned int>(band->reduction);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  if (static_cast<int>(cinfo.output_width) != band->width ||
      static_cast<int>(cinfo.output_height) != band->height || cinfo.output_components != 3) {
    jpeg_destroy_decompress(&cinfo);
    band->ok = false;
    return;
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = band->rows + band->stride * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  band->ok = errors.pub.num_warnings == 0;
  jpeg_destroy_decompress(&cinfo);
}

}  // namespace

std::optional<cv::Mat> DecodeJpegInBands(std::string_view bytes, int reduction,
                                         const JpegBandOptions& options, int* bands_used) {
  if (reduction != 2 && reduction != 4 && reduction != 8) return std::nullopt;
  const int threads =
      options.max_threads > 0
          ? options.max_threads
          : std::min(8, UsableCores().usable);
  if (threads < 2) return std::nullopt;
  std::optional<Layout> layout = ReadHeaders(bytes);
  if (!layout) return std::nullopt;
  // Before reading the data: most images are small, and a scan of their bytes would be waste.
  if (int64_t{layout->width} * layout->height < options.min_pixels) return std::nullopt;
  if (!FindIntervals(bytes, *layout)) return std::nullopt;

  // A band may start at an MCU row that begins a restart interval whose number is a multiple
  // of 8: the band's first marker is then RST0, which is what a decoder starting a scan
  // expects. Huffman decoding is most of the work and goes with the bytes, not the rows (the
  // sky of a photo takes far fewer than its detail): pick the allowed rows whose data starts
  // nearest to equal shares of the bytes.
  std::vector<int64_t> cuts;      // rows
  std::vector<size_t> cut_bytes;  // where their data starts
  for (int64_t row = 1; row < layout->mcu_rows; ++row) {
    const int64_t mcu = row * layout->mcus_per_row;
    if (mcu % layout->restart_interval == 0 && (mcu / layout->restart_interval) % 8 == 0) {
      cuts.push_back(row);
      cut_bytes.push_back(
          layout->interval_start[static_cast<size_t>(mcu / layout->restart_interval)]);
    }
  }
  const size_t data_bytes = layout->interval_end.back() - layout->scan_start;
  std::vector<int64_t> starts = {0};
  for (int k = 1; k < threads; ++k) {
    const size_t target =
        layout->scan_start + data_bytes / static_cast<size_t>(threads) * static_cast<size_t>(k);
    const size_t i = static_cast<size_t>(
        std::lower_bound(cut_bytes.begin(), cut_bytes.end(), target) - cut_bytes.begin());
    size_t best = i;
    if (i > 0 && (i == cuts.size() || target - cut_bytes[i - 1] < cut_bytes[i] - target)) {
      best = i - 1;
    }
    if (best < cuts.size() && cuts[best] > starts.back()) starts.push_back(cuts[best]);
  }
  if (starts.size() < 2) return std::nullopt;
  starts.push_back(layout->mcu_rows);

  const int out_width = (layout->width + reduction - 1) / reduction;
  const int out_height = (layout->height + reduction - 1) / reduction;
  try {
    cv::Mat rgb(out_height, out_width, CV_8UC3);
    const size_t bands = starts.size() - 1;
    std::vector<Band> work(bands);
    for (size_t k = 0; k < bands; ++k) {
      const int64_t first_row = starts[k], end_row = starts[k + 1];
      const int top = static_cast<int>(first_row * layout->mcu_height);
      const int band_height = k + 1 == bands
                                  ? layout->height - top
                                  : static_cast<int>((end_row - first_row) * layout->mcu_height);
      const size_t first_interval =
          static_cast<size_t>(first_row * layout->mcus_per_row / layout->restart_interval);
      const size_t last_interval =
          k + 1 == bands
              ? layout->interval_end.size() - 1
              : static_cast<size_t>(end_row * layout->mcus_per_row / layout->restart_interval) - 1;
      Band& band = work[k];
      band.file = bytes;
      band.height_offset = layout->sof_height_offset;
      band.scan_start = layout->scan_start;
      band.frame_height[0] = static_cast<JOCTET>(band_height >> 8);
      band.frame_height[1] = static_cast<JOCTET>(band_height & 0xFF);
      band.data =
          reinterpret_cast<const JOCTET*>(bytes.data()) + layout->interval_start[first_interval];
      band.size = layout->interval_end[last_interval] - layout->interval_start[first_interval];
      band.reduction = reduction;
      band.width = out_width;
      band.height = (band_height + reduction - 1) / reduction;
      band.rows = rgb.ptr(top / reduction);
      band.stride = rgb.step[0];
    }
    std::vector<std::thread> helpers;
    for (size_t k = 1; k < bands; ++k) {
      try {
        helpers.emplace_back(Decode, &work[k]);
      } catch (const std::exception&) {
        Decode(&work[k]);  // no thread to be had: this one does it
      }
    }
    Decode(&work[0]);
    for (std::thread& t : helpers) t.join();
    for (const Band& band : work) {
      if (!band.ok) return std::nullopt;
    }
    if (bands_used != nullptr) *bands_used = static_cast<int>(bands);
    return rgb;
  } catch (const std::exception&) {
    return std::nullopt;  // memory: the usual decode reports it
  }
}

}  // namespace deeplab
