// The batch path (workers/batch): label restore against its definition (bilinear resize of
// every class's scores, then argmax), the device implementation against the CPU one label
// for label, normalization and padding, and whole batches through a real network.
#include "workers/batch/batch_path.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tuple>

#include "tests/workers/test_util.h"

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

const auto kGeometries = ::testing::Values(
    Case{21, 64, 48, 451, 333, false},  // enlarge, non-integer ratios
    Case{21, 64, 48, 451, 333, true},
    Case{2, 128, 128, 700, 1024, false},  // pathology-like, 2 classes
    Case{5, 128, 96, 97, 61, false},      // shrink (small original)
    Case{5, 128, 96, 97, 61, true},
    Case{19, 40, 40, 40, 40, false},  // same size: plain argmax
    Case{3, 1, 30, 17, 300, false},   // a one-row strip
    Case{6, 47, 1, 300, 17, true},
    Case{21, 256, 171, 1500, 1000, false},  // 1.5 megapixels: two strips of rows
    Case{19, 37, 53, 1, 1, false},          // down to one pixel
    Case{7, 2, 2, 255, 129, true});

class UpsampleArgmaxTest : public ::testing::TestWithParam<Case> {};

TEST_P(UpsampleArgmaxTest, MatchesResizeThenArgmax) {
  const auto [classes, in_h, in_w, out_h, out_w, align] = GetParam();
  if (out_h * out_w > 1'000'000) GTEST_SKIP() << "the reference would resize 21 float planes";
  const torch::Tensor planes = SmoothScores(classes, in_h, in_w, 1000 + classes + in_h);
  const torch::Tensor resized =
      (in_h == out_h && in_w == out_w)
          ? planes
          : F::interpolate(planes.unsqueeze(0), F::InterpolateFuncOptions()
                                                    .size(std::vector<int64_t>{out_h, out_w})
                                                    .mode(torch::kBilinear)
                                                    .align_corners(align))[0];
  const torch::Tensor expected = resized.argmax(0).to(torch::kUInt8).contiguous();
  const torch::Tensor labels = UpsampleArgmax(planes, out_h, out_w, align);
  ASSERT_EQ(labels.sizes(), (std::vector<int64_t>{out_h, out_w}));
  ASSERT_EQ(labels.scalar_type(), torch::kUInt8);
  const uint8_t* want = expected.data_ptr<uint8_t>();
  const uint8_t* got_data = labels.data_ptr<uint8_t>();
  int differ = 0, boundary = 0;
  for (int y = 0; y < out_h; ++y) {
    for (int x = 0; x < out_w; ++x) {
      const uint8_t got = got_data[y * out_w + x];
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
  if (out_h * out_w > 1) {
    EXPECT_GT(boundary, 0) << "the case has no class boundary: it tests nothing";
  }
  EXPECT_LE(differ, 2) << "of " << out_h * out_w;
}

// The device implementation, run here on the CPU, gives exactly the CPU's labels.
TEST_P(UpsampleArgmaxTest, TensorOpsGiveTheSameLabelsAsTheCpuPath) {
  const auto [classes, in_h, in_w, out_h, out_w, align] = GetParam();
  const torch::Tensor planes = SmoothScores(classes, in_h, in_w, 2000 + classes + in_w);
  const torch::Tensor cpu = UpsampleArgmax(planes, out_h, out_w, align);
  const torch::Tensor ops = UpsampleArgmaxTensorOps(planes, out_h, out_w, align);
  ASSERT_EQ(ops.sizes(), cpu.sizes());
  ASSERT_EQ(ops.scalar_type(), torch::kUInt8);
  EXPECT_EQ(ops.ne(cpu).sum().item<int64_t>(), 0) << "of " << out_h * out_w;
  if (out_h * out_w > 1) {
    EXPECT_GT(cpu.max().item<int>(), cpu.min().item<int>());
  }
}

INSTANTIATE_TEST_SUITE_P(Geometries, UpsampleArgmaxTest, kGeometries);

// Half-precision scores (what an fp16 network returns) take the same path after the
// conversion to float.
TEST(UpsampleArgmaxTest, HalfScoresAgreeToo) {
  const torch::Tensor planes = SmoothScores(21, 64, 64, 9).to(torch::kHalf);
  const torch::Tensor as_float = planes.to(torch::kFloat32);
  EXPECT_TRUE(torch::equal(UpsampleArgmaxTensorOps(planes, 300, 200, false),
                           UpsampleArgmax(as_float, 300, 200, false)));
}

// Whole items, letterboxed and tiled, with and without probabilities: the device
// implementation (tensor ops, forced on the CPU) against the CPU one.
struct ItemCase {
  std::string name;
  int classes, input, height, width, stride;  // stride > 0: tiled
  bool align, probabilities_in, want_probabilities;
};

class RestoreItemTest : public ::testing::TestWithParam<ItemCase> {};

TEST_P(RestoreItemTest, DeviceImplementationGivesTheCpuLabels) {
  const ItemCase& c = GetParam();
  ItemGeometry g;
  g.height = c.height;
  g.width = c.width;
  if (c.stride > 0) {
    for (int y = 0;; y += c.stride) {
      const int top = std::min(y, std::max(0, c.height - c.input));
      for (int x = 0;; x += c.stride) {
        const int left = std::min(x, std::max(0, c.width - c.input));
        g.tile_origins.emplace_back(top, left);
        if (left + c.input >= c.width) break;
      }
      if (top + c.input >= c.height) break;
    }
  } else {
    const double ratio = std::min(static_cast<double>(c.input) / c.height,
                                  static_cast<double>(c.input) / c.width);
    g.content_height = std::max(1, static_cast<int>(ratio * c.height));
    g.content_width = std::max(1, static_cast<int>(ratio * c.width));
  }
  torch::Tensor scores = torch::stack(
      [&] {
        std::vector<torch::Tensor> tiles;
        for (int i = 0; i < g.cost(); ++i) {
          torch::Tensor s = SmoothScores(c.classes, c.input, c.input, 300 + i * 7 + c.classes);
          tiles.push_back(c.probabilities_in ? torch::softmax(s, 0) : s);
        }
        return tiles;
      }());
  RestoreOptions options;
  options.input_height = c.input;
  options.input_width = c.input;
  options.align_corners = c.align;
  options.scores_are_probabilities = c.probabilities_in;
  const ItemOutputs cpu = RestoreItem(scores, g, options, c.want_probabilities);
  options.label_path = LabelPath::kTensorOps;
  const ItemOutputs ops = RestoreItem(scores, g, options, c.want_probabilities);
  ASSERT_EQ(cpu.labels.sizes(), (std::vector<int64_t>{c.height, c.width}));
  EXPECT_EQ(ops.labels.ne(cpu.labels).sum().item<int64_t>(), 0);
  EXPECT_GT(cpu.labels.max().item<int>(), cpu.labels.min().item<int>()) << "one class only";
  if (!c.want_probabilities) {
    EXPECT_FALSE(cpu.probabilities.defined());
    return;
  }
  ASSERT_TRUE(cpu.probabilities.defined());
  EXPECT_EQ(cpu.probabilities.sizes(), (std::vector<int64_t>{c.classes, c.height, c.width}));
  EXPECT_EQ(cpu.probabilities.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(ops.probabilities, cpu.probabilities));
  // Quantized probabilities sum to about 255 per pixel (C roundings of at most 0.5 each).
  const torch::Tensor sums = cpu.probabilities.to(torch::kInt32).sum(0);
  EXPECT_LE((sums - 255).abs().max().item<int>(), (c.classes + 1) / 2);
}

INSTANTIATE_TEST_SUITE_P(
    Items, RestoreItemTest,
    ::testing::Values(ItemCase{"letterbox_wide", 21, 64, 300, 410, 0, false, false, false},
                      ItemCase{"letterbox_tall_probs", 21, 64, 411, 97, 0, false, false, true},
                      ItemCase{"letterbox_align", 19, 48, 250, 251, 0, true, false, true},
                      ItemCase{"activation_softmax", 5, 32, 77, 45, 0, false, true, true},
                      ItemCase{"tiles_overlapping", 2, 32, 90, 70, 16, true, true, true},
                      ItemCase{"tiles_logits", 3, 32, 64, 100, 16, false, false, false},
                      ItemCase{"tile_smaller_than_patch", 2, 64, 40, 30, 32, true, true, true}),
    [](const auto& info) { return info.param.name; });

TEST(NormalizeBatchTest, EachNormalizationAsTheReferencesComputeIt) {
  torch::Tensor pixels = torch::zeros({2, 4, 5, 3}, torch::kUInt8);
  pixels[0][0][0][0] = 255;
  pixels[0][0][0][1] = 128;
  pixels[0][0][0][2] = 0;
  pixels[1].fill_(51);
  const std::vector<int> full_h = {4, 4}, full_w = {5, 5};
  auto at = [](const torch::Tensor& x, int n, int c, int y, int w) {
    return x[n][c][y][w].item<float>();
  };
  torch::Tensor x = NormalizeBatch(pixels, full_h, full_w, InputNormalization::kMinusOneToOne,
                                   torch::kFloat32, false);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{2, 3, 4, 5}));
  EXPECT_TRUE(x.is_contiguous());
  EXPECT_FLOAT_EQ(at(x, 0, 0, 0, 0), 1.0f);
  EXPECT_FLOAT_EQ(at(x, 0, 1, 0, 0), 128.0f / 127.5f - 1.0f);
  EXPECT_FLOAT_EQ(at(x, 0, 2, 0, 0), -1.0f);
  x = NormalizeBatch(pixels, full_h, full_w, InputNormalization::kDigiPathAi, torch::kFloat32, true);
  EXPECT_TRUE(x.is_contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_FLOAT_EQ(at(x, 0, 1, 0, 0), 0.0f);
  EXPECT_FLOAT_EQ(at(x, 1, 2, 3, 4), (51.0f - 128.0f) / 128.0f);
  x = NormalizeBatch(pixels, full_h, full_w, InputNormalization::kImageNet, torch::kFloat32, false);
  EXPECT_NEAR(at(x, 1, 0, 0, 0), (0.2f - 0.485f) / 0.229f, 1e-6);
  EXPECT_NEAR(at(x, 1, 2, 0, 0), (0.2f - 0.406f) / 0.225f, 1e-6);
  x = NormalizeBatch(pixels, full_h, full_w, InputNormalization::kNone, torch::kBFloat16, false);
  EXPECT_EQ(x.scalar_type(), torch::kBFloat16);
  EXPECT_FLOAT_EQ(at(x, 1, 0, 2, 2), 51.0f);
}

// The letterbox padding is zero after normalization (not -1), and only the padding is.
TEST(NormalizeBatchTest, PaddingIsZeroAfterNormalization) {
  torch::Tensor pixels = torch::full({2, 6, 8, 3}, 10, torch::kUInt8);
  const torch::Tensor x = NormalizeBatch(pixels, {6, 3}, {5, 8}, InputNormalization::kMinusOneToOne,
                                         torch::kFloat32, false);
  const float image = 10.0f / 127.5f - 1.0f;
  for (int y = 0; y < 6; ++y) {
    for (int w = 0; w < 8; ++w) {
      EXPECT_FLOAT_EQ(x[0][1][y][w].item<float>(), w < 5 ? image : 0.0f) << y << "," << w;
      EXPECT_FLOAT_EQ(x[1][2][y][w].item<float>(), y < 3 ? image : 0.0f) << y << "," << w;
    }
  }
}

// A small real network behind the batch path.
class BatchPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ModelSpec spec = testing::Spec("mobilenetv2", 5, 16, 0.35);
    spec.decoder = 1;
    spec.head_channels = 32;
    torch::manual_seed(3);
    auto model = LoadSegmentationModel(spec, WeightsFormat::kRandom, "");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    options_.input_height = 64;
    options_.input_width = 64;
    options_.max_forward_batch = 4;
  }

  // A letterboxed item of a height x width image of smooth colours.
  BatchItem Item(int height, int width, uint64_t seed, bool probabilities = false) {
    BatchItem item;
    ItemGeometry& g = item.geometry;
    g.height = height;
    g.width = width;
    const double ratio = std::min(64.0 / height, 64.0 / width);
    g.content_height = std::max(1, static_cast<int>(ratio * height));
    g.content_width = std::max(1, static_cast<int>(ratio * width));
    torch::Tensor pixels = torch::zeros({64, 64, 3}, torch::kUInt8);
    const torch::Tensor colours =
        ((SmoothScores(3, g.content_height, g.content_width, seed) + 3) * 40)
            .clamp(0, 255)
            .permute({1, 2, 0})
            .to(torch::kUInt8);
    pixels.slice(0, 0, g.content_height).slice(1, 0, g.content_width).copy_(colours);
    item.inputs.push_back({pixels, g.content_height, g.content_width});
    item.want_probabilities = probabilities;
    return item;
  }

  std::vector<ItemOutputs> RunAll(BatchPath& path, const std::vector<BatchItem>& items) {
    std::vector<const BatchItem*> pointers;
    for (const BatchItem& item : items) pointers.push_back(&item);
    std::unique_ptr<BatchRun> run = path.Submit(pointers);
    EXPECT_TRUE(run->Wait().ok());
    std::vector<ItemOutputs> out;
    for (size_t i = 0; i < items.size(); ++i) out.push_back(run->TakeOutputs(static_cast<int>(i)));
    return out;
  }

  std::unique_ptr<SegmentationModel> model_;
  BatchPathOptions options_;
};

// The batch path computes what the network computes on the normalized input, restored as
// RestoreItem restores it: nothing lost between the stages, batch-mates independent.
TEST_F(BatchPathTest, SameLabelsAsTheNetworkOnNormalizedInputs) {
  BatchPath path(model_.get(), options_);
  std::vector<BatchItem> items = {Item(100, 150, 1), Item(90, 40, 2, true), Item(64, 64, 3),
                                  Item(33, 200, 4), Item(500, 301, 5, true), Item(7, 9, 6)};
  const std::vector<ItemOutputs> out = RunAll(path, items);  // 6 inputs: passes of 4 and 2
  for (size_t i = 0; i < items.size(); ++i) {
    const BatchItem& item = items[i];
    const BatchInput& in = item.inputs[0];
    const torch::Tensor x = NormalizeBatch(in.pixels.unsqueeze(0), {in.valid_height},
                                           {in.valid_width}, options_.normalization,
                                           torch::kFloat32, false);
    const torch::Tensor scores = *model_->Forward(x);
    RestoreOptions restore = options_.restore;
    restore.input_height = restore.input_width = 64;
    const ItemOutputs want = RestoreItem(scores, item.geometry, restore, item.want_probabilities);
    ASSERT_EQ(out[i].labels.sizes(), want.labels.sizes());
    // A batch of 4 may take other convolution kernels than a batch of 1: rounding only.
    const double agree = out[i].labels.eq(want.labels).to(torch::kFloat64).mean().item<double>();
    EXPECT_GE(agree, 0.999) << "item " << i;
    EXPECT_EQ(out[i].probabilities.defined(), item.want_probabilities);
  }
}

// Padding a pass to a fixed batch size changes nothing but the work done, and the bytes
// moved are what the items need: uint8 pixels in, uint8 labels (and probabilities) out.
TEST_F(BatchPathTest, PaddedBatchesAndBytesMoved) {
  BatchPath plain(model_.get(), options_);
  BatchPathOptions padded_options = options_;
  padded_options.padded_batch_sizes = {4, 2};
  BatchPath padded(model_.get(), padded_options);
  std::vector<BatchItem> items = {Item(100, 150, 1), Item(90, 40, 2, true), Item(64, 64, 3),
                                  Item(33, 200, 4), Item(50, 30, 5)};
  std::vector<const BatchItem*> pointers;
  for (const BatchItem& item : items) pointers.push_back(&item);
  std::unique_ptr<BatchRun> a = plain.Submit(pointers);
  std::unique_ptr<BatchRun> b = padded.Submit(pointers);
  ASSERT_TRUE(a->Wait().ok());
  ASSERT_TRUE(b->Wait().ok());
  EXPECT_EQ(a->inputs(), 5);
  EXPECT_EQ(a->padded_inputs(), 5);
  EXPECT_EQ(b->padded_inputs(), 4 + 2);  // 4, then 1 padded to 2
  EXPECT_EQ(a->bytes_to_device(), 5 * 64 * 64 * 3);
  EXPECT_EQ(a->bytes_to_host(), 100 * 150 + 90 * 40 * (1 + 5) + 64 * 64 + 33 * 200 + 50 * 30);
  for (int i = 0; i < 5; ++i) {
    const ItemOutputs x = a->TakeOutputs(i);
    const ItemOutputs y = b->TakeOutputs(i);
    EXPECT_GE(x.labels.eq(y.labels).to(torch::kFloat64).mean().item<double>(), 0.999) << i;
  }
}

TEST_F(BatchPathTest, WarmUpChoosesALayoutAndRunsEveryPaddedSize) {
  options_.padded_batch_sizes = {1, 2};
  BatchPath path(model_.get(), options_);
  absl::StatusOr<std::string> line = path.WarmUp(/*choose_layout=*/true);
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(*line, ::testing::MatchesRegex(
                         "layout (nchw|channels_last) \\([0-9.]+ ms\\) over "
                         "(nchw|channels_last) \\([0-9.]+ ms\\) at batch 2; warmed batch sizes 1,2"));
  EXPECT_EQ(model_->channels_last(), line->rfind("layout channels_last", 0) == 0);
  // Either layout computes the same labels.
  std::vector<BatchItem> items = {Item(120, 80, 9)};
  const torch::Tensor first = RunAll(path, items)[0].labels;
  model_->SetChannelsLast(!model_->channels_last());
  EXPECT_GE(RunAll(path, items)[0].labels.eq(first).to(torch::kFloat64).mean().item<double>(),
            0.999);
}

TEST_F(BatchPathTest, AModelFailureFailsTheRunNotTheProcess) {
  options_.input_height = 64;
  options_.input_width = 64;
  BatchPath path(model_.get(), options_);
  BatchItem item = Item(64, 64, 1);
  item.inputs[0].pixels = torch::zeros({64, 32, 3}, torch::kUInt8);  // wrong size
  std::unique_ptr<BatchRun> run = path.Submit({&item});
  const absl::Status s = run->Wait();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
}

TEST(DefaultPaddedBatchSizesTest, PowersOfTwoOnCudaNoneOnCpu) {
  EXPECT_TRUE(DefaultPaddedBatchSizes(torch::kCPU, 32).empty());
  EXPECT_EQ(DefaultPaddedBatchSizes(torch::Device("cuda:0"), 32),
            (std::vector<int>{1, 2, 4, 8, 16, 32}));
  EXPECT_EQ(DefaultPaddedBatchSizes(torch::Device("cuda"), 12), (std::vector<int>{1, 2, 4, 8, 12}));
  EXPECT_EQ(DefaultPaddedBatchSizes(torch::Device("cuda"), 1), (std::vector<int>{1}));
  EXPECT_TRUE(DeviceStreams(torch::kCPU, 2).empty());
}

}  // namespace
}  // namespace deeplab
