// deeplab-png-bench: the worker's PNG writer (EncodePng: one filter per row, run-length
// deflate) against OpenCV's PNG writer as the worker called it before (cv::imencode at zlib
// level 1, libpng's adaptive filters), side by side in one run, on a label map and an
// overlay of a given size. docs/BENCHMARKS.md ("PNG outputs") has the numbers.
//
//   deeplab-png-bench LABELS.png PHOTO [WIDTHxHEIGHT] [ROUNDS]
//
// LABELS.png is a one-channel label map (e.g. models/demo/samples/labels/000001.png); it is
// scaled to WIDTHxHEIGHT (default 5000x3500) by nearest neighbour, as a network's output is
// restored to a photo's size. The overlay is PHOTO scaled to that size, blended with the
// labels' colours. Each round encodes each image with both writers, alternating.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "common/image_codec.h"

namespace {

double Ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since)
      .count();
}

// What the worker did before: RGB to BGR for colour, then OpenCV's writer at level 1.
size_t EncodeWithOpenCv(const cv::Mat& image) {
  cv::Mat bgr = image;
  if (image.channels() == 3) cv::cvtColor(image, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> png;
  cv::imencode(".png", bgr, png, {cv::IMWRITE_PNG_COMPRESSION, 1});
  return png.size();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 5) {
    std::fprintf(stderr, "usage: deeplab-png-bench LABELS.png PHOTO [WIDTHxHEIGHT] [ROUNDS]\n");
    return 2;
  }
  int width = 5000, height = 3500, rounds = 5;
  if (argc >= 4 && std::sscanf(argv[3], "%dx%d", &width, &height) != 2) {
    std::fprintf(stderr, "bad size '%s': WIDTHxHEIGHT\n", argv[3]);
    return 2;
  }
  if (argc >= 5) rounds = std::atoi(argv[4]);
  if (width < 1 || height < 1 || width > 20000 || height > 20000 || rounds < 1) {
    std::fprintf(stderr, "size 1-20000 on each side and at least one round\n");
    return 2;
  }
  const cv::Mat small = cv::imread(argv[1], cv::IMREAD_UNCHANGED);
  const cv::Mat photo = cv::imread(argv[2], cv::IMREAD_COLOR);
  if (small.empty() || small.type() != CV_8UC1 || photo.empty()) {
    std::fprintf(stderr, "need a one-channel 8-bit PNG of labels and a readable photo\n");
    return 1;
  }
  cv::Mat labels, rgb, colour, overlay;
  cv::resize(small, labels, cv::Size(width, height), 0, 0, cv::INTER_NEAREST);
  cv::resize(photo, rgb, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
  cv::cvtColor(rgb, rgb, cv::COLOR_BGR2RGB);
  cv::Mat labels3;
  cv::cvtColor(labels, labels3, cv::COLOR_GRAY2RGB);
  cv::applyColorMap(labels3 * 12, colour, cv::COLORMAP_JET);
  cv::addWeighted(rgb, 0.5, colour, 0.5, 0.0, overlay);

  std::printf("| image | writer | round | ms | KiB |\n|---|---|---|---|---|\n");
  for (int round = 1; round <= rounds; ++round) {
    for (const auto& [name, image] : {std::pair<const char*, const cv::Mat*>{"labels", &labels},
                                      {"overlay", &overlay}}) {
      auto start = std::chrono::steady_clock::now();
      const size_t before = EncodeWithOpenCv(*image);
      const double before_ms = Ms(start);
      start = std::chrono::steady_clock::now();
      const size_t now = deeplab::EncodePng(*image).size();
      const double now_ms = Ms(start);
      std::printf("| %s %dx%d | OpenCV (before) | %d | %.1f | %zu |\n", name, width, height,
                  round, before_ms, before / 1024);
      std::printf("| %s %dx%d | EncodePng | %d | %.1f | %zu |\n", name, width, height, round,
                  now_ms, now / 1024);
    }
  }
  return 0;
}
