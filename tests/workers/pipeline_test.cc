// The label upsampling of the worker pipeline against its definition: bilinear resize of
// every class's scores (torch::nn::functional::interpolate) followed by argmax.
#include <gtest/gtest.h>

#include <tuple>

#include "tests/workers/test_util.h"
#include "workers/worker/pipeline.h"

namespace deeplab {
namespace {

namespace F = torch::nn::functional;

// Scores that look like a network's: smooth class regions (a coarse random field enlarged)
// plus a little pixel noise, so there are boundaries in every direction.
torch::Tensor SmoothScores(int64_t classes, int64_t h, int64_t w, uint64_t seed) {
  torch::Tensor coarse = testing::PortableTensor({1, classes, 5, 7}, seed) * 4;
  torch::Tensor smooth = F::interpolate(coarse, F::InterpolateFuncOptions()
                                                    .size(std::vector<int64_t>{h, w})
                                                    .mode(torch::kBicubic)
                                                    .align_corners(false))[0];
  return (smooth + 0.05 * testing::PortableTensor({classes, h, w}, seed + 1)).contiguous();
}

using Case = std::tuple<int, int, int, int, int, bool>;  // classes, in h, w, out h, w, align

class UpsampleArgmaxTest : public ::testing::TestWithParam<Case> {};

TEST_P(UpsampleArgmaxTest, MatchesResizeThenArgmax) {
  const auto [classes, in_h, in_w, out_h, out_w, align] = GetParam();
  const torch::Tensor planes = SmoothScores(classes, in_h, in_w, 1000 + classes + in_h);
  const torch::Tensor resized =
      (in_h == out_h && in_w == out_w)
          ? planes
          : F::interpolate(planes.unsqueeze(0), F::InterpolateFuncOptions()
                                                    .size(std::vector<int64_t>{out_h, out_w})
                                                    .mode(torch::kBilinear)
                                                    .align_corners(align))[0];
  const torch::Tensor expected = resized.argmax(0).to(torch::kUInt8).contiguous();
  const cv::Mat labels = UpsampleArgmax(planes, out_h, out_w, align);
  ASSERT_EQ(labels.rows, out_h);
  ASSERT_EQ(labels.cols, out_w);
  ASSERT_EQ(labels.type(), CV_8UC1);
  const uint8_t* want = expected.data_ptr<uint8_t>();
  int differ = 0, boundary = 0;
  for (int y = 0; y < out_h; ++y) {
    for (int x = 0; x < out_w; ++x) {
      const uint8_t got = labels.at<uint8_t>(y, x);
      const uint8_t ref = want[y * out_w + x];
      if ((x > 0 && want[y * out_w + x - 1] != ref) || (y > 0 && want[(y - 1) * out_w + x] != ref)) {
        ++boundary;
      }
      if (got == ref) continue;
      ++differ;
      // Only a rounding-level tie may go the other way: PyTorch's own scores for the two
      // classes must be equal to float precision.
      const float a = resized[got][y][x].item<float>();
      const float b = resized[ref][y][x].item<float>();
      EXPECT_NEAR(a, b, 1e-5f * (std::abs(b) + 1)) << "pixel (" << y << "," << x << ")";
    }
  }
  EXPECT_GT(boundary, 0) << "the case has no class boundary: it tests nothing";
  EXPECT_LE(differ, 2) << "of " << out_h * out_w;
}

INSTANTIATE_TEST_SUITE_P(
    Geometries, UpsampleArgmaxTest,
    ::testing::Values(Case{21, 64, 48, 451, 333, false},  // enlarge, non-integer ratios
                      Case{21, 64, 48, 451, 333, true},
                      Case{2, 128, 128, 700, 1024, false},  // pathology-like, 2 classes
                      Case{5, 128, 96, 97, 61, false},      // shrink (small original)
                      Case{5, 128, 96, 97, 61, true},
                      Case{19, 40, 40, 40, 40, false},      // same size: plain argmax
                      Case{3, 1, 30, 17, 300, false},       // a one-row strip
                      Case{6, 47, 1, 300, 17, true}));

// ComputeLabels takes the fast path without probabilities and the full one with them: the
// labels must be the same either way.
TEST(ComputeLabelsTest, LabelsDoNotDependOnAskingForProbabilities) {
  PipelineConfig config;
  config.input_height = 96;
  config.input_width = 96;
  config.num_classes = 6;
  PreparedImage image = Preprocess(cv::Mat(300, 410, CV_8UC3, cv::Scalar(1, 2, 3)), config);
  ASSERT_EQ(image.content_width, 96);
  const torch::Tensor scores = SmoothScores(6, 96, 96, 77).unsqueeze(0);
  const ItemScores fast = ComputeLabels(image, scores, config, /*want_probabilities=*/false);
  const ItemScores full = ComputeLabels(image, scores, config, /*want_probabilities=*/true);
  ASSERT_EQ(fast.labels.size(), cv::Size(410, 300));
  EXPECT_TRUE(fast.probabilities.empty());
  ASSERT_EQ(full.probabilities.size(), 6u);
  EXPECT_LE(cv::countNonZero(fast.labels != full.labels), 2);
  EXPECT_GT(cv::countNonZero(fast.labels), 0);  // more than one class present
}

}  // namespace
}  // namespace deeplab
