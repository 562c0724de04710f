// WorkerEngine end to end in one process: decode, letterbox/stretch/tiling geometry, EXIF,
// per-item errors, limits and refusals. The geometry tests use a weight set whose output is
// known for any input: colour_argmax.pt returns the input channels as logits, so each pixel
// is labelled by its dominant colour channel (0 red, 1 green, 2 blue) with no downsampling.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>
#include <future>
#include <map>
#include <thread>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "common/image_codec.h"
#include "tests/workers/test_util.h"
#include "workers/worker/engine.h"
#include "workers/worker/intra_op_threads.h"
#include "workers/worker/worker_metrics.h"

namespace deeplab {
namespace {

using ::deeplab::testing::RunPythonTool;
using ::deeplab::testing::TempDir;
using ::testing::HasSubstr;

const cv::Vec3b kColours[3] = {{230, 20, 10}, {15, 220, 30}, {20, 25, 240}};  // R, G, B

// An RGB image of rows x cols blocks, block (i, j) coloured kColours[(i + 2j) % 3].
cv::Mat Blocks(int height, int width, int rows, int cols) {
  cv::Mat img(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      img.at<cv::Vec3b>(y, x) = kColours[(y * rows / height + 2 * (x * cols / width)) % 3];
    }
  }
  return img;
}

// The expected label of every pixel: its dominant channel.
cv::Mat DominantChannel(const cv::Mat& rgb) {
  cv::Mat labels(rgb.rows, rgb.cols, CV_8UC1);
  for (int y = 0; y < rgb.rows; ++y) {
    for (int x = 0; x < rgb.cols; ++x) {
      const cv::Vec3b p = rgb.at<cv::Vec3b>(y, x);
      labels.at<uint8_t>(y, x) = p[0] >= p[1] && p[0] >= p[2] ? 0 : (p[1] >= p[2] ? 1 : 2);
    }
  }
  return labels;
}

// Pixels whose label differs from the expectation, ignoring a band of `margin` pixels
// around block boundaries (where resizing blends colours).
int Mismatches(const cv::Mat& labels, const cv::Mat& expected, int margin) {
  cv::Mat edges;
  cv::Mat kernel = cv::getStructuringElement(cv::MORPH_RECT, cv::Size(2 * margin + 1, 2 * margin + 1));
  cv::Mat dilated, eroded;
  cv::dilate(expected, dilated, kernel);
  cv::erode(expected, eroded, kernel);
  int bad = 0;
  for (int y = 0; y < labels.rows; ++y) {
    for (int x = 0; x < labels.cols; ++x) {
      if (dilated.at<uint8_t>(y, x) != eroded.at<uint8_t>(y, x)) continue;  // near an edge
      if (labels.at<uint8_t>(y, x) != expected.at<uint8_t>(y, x)) ++bad;
    }
  }
  return bad;
}

std::string Png(const cv::Mat& rgb) { return EncodePng(rgb); }

std::string Jpeg(const cv::Mat& rgb, int quality) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> jpeg;
  cv::imencode(".jpg", bgr, jpeg, {cv::IMWRITE_JPEG_QUALITY, quality});
  return std::string(jpeg.begin(), jpeg.end());
}

cv::Mat DecodeLabelPng(const std::string& png) {
  std::vector<uint8_t> buf(png.begin(), png.end());
  return cv::imdecode(buf, cv::IMREAD_UNCHANGED);
}

// Inserts an EXIF APP1 segment with the given orientation after a JPEG's SOI marker.
std::string WithExifOrientation(const std::string& jpeg, int orientation) {
  const unsigned char tiff[] = {
      'I', 'I', 42, 0, 8, 0, 0, 0,                          // little-endian, IFD at 8
      1, 0,                                                 // one entry
      0x12, 0x01, 3, 0, 1, 0, 0, 0,                         // tag 0x0112 SHORT x1
      static_cast<unsigned char>(orientation), 0, 0, 0,     // value
      0, 0, 0, 0};                                          // no next IFD
  std::string payload = std::string("Exif\0\0", 6) + std::string(reinterpret_cast<const char*>(tiff), sizeof(tiff));
  const size_t length = payload.size() + 2;
  std::string segment = {'\xFF', '\xE1', static_cast<char>(length >> 8), static_cast<char>(length & 0xFF)};
  return jpeg.substr(0, 2) + segment + payload + jpeg.substr(2);
}

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempDir("engine"));
    RunPythonTool("make_torchscript.py", "--out-dir " + *dir_);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  // A colour-argmax weight set: input h x w, the given resize/tiling.
  static v1::ModelConfig ColourConfig(const std::string& name, int h, int w,
                                      v1::ResizeMode resize, int tile_stride = 0) {
    v1::ModelConfig c;
    c.set_name(name);
    c.mutable_architecture()->set_num_classes(3);
    c.mutable_input()->set_height(h);
    c.mutable_input()->set_width(w);
    c.mutable_input()->set_resize(resize);
    c.mutable_input()->set_normalization(v1::NORMALIZATION_NONE);
    if (tile_stride > 0) c.mutable_tiling()->set_stride(tile_stride);
    for (const char* n : {"red", "green", "blue"}) c.add_class_names(n);
    c.mutable_weights()->set_format(v1::WEIGHTS_FORMAT_TORCHSCRIPT);
    c.mutable_weights()->set_file("colour_argmax.pt");
    return c;
  }

  void SetUp() override {
    options_.pipeline_threads = 2;
    engine_ = std::make_unique<WorkerEngine>(options_, nullptr);
    engine_->LoadWeightSet(ColourConfig("letterbox", 64, 64, v1::RESIZE_MODE_LETTERBOX),
                           *dir_ + "/colour_argmax.pt");
    engine_->LoadWeightSet(ColourConfig("stretch", 48, 80, v1::RESIZE_MODE_STRETCH),
                           *dir_ + "/colour_argmax.pt");
    engine_->LoadWeightSet(ColourConfig("tiled", 32, 32, v1::RESIZE_MODE_LETTERBOX, 16),
                           *dir_ + "/colour_argmax.pt");
  }

  v1::InferResponse Run(const v1::InferRequest& request, absl::Status* status = nullptr) {
    v1::InferResponse response;
    std::promise<absl::Status> done;
    engine_->Infer(request, &response, [&](absl::Status s) { done.set_value(s); });
    absl::Status s = done.get_future().get();
    if (status != nullptr) {
      *status = s;
    } else {
      EXPECT_TRUE(s.ok()) << s;
    }
    return response;
  }

  static v1::InferRequest Request(const std::string& model, const std::vector<std::string>& images) {
    v1::InferRequest request;
    request.set_model(model);
    for (size_t i = 0; i < images.size(); ++i) {
      v1::InferItem* item = request.add_items();
      item->set_id("item" + std::to_string(i));
      item->mutable_image()->set_encoded(images[i]);
      item->mutable_outputs()->set_label_png(true);
    }
    return request;
  }

  static std::string* dir_;
  WorkerOptions options_;
  std::unique_ptr<WorkerEngine> engine_;
};
std::string* EngineTest::dir_ = nullptr;

struct Size {
  int height, width;
};

TEST_F(EngineTest, EveryLabelLandsOnItsPixelAtTheOriginalSize) {
  // Portrait, landscape, square, tiny and odd sizes, smaller and larger than the input.
  for (const std::string model : {"letterbox", "stretch", "tiled"}) {
    for (Size size : {Size{120, 45}, Size{45, 120}, Size{64, 64}, Size{7, 5}, Size{1, 1},
                      Size{101, 67}, Size{33, 250}}) {
      cv::Mat img = Blocks(size.height, size.width, 3, 4);
      v1::InferResponse response = Run(Request(model, {Png(img)}));
      ASSERT_EQ(response.items_size(), 1);
      const v1::ItemResult& item = response.items(0);
      ASSERT_EQ(item.code(), 0) << item.message();
      EXPECT_EQ(item.result().height(), size.height);
      EXPECT_EQ(item.result().width(), size.width);
      cv::Mat labels = DecodeLabelPng(item.result().label_png());
      ASSERT_EQ(labels.rows, size.height);
      ASSERT_EQ(labels.cols, size.width);
      // Tiles run at full resolution: exact everywhere. Resized images blend near edges,
      // by up to the scale factor of the resize back.
      const int scale = model == "tiled" ? 0
                                         : 2 + std::max(size.height, size.width) / 45;
      EXPECT_EQ(Mismatches(labels, DominantChannel(img), scale), 0)
          << model << " " << size.height << "x" << size.width;
    }
  }
}

TEST_F(EngineTest, TiledImagesCostTheirPatches) {
  cv::Mat img = Blocks(70, 40, 5, 3);
  v1::InferResponse response = Run(Request("tiled", {Png(img)}));
  // 70 rows: origins 0, 16, 32, 38; 40 columns: 0, 8 -> 4 x 2 = 8 patches.
  EXPECT_EQ(response.items(0).result().cost(), 8);
  EXPECT_EQ(response.batch_cost(), 8);
  EXPECT_EQ(TileOrigins(70, 32, 16), (std::vector<int>{0, 16, 32, 38}));
  EXPECT_EQ(TileOrigins(32, 32, 16), (std::vector<int>{0}));
  EXPECT_EQ(TileOrigins(10, 32, 16), (std::vector<int>{0}));
}

TEST_F(EngineTest, ExifOrientationIsHonoured) {
  // A landscape JPEG tagged "rotate 90 clockwise" (6) is a portrait image to the client.
  cv::Mat img = Blocks(60, 90, 2, 3);
  const std::string tagged = WithExifOrientation(Jpeg(img, 98), 6);
  v1::InferResponse response = Run(Request("letterbox", {tagged}));
  ASSERT_EQ(response.items(0).code(), 0) << response.items(0).message();
  EXPECT_EQ(response.items(0).result().height(), 90);
  EXPECT_EQ(response.items(0).result().width(), 60);
  cv::Mat rotated;
  cv::rotate(img, rotated, cv::ROTATE_90_CLOCKWISE);
  cv::Mat labels = DecodeLabelPng(response.items(0).result().label_png());
  EXPECT_EQ(Mismatches(labels, DominantChannel(rotated), 4), 0);
}

TEST_F(EngineTest, ReducedJpegDecodingKeepsTheLabelsAtTheOriginalSize) {
  // A 600x820 JPEG for a 64x64 letterbox input decodes at 1/8 (75x103): the outputs still
  // come back at 600x820, and agree with a full decode everywhere but next to block edges.
  cv::Mat img = Blocks(600, 820, 5, 7);
  // Orientation 6 too: the reduction is chosen on the upright size.
  const std::string file = WithExifOrientation(Jpeg(img, 95), 6);
  cv::Mat upright;
  cv::rotate(img, upright, cv::ROTATE_90_CLOCKWISE);

  WorkerOptions full_options = options_;
  full_options.reduced_decode = false;
  WorkerEngine full_engine(full_options, nullptr);
  full_engine.LoadWeightSet(ColourConfig("letterbox", 64, 64, v1::RESIZE_MODE_LETTERBOX),
                            *dir_ + "/colour_argmax.pt");
  v1::InferResponse full_response;
  std::promise<absl::Status> done;
  const v1::InferRequest request = Request("letterbox", {file});  // outlives the call
  full_engine.Infer(request, &full_response, [&](absl::Status s) { done.set_value(s); });
  ASSERT_TRUE(done.get_future().get().ok());

  v1::InferResponse reduced_response = Run(Request("letterbox", {file}));
  for (const v1::InferResponse* r : {&full_response, &reduced_response}) {
    ASSERT_EQ(r->items(0).code(), 0) << r->items(0).message();
    EXPECT_EQ(r->items(0).result().height(), 820);
    EXPECT_EQ(r->items(0).result().width(), 600);
  }
  const cv::Mat full = DecodeLabelPng(full_response.items(0).result().label_png());
  const cv::Mat reduced = DecodeLabelPng(reduced_response.items(0).result().label_png());
  ASSERT_EQ(reduced.size(), cv::Size(600, 820));
  // Each output pixel stands for about 13 original ones: edges blend over that band.
  EXPECT_EQ(Mismatches(reduced, DominantChannel(upright), 16), 0);
  EXPECT_EQ(Mismatches(full, DominantChannel(upright), 16), 0);
  EXPECT_GT(cv::countNonZero(full == reduced), 0.98 * full.total());
  // Asking for an overlay changes nothing in the labels: the overlay is drawn on a second,
  // whole decode, at the original size.
  v1::InferRequest with_overlay = Request("letterbox", {file});
  with_overlay.mutable_items(0)->mutable_outputs()->set_overlay_png(true);
  v1::InferResponse overlay_response = Run(with_overlay);
  ASSERT_EQ(overlay_response.items(0).code(), 0) << overlay_response.items(0).message();
  const cv::Mat labels_beside_overlay =
      DecodeLabelPng(overlay_response.items(0).result().label_png());
  EXPECT_EQ(cv::countNonZero(labels_beside_overlay != reduced), 0);
  const std::string& png = overlay_response.items(0).result().overlay_png();
  const cv::Mat overlay = cv::imdecode(std::vector<uint8_t>(png.begin(), png.end()),
                                       cv::IMREAD_COLOR);
  EXPECT_EQ(overlay.size(), cv::Size(600, 820));
}

TEST_F(EngineTest, OneBadItemNeverFailsItsBatchMates) {
  cv::Mat img = Blocks(40, 30, 2, 2);
  std::vector<uint8_t> jpeg;
  cv::imencode(".jpg", img, jpeg);
  const std::string truncated(jpeg.begin(), jpeg.begin() + jpeg.size() / 2);
  v1::InferRequest request = Request(
      "letterbox", {Png(img), "", truncated, "not an image at all", Png(img)});
  v1::InferItem* raw = request.add_items();
  raw->set_id("raw-bad");
  raw->mutable_image()->mutable_raw()->set_height(4);
  raw->mutable_image()->mutable_raw()->set_width(4);
  raw->mutable_image()->mutable_raw()->set_channels(3);
  raw->mutable_image()->mutable_raw()->set_data(std::string(10, '\0'));
  v1::InferItem* raw_ok = request.add_items();
  raw_ok->set_id("raw-ok");
  raw_ok->mutable_image()->mutable_raw()->set_height(img.rows);
  raw_ok->mutable_image()->mutable_raw()->set_width(img.cols);
  raw_ok->mutable_image()->mutable_raw()->set_channels(3);
  raw_ok->mutable_image()->mutable_raw()->set_data(
      std::string(reinterpret_cast<const char*>(img.data), img.total() * 3));

  v1::InferResponse response = Run(request);
  ASSERT_EQ(response.items_size(), 7);
  const int kInvalid = static_cast<int>(absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(response.items(0).code(), 0);
  EXPECT_EQ(response.items(1).code(), kInvalid);
  EXPECT_EQ(response.items(2).code(), kInvalid);
  EXPECT_THAT(response.items(2).message(), HasSubstr("truncated"));
  EXPECT_EQ(response.items(3).code(), kInvalid);
  EXPECT_EQ(response.items(4).code(), 0);
  EXPECT_EQ(response.items(5).code(), kInvalid);
  EXPECT_EQ(response.items(5).id(), "raw-bad");
  EXPECT_EQ(response.items(6).code(), 0);
  for (int i : {0, 4, 6}) {
    EXPECT_EQ(Mismatches(DecodeLabelPng(response.items(i).result().label_png()),
                         DominantChannel(img), 2),
              0);
  }
  for (int i : {1, 2, 3, 5}) {
    EXPECT_FALSE(response.items(i).message().empty());
    EXPECT_TRUE(response.items(i).result().label_png().empty());
  }
  EXPECT_EQ(response.batch_cost(), 3);
}

TEST_F(EngineTest, AllOutputs) {
  cv::Mat img = Blocks(30, 50, 1, 3);  // three vertical bands: R, B, G
  v1::InferRequest request = Request("stretch", {Png(img)});
  v1::OutputOptions* o = request.mutable_items(0)->mutable_outputs();
  o->set_label_raw(true);
  o->set_probabilities(true);
  o->set_overlay_png(true);
  o->set_class_stats(true);
  v1::InferResponse response = Run(request);
  const v1::SegmentationResult& r = response.items(0).result();
  ASSERT_EQ(response.items(0).code(), 0) << response.items(0).message();
  EXPECT_EQ(r.label_raw().size(), 30u * 50u);
  EXPECT_EQ(r.probabilities().num_classes(), 3);
  EXPECT_EQ(r.probabilities().data().size(), 3u * 30u * 50u);
  cv::Mat overlay = DecodeLabelPng(r.overlay_png());
  EXPECT_EQ(overlay.rows, 30);
  EXPECT_EQ(overlay.cols, 50);
  EXPECT_EQ(overlay.channels(), 3);
  double total = 0;
  ASSERT_EQ(r.class_stats_size(), 3);
  for (const v1::ClassStat& s : r.class_stats()) {
    total += s.fraction();
    EXPECT_NEAR(s.fraction(), 1.0 / 3, 0.05) << s.name();
  }
  EXPECT_NEAR(total, 1.0, 1e-9);
  EXPECT_EQ(r.class_stats(0).name(), "red");
  EXPECT_GT(r.timings().forward_seconds(), 0.0);
  EXPECT_GT(r.timings().decode_seconds(), 0.0);
}

TEST_F(EngineTest, PixelAndByteLimits) {
  options_.limits.max_pixels = 1000;
  options_.limits.max_bytes = 1 << 20;
  engine_ = std::make_unique<WorkerEngine>(options_, nullptr);
  engine_->LoadWeightSet(ColourConfig("letterbox", 64, 64, v1::RESIZE_MODE_LETTERBOX),
                         *dir_ + "/colour_argmax.pt");
  v1::InferResponse response = Run(Request(
      "letterbox", {Png(Blocks(20, 20, 1, 1)), Png(Blocks(50, 50, 1, 1)), std::string(2 << 20, 'x')}));
  EXPECT_EQ(response.items(0).code(), 0);
  EXPECT_EQ(response.items(1).code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(response.items(2).code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
}

TEST_F(EngineTest, BatchRefusals) {
  absl::Status status;
  Run(Request("nope", {Png(Blocks(8, 8, 1, 1))}), &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("letterbox"));
  Run(Request("letterbox", {}), &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);

  v1::ModelConfig broken = ColourConfig("broken", 64, 64, v1::RESIZE_MODE_LETTERBOX);
  engine_->LoadWeightSet(broken, *dir_ + "/absent.pt");
  Run(Request("broken", {Png(Blocks(8, 8, 1, 1))}), &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("absent.pt"));

  v1::StatusResponse s = engine_->Status();
  ASSERT_EQ(s.weight_sets_size(), 4);
  for (const v1::WeightSetStatus& ws : s.weight_sets()) {
    EXPECT_EQ(ws.ready(), ws.name() != "broken") << ws.name();
    if (!ws.ready()) {
      EXPECT_THAT(ws.reason(), HasSubstr("absent.pt"));
    }
  }
  EXPECT_EQ(s.free_batch_slots(), s.batch_slots());

  engine_->StartDrain();
  Run(Request("letterbox", {Png(Blocks(8, 8, 1, 1))}), &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("draining"));
  EXPECT_TRUE(engine_->Status().draining());
}

TEST_F(EngineTest, ConcurrentBatchesAllComplete) {
  std::vector<v1::InferRequest> requests;
  for (int i = 0; i < 6; ++i) {
    requests.push_back(Request(i % 2 ? "letterbox" : "tiled",
                               {Png(Blocks(40 + i, 50, 2, 2)), Png(Blocks(30, 20 + i, 2, 2))}));
  }
  std::vector<v1::InferResponse> responses(requests.size());
  std::vector<std::promise<absl::Status>> done(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    engine_->Infer(requests[i], &responses[i], [&done, i](absl::Status s) { done[i].set_value(s); });
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_TRUE(done[i].get_future().get().ok());
    for (const auto& item : responses[i].items()) EXPECT_EQ(item.code(), 0) << item.message();
  }
  EXPECT_TRUE(engine_->WaitIdle(absl::Seconds(10)));
}

// Two instances run forward passes at once on their own threads: every batch still gets
// its own, correct labels (the same as one instance gives).
TEST_F(EngineTest, TwoInstancesGiveTheSameLabelsAsOne) {
  WorkerOptions options = options_;
  options.instances = 2;
  options.batch_slots = 3;
  WorkerEngine two(options, nullptr);
  two.LoadWeightSet(ColourConfig("letterbox", 64, 64, v1::RESIZE_MODE_LETTERBOX),
                    *dir_ + "/colour_argmax.pt");
  EXPECT_EQ(two.Status().batch_slots(), 3);
  std::vector<v1::InferRequest> requests;
  for (int i = 0; i < 8; ++i) {
    requests.push_back(Request("letterbox", {Png(Blocks(40 + 3 * i, 50, 2 + i % 3, 3))}));
  }
  std::vector<v1::InferResponse> responses(requests.size());
  std::vector<std::promise<absl::Status>> done(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    two.Infer(requests[i], &responses[i], [&done, i](absl::Status s) { done[i].set_value(s); });
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(done[i].get_future().get().ok());
    ASSERT_EQ(responses[i].items(0).code(), 0) << responses[i].items(0).message();
    const v1::InferResponse one = Run(requests[i]);
    EXPECT_EQ(responses[i].items(0).result().label_png(), one.items(0).result().label_png())
        << "request " << i;
  }
  EXPECT_TRUE(two.WaitIdle(absl::Seconds(10)));
}

// Only uint8 travels: pixels at the input size in, labels (and probabilities when asked)
// at the original size out, counted per weight set and direction.
TEST_F(EngineTest, BytesMovedToTheDeviceAndBackAreCounted) {
  prometheus::Registry registry;
  WorkerMetrics metrics(registry);
  WorkerEngine engine(options_, &metrics);
  engine.LoadWeightSet(ColourConfig("letterbox", 64, 64, v1::RESIZE_MODE_LETTERBOX),
                       *dir_ + "/colour_argmax.pt");
  v1::InferRequest request =
      Request("letterbox", {Png(Blocks(30, 50, 1, 3)), Png(Blocks(40, 20, 2, 2)), "not an image"});
  request.mutable_items(1)->mutable_outputs()->set_probabilities(true);
  v1::InferResponse response;
  std::promise<absl::Status> done;
  engine.Infer(request, &response, [&](absl::Status s) { done.set_value(s); });
  ASSERT_TRUE(done.get_future().get().ok());
  ASSERT_EQ(response.items(2).code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  std::map<std::string, double> bytes;
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != "deeplab_worker_device_transfer_bytes_total") continue;
    for (const prometheus::ClientMetric& m : family.metric) {
      std::string model, direction;
      for (const prometheus::ClientMetric::Label& l : m.label) {
        if (l.name == "model") model = l.value;
        if (l.name == "direction") direction = l.value;
      }
      bytes[model + "/" + direction] = m.counter.value;
    }
  }
  // The bad image never reaches the batch path.
  EXPECT_EQ(bytes["letterbox/to_device"], 2 * 64 * 64 * 3);
  EXPECT_EQ(bytes["letterbox/to_host"], 30 * 50 + 40 * 20 * (1 + 3));
}

// Precision auto with a bar no precision can pass: the weight set serves in fp32 and says
// why in Status; with the default bar it keeps the faster precision where it holds.
TEST_F(EngineTest, PrecisionAutoFallsBackToFp32WithTheReason) {
  v1::ModelConfig config;
  config.set_name("net");
  config.mutable_architecture()->set_backbone("mobilenetv2");
  config.mutable_architecture()->set_num_classes(4);
  config.mutable_architecture()->set_alpha(0.35);
  config.mutable_input()->set_height(64);
  config.mutable_input()->set_width(64);
  config.mutable_weights()->set_format(v1::WEIGHTS_FORMAT_RANDOM);
  config.set_precision(v1::PRECISION_AUTO);
  for (const double bar : {1.01, 0.5}) {
    WorkerOptions options = options_;
    options.runtime.force_precision = true;  // bf16 on any CPU, as on one with AVX512-BF16
    options.runtime.min_label_agreement = bar;
    WorkerEngine engine(options, nullptr);
    engine.LoadWeightSet(config, "");
    const v1::StatusResponse status = engine.Status();
    ASSERT_EQ(status.weight_sets_size(), 1);
    EXPECT_TRUE(status.weight_sets(0).ready()) << status.weight_sets(0).reason();
    if (bar > 1) {
      EXPECT_THAT(status.weight_sets(0).runtime(),
                  ::testing::MatchesRegex("cpu fp32.* \\(auto: bf16 labels agreed with fp32 on "
                                          "[0-9.]+% of the check input, below 101.00%\\)"));
    } else {
      EXPECT_THAT(status.weight_sets(0).runtime(),
                  ::testing::MatchesRegex("cpu bf16.* \\(auto: labels agree with fp32 on [0-9.]+% "
                                          "of the check input\\)"));
    }
    // It serves either way.
    const v1::InferRequest request = Request("net", {Png(Blocks(50, 70, 2, 2))});
    v1::InferResponse response;
    std::promise<absl::Status> done;
    engine.Infer(request, &response, [&](absl::Status s) { done.set_value(s); });
    ASSERT_TRUE(done.get_future().get().ok());
    EXPECT_EQ(response.items(0).code(), 0) << response.items(0).message();
  }
}

// Callers of Infer that bypass the gateway get the same check of odd output options, per
// item: the batch-mate is served.
TEST_F(EngineTest, AnOddOverlayAlphaFailsItsItemOnly) {
  v1::InferRequest request = Request("letterbox", {Png(Blocks(30, 50, 1, 3)), Png(Blocks(30, 50, 1, 3))});
  request.mutable_items(0)->mutable_outputs()->set_overlay_png(true);
  request.mutable_items(0)->mutable_outputs()->set_overlay_alpha(std::nanf(""));
  request.mutable_items(1)->mutable_outputs()->set_overlay_png(true);
  request.mutable_items(1)->mutable_outputs()->set_overlay_alpha(1.0f);
  const v1::InferResponse response = Run(request);
  EXPECT_EQ(response.items(0).code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(response.items(0).message(), HasSubstr("overlay_alpha must be between 0 and 1"));
  EXPECT_EQ(response.items(1).code(), 0) << response.items(1).message();
  EXPECT_FALSE(response.items(1).result().overlay_png().empty());
}

TEST(EngineFlagsTest, LayoutPrecisionAndBatchSlots) {
  EXPECT_EQ(*ParseLayoutChoice("auto"), LayoutChoice::kAuto);
  EXPECT_EQ(*ParseLayoutChoice("channels_last"), LayoutChoice::kChannelsLast);
  EXPECT_EQ(ParseLayoutChoice("nhwc").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParsePrecisionOverride("config")->has_value());
  EXPECT_EQ(**ParsePrecisionOverride("auto"), Precision::kAuto);
  EXPECT_EQ(**ParsePrecisionOverride("fp16"), Precision::kFp16);
  EXPECT_EQ(ParsePrecisionOverride("int8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DefaultBatchSlots(0, 2, "cpu"), 3);
  EXPECT_EQ(DefaultBatchSlots(0, 1, "cuda"), 3);  // two batches on the device, one decoding
  EXPECT_EQ(DefaultBatchSlots(0, 2, "cuda:1"), 5);
  EXPECT_EQ(DefaultBatchSlots(7, 1, "cuda"), 7);
}

TEST(DefaultInstancesTest, TwoOnCpuOneOnCuda) {
  EXPECT_EQ(DefaultInstances(0, "cpu"), 2);
  EXPECT_EQ(DefaultInstances(0, "cuda"), 1);
  EXPECT_EQ(DefaultInstances(0, "cuda:1"), 1);
  EXPECT_EQ(DefaultInstances(3, "cuda"), 3);
  EXPECT_EQ(DefaultInstances(1, "cpu"), 1);
}

TEST(IntraOpThreadsTest, PassesAtOnceShareTheThreads) {
  EXPECT_EQ(IntraOpShare(2, 2, 1), 2);  // alone: all of them
  EXPECT_EQ(IntraOpShare(2, 2, 2), 1);
  EXPECT_EQ(IntraOpShare(2, 2, 7), 1);  // no more at once than there are instances
  EXPECT_EQ(IntraOpShare(8, 2, 2), 4);
  EXPECT_EQ(IntraOpShare(8, 3, 3), 2);
  EXPECT_EQ(IntraOpShare(3, 2, 2), 1);
  EXPECT_EQ(IntraOpShare(1, 2, 2), 1);  // at least one each
  EXPECT_EQ(IntraOpShare(4, 1, 3), 4);  // one instance never shares
  EXPECT_EQ(IntraOpShare(4, 2, 0), 4);
}

// The team size is the calling thread's own: ops it runs use that many threads, and other
// threads keep theirs.
TEST(IntraOpThreadsTest, SetsTheCallingThreadsTeamOnly) {
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  // The highest OpenMP thread number an op run from this thread reaches.
  auto widest_team = [] {
    std::atomic<int> widest{0};
    at::parallel_for(0, 64, 1, [&](int64_t, int64_t) {
      int seen = widest.load();
      const int mine = at::get_thread_num();
      while (mine > seen && !widest.compare_exchange_weak(seen, mine)) {
      }
    });
    return widest.load();
  };
  int inside_threads = 0, inside_widest = -1;
  bool set = false;
  std::thread one([&] {
    set = SetIntraOpThreadsOfThisThread(1);
    inside_threads = at::get_num_threads();
    inside_widest = widest_team();
  });
  one.join();
  ASSERT_TRUE(set);
  EXPECT_EQ(inside_threads, 1);
  EXPECT_EQ(inside_widest, 0);
  EXPECT_EQ(at::get_num_threads(), 2);
  int other_threads = 0;
  std::thread other([&] { other_threads = at::get_num_threads(); });
  other.join();
  EXPECT_EQ(other_threads, 2);
  at::set_num_threads(before);
}

// Passes by the intra-op threads they ran with (deeplab_worker_forward_passes_total).
std::map<std::string, double> PassesByThreads(prometheus::Registry& registry) {
  std::map<std::string, double> passes;
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != "deeplab_worker_forward_passes_total") continue;
    for (const prometheus::ClientMetric& m : family.metric) {
      for (const prometheus::ClientMetric::Label& l : m.label) {
        if (l.name == "threads") passes[l.value] += m.counter.value;
      }
    }
  }
  return passes;
}

// Two forward threads and two intra-op threads: a batch alone runs with both; batches sent
// together run with one each (at least those that find another running); with sharing off
// every pass takes both.
TEST_F(EngineTest, ForwardPassesAtOnceShareTheIntraOpThreads) {
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  v1::ModelConfig config;
  config.set_name("net");
  config.mutable_architecture()->set_backbone("mobilenetv2");
  config.mutable_architecture()->set_num_classes(4);
  config.mutable_architecture()->set_alpha(0.5);
  config.mutable_input()->set_height(160);
  config.mutable_input()->set_width(160);
  config.mutable_weights()->set_format(v1::WEIGHTS_FORMAT_RANDOM);
  config.set_precision(v1::PRECISION_FP32);
  // Passes long enough to overlap, and nothing else at load (this runs under ASan too).
  const v1::InferRequest request =
      Request("net", std::vector<std::string>(3, Png(Blocks(50, 70, 2, 2))));
  for (const bool share : {true, false}) {
    SCOPED_TRACE(share ? "sharing" : "not sharing");
    prometheus::Registry registry;
    WorkerMetrics metrics(registry);
    WorkerOptions options = options_;
    options.instances = 2;
    options.batch_slots = 6;
    options.share_intra_op_threads = share;
    options.layout = LayoutChoice::kNchw;
    options.warm_up = false;
    WorkerEngine engine(options, &metrics);
    engine.LoadWeightSet(config, "");
    ASSERT_TRUE(engine.Status().weight_sets(0).ready()) << engine.Status().weight_sets(0).reason();

    for (int i = 0; i < 2; ++i) {  // one at a time
      v1::InferResponse response;
      std::promise<absl::Status> done;
      engine.Infer(request, &response, [&](absl::Status s) { done.set_value(s); });
      ASSERT_TRUE(done.get_future().get().ok());
    }
    EXPECT_EQ(PassesByThreads(registry), (std::map<std::string, double>{{"2", 2}}));

    std::vector<v1::InferResponse> responses(6);
    std::vector<std::promise<absl::Status>> done(6);
    for (int i = 0; i < 6; ++i) {
      engine.Infer(request, &responses[i], [&done, i](absl::Status s) { done[i].set_value(s); });
    }
    for (int i = 0; i < 6; ++i) {
      ASSERT_TRUE(done[i].get_future().get().ok());
      EXPECT_EQ(responses[i].items(0).code(), 0) << responses[i].items(0).message();
    }
    const std::map<std::string, double> passes = PassesByThreads(registry);
    if (share) {
      const double one = passes.count("1") ? passes.at("1") : 0;
      EXPECT_GE(one, 1) << "no pass ran with one thread";
      EXPECT_EQ(one + passes.at("2"), 8);
    } else {
      EXPECT_EQ(passes, (std::map<std::string, double>{{"2", 8}}));
    }
  }
  at::set_num_threads(before);
}

}  // namespace
}  // namespace deeplab
