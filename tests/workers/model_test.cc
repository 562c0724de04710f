// The model family: shapes for every backbone and output stride, the published parameter
// counts, TF 'same' padding, activations and the Keras naming contract.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>

#include "tests/workers/test_util.h"
#include "workers/model/deeplab.h"
#include "workers/model/onednn_cache.h"
#include "workers/weights/keras_h5.h"

namespace deeplab {
namespace {

using ::deeplab::testing::Build;
using ::deeplab::testing::Spec;

class ShapeTest
    : public ::testing::TestWithParam<std::tuple<std::string, int, std::pair<int, int>>> {};

TEST_P(ShapeTest, LogitsAtInputSize) {
  const auto& [backbone, os, size] = GetParam();
  DeepLabV3Plus model = Build(Spec(backbone, 5, os));
  torch::InferenceMode guard;
  torch::Tensor y = model->forward(torch::randn({2, 3, size.first, size.second}));
  EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{2, 5, size.first, size.second}));
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
}

INSTANTIATE_TEST_SUITE_P(
    AllBackbones, ShapeTest,
    ::testing::Combine(::testing::Values("xception65", "mobilenetv2", "resnet50", "resnet101"),
                       ::testing::Values(8, 16),
                       ::testing::Values(std::make_pair(64, 64), std::make_pair(33, 47),
                                         std::make_pair(17, 9))),
    [](const auto& info) {
      return std::get<0>(info.param) + "_os" + std::to_string(std::get<1>(info.param)) + "_" +
             std::to_string(std::get<2>(info.param).first) + "x" +
             std::to_string(std::get<2>(info.param).second);
    });

TEST(ModelTest, MobileNetWithDecoderAndWidth) {
  ModelSpec spec = Spec("mobilenetv2", 4, 16);
  spec.alpha = 0.5;
  spec.decoder = 1;
  DeepLabV3Plus model = Build(spec);
  torch::InferenceMode guard;
  EXPECT_EQ(model->forward(torch::randn({1, 3, 50, 70})).sizes().vec(),
            (std::vector<int64_t>{1, 4, 50, 70}));
}

// head_channels narrows ASPP and the decoder (every branch, projection and decoder conv);
// the low-level projection keeps its 48 channels; it survives the proto round trip.
TEST(ModelTest, HeadChannelsNarrowAsppAndDecoder) {
  ModelSpec spec = Spec("mobilenetv2", 5, 16);
  spec.alpha = 0.5;
  spec.decoder = 1;
  spec.head_channels = 64;
  DeepLabV3Plus model = Build(spec);
  auto params = model->named_parameters();
  EXPECT_EQ(params["aspp.aspp0.weight"].sizes().vec(), (std::vector<int64_t>{64, 160, 1, 1}));
  EXPECT_EQ(params["aspp.concat_projection.weight"].sizes().vec(),
            (std::vector<int64_t>{64, 128, 1, 1}));
  EXPECT_EQ(params["decoder.feature_projection0.weight"].size(0), 48);
  EXPECT_EQ(params["decoder.decoder_conv0.pointwise.weight"].sizes().vec(),
            (std::vector<int64_t>{64, 112, 1, 1}));
  EXPECT_EQ(params["head.custom_logits_semantic.weight"].sizes().vec(),
            (std::vector<int64_t>{5, 64, 1, 1}));
  {
    torch::InferenceMode guard;
    EXPECT_EQ(model->forward(torch::randn({1, 3, 40, 56})).sizes().vec(),
              (std::vector<int64_t>{1, 5, 40, 56}));
  }
  const ModelSpec round_trip = ModelSpecFromProto(ModelSpecToProto(model->spec()));
  EXPECT_EQ(round_trip.head_channels, 64);
  EXPECT_EQ(DescribeModelSpec(model->spec()), "mobilenetv2/os16/5 classes/alpha 0.5/decoder/head 64");
  // 0 means the published 256; nonsense is refused with the field named.
  EXPECT_EQ(Build(Spec("mobilenetv2", 5, 16))->spec().head_channels, 256);
  spec.head_channels = 3;
  EXPECT_NE(BuildDeepLabV3Plus(spec).status().message().find("head_channels"), std::string::npos);
}

struct PublishedCounts {
  std::string backbone;
  int classes;
  int64_t total;
  int64_t bn_folded;
};

// DESIGN.md section 5 and issue 2. The "trainable" figures are the BatchNorm-folded
// counts; PyTorch's trainable count adds one more vector per BatchNorm (gamma and beta).
TEST(ModelTest, PublishedParameterCounts) {
  for (const PublishedCounts& c : std::vector<PublishedCounts>{
           {"xception65", 21, 41258213, 40954013},
           {"xception65", 19, 41257699, 40953499},
           {"xception65", 2, 41253330, 40949130},
           {"mobilenetv2", 21, 2146645, 2097013},
       }) {
    DeepLabV3Plus model = Build(Spec(c.backbone, c.classes));
    const ParameterCounts counts = CountParameters(*model);
    EXPECT_EQ(counts.total, c.total) << c.backbone << " " << c.classes;
    EXPECT_EQ(counts.bn_folded, c.bn_folded) << c.backbone << " " << c.classes;
    // total = conv weights + logits bias + 4 per BatchNorm channel; bn_folded keeps 1 of 4.
    EXPECT_EQ(counts.trainable - counts.bn_folded, (counts.total - counts.bn_folded) / 3);
  }
}

TEST(ModelTest, TfSamePaddingPadsAfterOnEvenSizes) {
  // Stride 2, kernel 3: even sizes pad 0 before and 1 after; odd sizes pad 1 and 1.
  EXPECT_EQ(TfSamePad(torch::ones({1, 1, 8, 8}), 3, 2).sizes().vec(),
            (std::vector<int64_t>{1, 1, 9, 9}));
  EXPECT_EQ(TfSamePad(torch::ones({1, 1, 9, 7}), 3, 2).sizes().vec(),
            (std::vector<int64_t>{1, 1, 11, 9}));
  torch::Tensor even = TfSamePad(torch::ones({1, 1, 4, 4}), 3, 2);
  EXPECT_EQ(even[0][0][0][0].item<float>(), 1.0f);  // nothing padded before
  EXPECT_EQ(even[0][0][4][4].item<float>(), 0.0f);  // one row/column padded after
  torch::Tensor odd = TfSamePad(torch::ones({1, 1, 5, 5}), 3, 2);
  EXPECT_EQ(odd[0][0][0][0].item<float>(), 0.0f);
  EXPECT_EQ(odd[0][0][6][6].item<float>(), 0.0f);
  EXPECT_EQ(odd[0][0][1][1].item<float>(), 1.0f);
}

TEST(ModelTest, FirstConvUsesTfSamePadding) {
  // With an all-ones kernel and input, output (0,0) of a stride-2 3x3 conv sees a full 3x3
  // window under TF 'same' on an even size (9), but only 2x2 (4) under symmetric padding.
  DeepLabV3Plus model = Build(Spec("xception65", 21));
  torch::nn::Conv2d conv{nullptr};
  for (const auto& m : model->named_modules()) {
    if (m.key() == "backbone.entry_flow_conv1_1") {
      conv = torch::nn::Conv2d(std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(m.value()));
    }
  }
  ASSERT_FALSE(conv.is_empty());
  torch::NoGradGuard no_grad;
  conv->weight.fill_(1.0);
  torch::Tensor even = RunConv(conv, TfSamePad(torch::ones({1, 3, 6, 6}), 3, 2));
  EXPECT_EQ(even.sizes().vec(), (std::vector<int64_t>{1, 32, 3, 3}));
  EXPECT_FLOAT_EQ(even[0][0][0][0].item<float>(), 27.0f);  // 3x3 window x 3 channels
  EXPECT_FLOAT_EQ(even[0][0][2][2].item<float>(), 12.0f);  // 2x2 window at the far corner
  torch::Tensor odd = RunConv(conv, TfSamePad(torch::ones({1, 3, 7, 7}), 3, 2));
  EXPECT_EQ(odd.sizes().vec(), (std::vector<int64_t>{1, 32, 4, 4}));
  EXPECT_FLOAT_EQ(odd[0][0][0][0].item<float>(), 12.0f);
}

TEST(ModelTest, FinalActivations) {
  ModelSpec spec = Spec("mobilenetv2", 3);
  spec.activation = FinalActivation::kSoftmax;
  DeepLabV3Plus softmax = Build(spec);
  torch::InferenceMode guard;
  torch::Tensor x = torch::randn({1, 3, 24, 24});
  torch::Tensor p = softmax->forward(x);
  EXPECT_TRUE(torch::allclose(p.sum(1), torch::ones({1, 24, 24}), 1e-5, 1e-5));
  spec.activation = FinalActivation::kSigmoid;
  torch::Tensor s = Build(spec)->forward(x);
  EXPECT_GE(s.min().item<float>(), 0.0f);
  EXPECT_LE(s.max().item<float>(), 1.0f);
}

TEST(ModelTest, AlignCornersChangesOnlyResizing) {
  ModelSpec spec = Spec("mobilenetv2", 3);
  DeepLabV3Plus a = Build(spec);
  testing::HealthyInit(*a, 11);  // logits of order 1, not 1e-8 (see HealthyInit)
  spec.align_corners = true;
  DeepLabV3Plus b = Build(spec);
  torch::NoGradGuard no_grad;
  auto pa = a->named_parameters();
  auto pb = b->named_parameters();
  for (const auto& p : pa) pb[p.key()].copy_(p.value());
  auto ba = a->named_buffers();
  auto bb = b->named_buffers();
  for (const auto& p : ba) bb[p.key()].copy_(p.value());
  a->eval();
  b->eval();
  const torch::Tensor x = testing::PortableTensor({1, 3, 40, 40}, 12);
  const torch::Tensor ya = a->forward(x);
  const torch::Tensor yb = b->forward(x);
  const double scale = ya.abs().max().item<double>();
  const double differ = (ya - yb).abs().max().item<double>();
  ASSERT_GT(scale, 0.01);
  EXPECT_GT(differ, 0.01 * scale) << "align_corners made no difference";
  // Only the final resize differs: the mean over the image stays close.
  EXPECT_LT((ya.mean({2, 3}) - yb.mean({2, 3})).abs().max().item<double>(), 0.2 * scale);
}

TEST(ModelTest, InvalidSpecsSayWhatToChange) {
  ModelSpec spec = Spec("xception71", 21);
  auto model = BuildDeepLabV3Plus(spec);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("known backbones: mobilenetv2, resnet101"),
            std::string::npos)
      << model.status();
  EXPECT_FALSE(BuildDeepLabV3Plus(Spec("xception65", 0)).ok());
  EXPECT_FALSE(BuildDeepLabV3Plus(Spec("xception65", 21, 32)).ok());
}

TEST(ModelTest, KerasNamesFollowThePublishedLayers) {
  EXPECT_EQ(KerasLayerName("backbone.entry_flow_block1.separable_conv1.depthwise_BN"),
            "entry_flow_block1_separable_conv1_depthwise_BN");
  EXPECT_EQ(KerasLayerName("aspp.aspp1.pointwise"), "aspp1_pointwise");
  EXPECT_EQ(KerasLayerName("head.custom_logits_semantic"), "custom_logits_semantic");
  EXPECT_EQ(KerasLayerName("backbone.expanded_conv_1.expand_BN"), "expanded_conv_1_expand_BN");

  DeepLabV3Plus model = Build(Spec("xception65", 21));
  auto map = KerasWeightMap(model);
  int64_t elements = 0;
  std::set<std::string> layers;
  for (const auto& [name, ref] : map) {
    int64_t n = 1;
    for (int64_t d : ref.keras_shape) n *= d;
    elements += n;
    layers.insert(ref.layer);
  }
  EXPECT_EQ(elements, 41258213);  // every float tensor has a Keras home
  for (const char* layer :
       {"entry_flow_conv1_1", "entry_flow_conv1_1_BN", "entry_flow_block2_shortcut_BN",
        "middle_flow_unit_16_separable_conv3_pointwise", "exit_flow_block2_separable_conv3_pointwise_BN",
        "image_pooling", "aspp0_BN", "aspp3_depthwise", "concat_projection_BN",
        "feature_projection0", "decoder_conv1_pointwise_BN", "logits_semantic"}) {
    EXPECT_TRUE(layers.count(layer)) << layer;
  }
  EXPECT_FALSE(layers.count("middle_flow_unit_1_shortcut"));  // 'sum' blocks have no conv
  EXPECT_FALSE(layers.count("exit_flow_block2_shortcut"));    // 'none' block
}

TEST(ModelTest, MultiplyAddsNearTheModelZooFigure) {
  // LibTorch's default here can be one intra-op thread (it counts physical cores); RunConv
  // keeps that on oneDNN (OneThreadInferenceConvolutionsRunOnOneDnn).
  DeepLabV3Plus model = Build(Spec("xception65", 21));
  const double macs = static_cast<double>(CountMultiplyAdds(model, 513, 513));
  // TF model zoo: 54.17e9 (docs/model-repository.md, "Multiply-adds", on the 0.25% difference).
  EXPECT_NEAR(macs / 1e9, 54.17, 0.2);
}

// The ops a call ran, from LibTorch's profiler (its trace names each op).
std::string OpsRun(const std::function<void()>& call) {
  std::stringstream trace;
  {
    torch::autograd::profiler::RecordProfile profile(trace);
    call();
  }
  return trace.str();
}

TEST(ModelTest, OneThreadInferenceConvolutionsRunOnOneDnn) {
  // With one intra-op thread LibTorch would send these 1x1 convolutions of two images to
  // im2col and the reference BLAS (15 to 28 s an image for Xception-65 at 512x512);
  // RunConv sends them to oneDNN, with the same results.
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  torch::manual_seed(3);
  torch::nn::Conv2d plain = MakeConv(32, 24, 1);
  torch::nn::Conv2d biased(torch::nn::Conv2dOptions(32, 5, 1));  // like the logits
  torch::nn::Conv2d dilated = MakeConv(32, 8, 3, 1, 2, 2);
  const torch::Tensor x = torch::randn({2, 32, 9, 11});
  for (torch::nn::Conv2d* conv : {&plain, &biased, &dilated}) {
    torch::NoGradGuard no_grad;
    torch::Tensor y;
    const std::string ops = OpsRun([&] { y = RunConv(*conv, x); });
    EXPECT_NE(ops.find("mkldnn_convolution"), std::string::npos) << ops;
    EXPECT_EQ(ops.find("slow_conv2d"), std::string::npos) << ops;
    EXPECT_TRUE(torch::allclose(y, (*conv)->forward(x), 1e-4, 1e-5));
    // Channels-last inputs too (the layout the worker may choose).
    const torch::Tensor x_cl = x.contiguous(torch::MemoryFormat::ChannelsLast);
    EXPECT_TRUE(torch::allclose(RunConv(*conv, x_cl), (*conv)->forward(x), 1e-4, 1e-5));
  }
  // Training (gradients on) keeps LibTorch's own choice: its backward needs it.
  const std::string training = OpsRun([&] { RunConv(plain, x).sum().backward(); });
  EXPECT_EQ(training.find("mkldnn_convolution"), std::string::npos);
  at::set_num_threads(threads);
}

// A convolution through oneDNN, as the worker's first one at warm-up.
void ConvolveOnce() {
  torch::InferenceMode guard;
  torch::nn::Conv2d conv = MakeConv(8, 4, 3);
  (void)RunConv(conv, torch::randn({3, 8, 10, 10}));
}

// Without asking for the capacity, which would fix it in this process.
bool OneDnnExported() {
  return dlsym(RTLD_DEFAULT, "dnnl_get_primitive_cache_capacity") != nullptr;
}

// oneDNN fixes its cache capacity once per process, so each case runs in a child of its own
// (a death test, which re-executes the test binary and runs this test's body again:
// "threadsafe").
TEST(PrimitiveCacheTest, CapacityAskedForBeforeTheFirstConvolutionHolds) {
  if (!OneDnnExported()) GTEST_SKIP() << "this LibTorch hides oneDNN's API";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        unsetenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY");
        unsetenv("DNNL_PRIMITIVE_CACHE_CAPACITY");
        const bool set = RequestPrimitiveCacheCapacity(5000);
        ConvolveOnce();
        const std::optional<int> capacity = PrimitiveCacheCapacity();
        std::cerr << "set " << set << " capacity " << capacity.value_or(-1) << std::endl;
        std::exit(set && capacity == 5000 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "set 1 capacity 5000");
}

TEST(PrimitiveCacheTest, TheEnvironmentsCapacityWins) {
  if (!OneDnnExported()) GTEST_SKIP() << "this LibTorch hides oneDNN's API";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "777", 1);
        const bool set = RequestPrimitiveCacheCapacity(5000);
        ConvolveOnce();
        std::cerr << "set " << set << " capacity " << PrimitiveCacheCapacity().value_or(-1)
                  << std::endl;
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "set 0 capacity 777");
}

}  // namespace
}  // namespace deeplab

namespace deeplab {
namespace {

// Folding BatchNorm into the convolutions must not change the function, for every backbone
// (this also checks the structural conv -> BatchNorm pairing FoldBatchNorms relies on).
TEST(ModelTest, FoldingBatchNormKeepsTheOutput) {
  for (const std::string backbone : {"xception65", "mobilenetv2", "resnet50"}) {
    ModelSpec spec = testing::Spec(backbone, 3);
    spec.decoder = 1;
    DeepLabV3Plus model = testing::Build(spec);
    testing::HealthyInit(*model, 3);
    model->eval();
    {
      torch::NoGradGuard no_grad;  // non-trivial statistics so that folding has work to do
      for (auto& m : model->modules()) {
        if (auto* bn = m->as<BatchNorm>()) {
          bn->running_mean.uniform_(-0.5, 0.5);
          bn->running_var.uniform_(0.5, 2.0);
          bn->weight.uniform_(0.5, 1.5);
          bn->bias.uniform_(-0.2, 0.2);
        }
      }
    }
    const torch::Tensor x = testing::PortableTensor({2, 3, 45, 37}, 5);
    torch::InferenceMode guard;
    torch::Tensor before = model->forward(x);
    const int folded = FoldBatchNorms(*model);
    int bn_count = 0;
    for (auto& m : model->modules()) bn_count += m->as<BatchNorm>() != nullptr;
    EXPECT_EQ(folded, bn_count) << backbone;  // every BatchNorm found its conv
    torch::Tensor after = model->forward(x);
    // Relative to the size of the logits, so that the check means the same for every
    // backbone (HealthyInit keeps them well away from zero).
    const double scale = before.abs().max().item<double>();
    const double diff = (before - after).abs().max().item<double>();
    ASSERT_GT(scale, 0.01) << backbone;
    EXPECT_LT(diff, 1e-4 * scale) << backbone << " max diff " << diff << " of " << scale;
  }
}

}  // namespace
}  // namespace deeplab
