// The CPU side of the worker pipeline: Preprocess's uint8 inputs and geometry (letterbox,
// stretch, tiles), and EncodeOutputs from restored labels.
#include "workers/worker/pipeline.h"

#include <gtest/gtest.h>

#include <opencv2/imgproc.hpp>

#include "common/image_codec.h"

namespace deeplab {
namespace {

PipelineConfig Config(int h, int w, int stride = 0) {
  PipelineConfig config;
  config.input_height = h;
  config.input_width = w;
  config.tile_stride = stride;
  config.num_classes = 3;
  return config;
}

TEST(PreprocessTest, LetterboxIsUint8WithTheImageTopLeftAndZeroPadding) {
  const PreparedImage image = Preprocess(cv::Mat(300, 410, CV_8UC3, cv::Scalar(1, 2, 3)), Config(96, 96));
  ASSERT_EQ(image.item.inputs.size(), 1u);
  const BatchInput& in = image.item.inputs[0];
  EXPECT_EQ(in.pixels.sizes(), (std::vector<int64_t>{96, 96, 3}));
  EXPECT_EQ(in.pixels.scalar_type(), torch::kUInt8);
  EXPECT_EQ(image.item.geometry.content_width, 96);
  EXPECT_EQ(image.item.geometry.content_height, 70);  // int(300 * 96 / 410)
  EXPECT_EQ(in.valid_height, 70);
  EXPECT_EQ(in.valid_width, 96);
  EXPECT_EQ(image.item.geometry.height, 300);
  EXPECT_EQ(image.item.geometry.width, 410);
  EXPECT_EQ(in.pixels[69][95][2].item<int>(), 3);
  EXPECT_EQ(in.pixels[70][0][0].item<int>(), 0);
  EXPECT_EQ(in.pixels.slice(0, 70).sum().item<int64_t>(), 0);
  EXPECT_EQ(image.cost(), 1);
}

TEST(PreprocessTest, StretchFillsTheInput) {
  PipelineConfig config = Config(32, 48);
  config.resize = v1::RESIZE_MODE_STRETCH;
  const PreparedImage image = Preprocess(cv::Mat(300, 100, CV_8UC3, cv::Scalar(9, 9, 9)), config);
  EXPECT_EQ(image.item.inputs[0].valid_height, 32);
  EXPECT_EQ(image.item.inputs[0].valid_width, 48);
  EXPECT_EQ(image.item.inputs[0].pixels.min().item<int>(), 9);
}

TEST(PreprocessTest, AReducedDecodeKeepsTheOriginalsGeometry) {
  const PipelineConfig config = Config(96, 96);
  // What the decoder must keep of a 300x410 image: the letterboxed content, 96x70.
  const MinimumSize minimum = MinimumDecodeSize(config);
  ASSERT_TRUE(minimum);
  EXPECT_EQ(minimum(300, 410), cv::Size(96, 70));
  DecodedImage reduced;
  reduced.rgb = cv::Mat(75, 103, CV_8UC3, cv::Scalar(1, 2, 3));  // decoded at 1/4
  reduced.height = 300;
  reduced.width = 410;
  reduced.reduction = 4;
  const PreparedImage image = Preprocess(reduced, config);
  EXPECT_EQ(image.height(), 300);
  EXPECT_EQ(image.width(), 410);
  EXPECT_EQ(image.item.geometry.content_height, 70);
  EXPECT_EQ(image.item.geometry.content_width, 96);
  EXPECT_EQ(image.item.inputs[0].pixels[69][95][2].item<int>(), 3);
  EXPECT_EQ(image.item.inputs[0].pixels[70][0][0].item<int>(), 0);
  // Stretch needs the input size; tiles need full resolution.
  PipelineConfig stretch = Config(32, 48);
  stretch.resize = v1::RESIZE_MODE_STRETCH;
  EXPECT_EQ(MinimumDecodeSize(stretch)(300, 100), cv::Size(48, 32));
  EXPECT_FALSE(MinimumDecodeSize(Config(32, 32, 16)));
}

TEST(PreprocessTest, TilesAreViewsWithTheirValidRegion) {
  cv::Mat rgb(100, 70, CV_8UC3);
  cv::randu(rgb, 0, 255);
  const PreparedImage image = Preprocess(rgb, Config(32, 32, 16));
  ASSERT_EQ(image.cost(), static_cast<int>(image.item.geometry.tile_origins.size()));
  ASSERT_GT(image.cost(), 4);
  for (int i = 0; i < image.cost(); ++i) {
    const auto [y, x] = image.item.geometry.tile_origins[i];
    const BatchInput& in = image.item.inputs[i];
    EXPECT_EQ(in.valid_height, 32);  // the image is larger than a patch: tiles lie inside
    EXPECT_EQ(in.valid_width, 32);
    EXPECT_EQ(in.pixels[5][7][1].item<int>(), rgb.at<cv::Vec3b>(y + 5, x + 7)[1]);
  }
  // An image smaller than a patch: one padded tile.
  const PreparedImage small = Preprocess(cv::Mat(20, 10, CV_8UC3, cv::Scalar(5, 5, 5)), Config(32, 32, 16));
  ASSERT_EQ(small.cost(), 1);
  EXPECT_EQ(small.item.inputs[0].valid_height, 20);
  EXPECT_EQ(small.item.inputs[0].valid_width, 10);
  EXPECT_EQ(small.item.inputs[0].pixels[25][5][0].item<int>(), 0);
}

TEST(EncodeOutputsTest, ProbabilitiesAndStatsFromRestoredOutputs) {
  PipelineConfig config = Config(8, 8);
  config.class_names = {"a", "b", "c"};
  config.palette = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}};
  const PreparedImage image = Preprocess(cv::Mat(4, 5, CV_8UC3, cv::Scalar(0, 0, 0)), config);
  ItemOutputs outputs;
  outputs.labels = torch::zeros({4, 5}, torch::kUInt8);
  outputs.labels[1].fill_(2);
  outputs.probabilities = torch::full({3, 4, 5}, 85, torch::kUInt8);
  v1::OutputOptions options;
  options.set_label_raw(true);
  options.set_probabilities(true);
  options.set_class_stats(true);
  v1::SegmentationResult result;
  EncodeOutputs(image, outputs, config, options, &result);
  EXPECT_EQ(result.height(), 4);
  EXPECT_EQ(result.width(), 5);
  ASSERT_EQ(result.label_raw().size(), 20u);
  EXPECT_EQ(result.label_raw()[5], 2);
  EXPECT_EQ(result.probabilities().num_classes(), 3);
  EXPECT_EQ(result.probabilities().data(), std::string(60, static_cast<char>(85)));
  ASSERT_EQ(result.class_stats_size(), 2);
  EXPECT_EQ(result.class_stats(1).name(), "c");
  EXPECT_EQ(result.class_stats(1).pixels(), 5);
}

}  // namespace
}  // namespace deeplab
