// deeplab-gpu-check: the worker's device code on one device, checked against the CPU and
// timed. Built by CMake with the project, and by scripts/gpu_check.sh on a bare GPU machine
// against that machine's LibTorch (so it uses LibTorch, Abseil and the model's protobuf
// config only: no OpenCV, gRPC or HDF5).
//
//   deeplab-gpu-check correct DEVICE DEMO_DLCK [SIZE [SAMPLES.u8]]
//       CPU fp32 against DEVICE in fp32/fp16/bf16: the network's scores (relative L2, label
//       agreement) on the demo weights (on its sample images, raw RGB from
//       scripts/bench/png_to_raw.py) and a random Xception-65 (SIZE x SIZE, default
//       512); the batch path's label
//       restore on the device against the CPU's on the same scores (must be identical), for
//       letterboxed and tiled items; and how precision auto resolves.
//   deeplab-gpu-check speed DEVICE ARCH CLASSES SIZE BATCHES PRECISION
//       images/s of the network alone (input and output on the device, NCHW and
//       channels-last) and of the batch path end to end (uint8 pixels of a 640x427 photo's
//       letterbox in, uint8 labels at 640x427 out), one batch at a time and with two
//       batches in flight on two streams, as the worker runs it.
//
// Prints one "RESULT {json}" line per measurement; scripts/gpu_check.sh makes the table.
#include <ATen/Parallel.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <thread>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "workers/batch/batch_path.h"
#include "workers/model/deeplab.h"
#include "workers/weights/segmentation_model.h"

namespace deeplab {
namespace {

using Clock = std::chrono::steady_clock;

// Waits for the device's current stream (the batch path's runs wait for their own).
void Sync(const torch::Device& device) {
  if (device.is_cpu()) return;
  c10::impl::VirtualGuardImpl(device.type()).getStream(device).synchronize();
}

// Median seconds of fn over >= min_iters runs and >= min_seconds, after 2 warm-ups.
double Median(const std::function<void()>& fn, const torch::Device& device, int min_iters,
              double min_seconds) {
  for (int i = 0; i < 2; ++i) fn();
  Sync(device);
  std::vector<double> t;
  const auto began = Clock::now();
  while (static_cast<int>(t.size()) < min_iters ||
         std::chrono::duration<double>(Clock::now() - began).count() < min_seconds) {
    const auto s = Clock::now();
    fn();
    Sync(device);
    t.push_back(std::chrono::duration<double>(Clock::now() - s).count());
    if (t.size() >= 200) break;
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

Precision ParsePrecision(const std::string& name) {
  if (name == "fp16") return Precision::kFp16;
  if (name == "bf16") return Precision::kBf16;
  if (name == "auto") return Precision::kAuto;
  return Precision::kFp32;
}

std::unique_ptr<SegmentationModel> Load(const ModelSpec& spec, WeightsFormat format,
                                        const std::string& path, const std::string& device,
                                        Precision precision, bool channels_last) {
  RuntimeOptions o;
  o.device = device;
  o.precision = precision;
  o.channels_last = channels_last;
  o.force_precision = true;  // measure what was asked, even where it is emulated
  torch::manual_seed(1);     // the same random weights on every load
  auto m = LoadSegmentationModel(spec, format, path, o);
  if (!m.ok()) {
    std::cerr << "load failed: " << m.status() << "\n";
    std::exit(1);
  }
  return *std::move(m);
}

ModelSpec Spec(const std::string& arch, int classes) {
  ModelSpec s;
  s.backbone = arch;
  s.num_classes = classes;
  return s;
}

ModelSpec DemoSpec() {
  ModelSpec s = Spec("mobilenetv2", 5);
  s.output_stride = 16;
  s.alpha = 0.5;
  s.decoder = 1;
  s.head_channels = 64;
  return s;
}

// A photo-like uint8 image: the precision check's scene at any size.
torch::Tensor Scene(int height, int width) {
  return ((MakePrecisionCheckInput(height, width)[0] + 1) * 127.5)
      .round()
      .clamp(0, 255)
      .permute({1, 2, 0})
      .to(torch::kUInt8)
      .contiguous();
}

// A letterboxed item of an original height x width for an input of size x size.
BatchItem LetterboxItem(int height, int width, int size) {
  BatchItem item;
  ItemGeometry& g = item.geometry;
  g.height = height;
  g.width = width;
  const double ratio = std::min(static_cast<double>(size) / height, static_cast<double>(size) / width);
  g.content_height = std::clamp(static_cast<int>(ratio * height), 1, size);
  g.content_width = std::clamp(static_cast<int>(ratio * width), 1, size);
  torch::Tensor pixels = torch::zeros({size, size, 3}, torch::kUInt8);
  pixels.slice(0, 0, g.content_height).slice(1, 0, g.content_width).copy_(
      Scene(g.content_height, g.content_width));
  item.inputs.push_back({pixels, g.content_height, g.content_width});
  return item;
}

void Result(const std::string& json) {
  std::printf("RESULT {%s}\n", json.c_str());
  std::fflush(stdout);
}

void CompareScores(const std::string& what, const torch::Tensor& ref, const torch::Tensor& got) {
  const double rel = ((ref - got).norm() / ref.norm()).item<double>();
  const double agree = ref.argmax(1).eq(got.argmax(1)).to(torch::kFloat64).mean().item<double>();
  const bool finite = torch::isfinite(got).all().item<bool>();
  Result(absl::StrCat("\"check\":\"", what, "\",\"rel_l2\":", rel, ",\"label_agreement\":", agree,
                      ",\"finite\":", finite ? "true" : "false"));
}

// The batch path's label restore on the device against the CPU's, on the same scores
// (the device's, copied to the host): the implementations must agree label for label.
void CompareRestore(const std::string& what, const torch::Tensor& device_scores,
                    const ItemGeometry& g, const RestoreOptions& options) {
  const ItemOutputs on_device = RestoreItem(device_scores, g, options, /*want_probabilities=*/true);
  const ItemOutputs on_cpu =
      RestoreItem(device_scores.to(torch::kCPU), g, options, /*want_probabilities=*/true);
  const int64_t differ = on_device.labels.cpu().ne(on_cpu.labels).sum().item<int64_t>();
  const int64_t prob_differ =
      on_device.probabilities.cpu().to(torch::kInt16).sub(on_cpu.probabilities.to(torch::kInt16))
          .abs().gt(1).sum().item<int64_t>();
  Result(absl::StrCat("\"check\":\"restore ", what, "\",\"pixels\":", on_cpu.labels.numel(),
                      ",\"labels_differ\":", differ, ",\"probabilities_off_by_more_than_1\":",
                      prob_differ));
}

// The demo weight set's sample images (raw RGB, 128x128 each, from png_to_raw.py),
// normalized as the demo weight set requires; a procedural scene when there is no file.
torch::Tensor DemoInput(const std::string& samples) {
  std::ifstream in(samples, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const int64_t n = static_cast<int64_t>(bytes.size()) / (128 * 128 * 3);
  if (samples.empty() || n == 0) {
    std::cerr << "no demo samples: the check input is a procedural scene (out of the demo's "
                 "domain: expect near-ties)\n";
    return MakePrecisionCheckInput(128, 128);
  }
  const torch::Tensor pixels =
      torch::from_blob(const_cast<char*>(bytes.data()), {n, 128, 128, 3}, torch::kUInt8).clone();
  return NormalizeBatch(pixels, {}, {}, InputNormalization::kMinusOneToOne, torch::kFloat32, false);
}

int Correct(const std::string& device, const std::string& demo, int size,
            const std::string& samples) {
  const torch::Device dev(device);
  // 1. The network's scores: CPU fp32 against the device in each precision.
  const torch::Tensor demo_x = DemoInput(samples);
  auto cpu_demo = Load(DemoSpec(), WeightsFormat::kNative, demo, "cpu", Precision::kFp32, false);
  const torch::Tensor demo_ref = *cpu_demo->Forward(demo_x);
  torch::manual_seed(7);
  const torch::Tensor big = MakePrecisionCheckInput(size, size).repeat({2, 1, 1, 1});
  auto cpu_xc = Load(Spec("xception65", 21), WeightsFormat::kRandom, "", "cpu", Precision::kFp32, false);
  const torch::Tensor xc_ref = *cpu_xc->Forward(big);
  for (Precision p : {Precision::kFp32, Precision::kFp16, Precision::kBf16}) {
    // On a CPU: no fp16, and bf16 only where it is native (emulated, it takes minutes).
    if (dev.is_cpu() && (p == Precision::kFp16 || (p == Precision::kBf16 && !CpuHasNativeBf16()))) {
      continue;
    }
    for (bool cl : {false, true}) {
      auto m = Load(DemoSpec(), WeightsFormat::kNative, demo, device, p, cl);
      CompareScores(absl::StrCat("demo ", m->runtime()), demo_ref, *m->Forward(demo_x));
    }
    auto x = Load(Spec("xception65", 21), WeightsFormat::kRandom, "", device, p, false);
    CompareScores(absl::StrCat("xception65 random ", x->runtime()), xc_ref, *x->Forward(big));
  }
  // 2. Label restore on the device against the CPU, on the device's own fp32 scores.
  auto xc = Load(Spec("xception65", 21), WeightsFormat::kRandom, "", device, Precision::kFp32, false);
  RestoreOptions restore;
  restore.input_height = restore.input_width = size;
  torch::Tensor scores;
  {
    torch::InferenceMode guard;
    scores = *xc->Run(big.to(dev));
  }
  struct Shape {
    const char* name;
    int height, width;
    bool align;
  };
  // A 12-megapixel photo on a device; a 2-megapixel one at small sizes (the CPU mode).
  const Shape large = size >= 512 ? Shape{"12MP 3024x4032", 3024, 4032, false}
                                  : Shape{"2MP 1200x1600", 1200, 1600, false};
  for (const Shape& s : {Shape{"photo 427x640", 427, 640, false}, large,
                         Shape{"small 97x61 align_corners", 97, 61, true}}) {
    BatchItem item = LetterboxItem(s.height, s.width, size);
    restore.align_corners = s.align;
    CompareRestore(s.name, scores.slice(0, 0, 1), item.geometry, restore);
  }
  // Tiles: 2-class probabilities over patches of half the input at a stride of a quarter,
  // as DigiPathAI tiles (256 at 128), 5 x 4 of them.
  const int patch = size / 2, stride = size / 4;
  ItemGeometry tiled;
  tiled.height = patch + 3 * stride - 5;
  tiled.width = patch + 4 * stride - 3;
  for (int y : {0, stride, 2 * stride, tiled.height - patch}) {
    for (int x : {0, stride, 2 * stride, 3 * stride, tiled.width - patch}) {
      tiled.tile_origins.emplace_back(y, x);
    }
  }
  torch::Tensor tile_scores = torch::softmax(
      scores.slice(1, 0, 2).slice(2, 0, patch).slice(3, 0, patch).repeat({10, 1, 1, 1}), 1);
  RestoreOptions tiles;
  tiles.input_height = tiles.input_width = patch;
  tiles.scores_are_probabilities = true;
  CompareRestore(absl::StrCat("tiles ", tiled.height, "x", tiled.width, " (20 patches)"),
                 tile_scores, tiled, tiles);
  // 3. Precision auto on this device, on the demo weights.
  RuntimeOptions automatic;
  automatic.device = device;
  automatic.precision = Precision::kAuto;
  automatic.precision_check_input = demo_x;
  auto chosen = LoadSegmentationModel(DemoSpec(), WeightsFormat::kNative, demo, automatic);
  if (!chosen.ok()) {
    std::cerr << "auto: " << chosen.status() << "\n";
    return 1;
  }
  Result(absl::StrCat("\"check\":\"precision auto (demo)\",\"runtime\":\"", (*chosen)->runtime(), "\""));
  return 0;
}

int Speed(const std::string& device, const std::string& arch, int classes, int size,
          const std::vector<int>& batches, Precision precision, double min_seconds) {
  const torch::Device dev(device);
  const ModelSpec spec = Spec(arch, classes);
  std::unique_ptr<SegmentationModel> model =
      Load(spec, WeightsFormat::kRandom, "", device, precision, false);
  const std::string runtime = model->runtime();
  auto emit = [&](const std::string& what, const std::string& layout, int batch, double seconds) {
    Result(absl::StrCat("\"speed\":\"", what, "\",\"arch\":\"", arch, "\",\"runtime\":\"", runtime,
                        "\",\"layout\":\"", layout, "\",\"batch\":", batch, ",\"ms\":", 1e3 * seconds,
                        ",\"images_per_second\":", batch / seconds));
  };
  // The network alone, both layouts.
  for (bool cl : {false, true}) {
    model->SetChannelsLast(cl);
    for (int b : batches) {
      torch::InferenceMode guard;
      const torch::Tensor x =
          NormalizeBatch(Scene(size, size).unsqueeze(0).repeat({b, 1, 1, 1}).to(dev), {}, {},
                         InputNormalization::kMinusOneToOne, model->dtype(), cl);
      const double t = Median([&] { (void)model->Run(x); }, dev, 5, min_seconds);
      emit("net", cl ? "channels_last" : "nchw", b, t);
    }
  }
  // The batch path end to end, in the layout its warm-up picks, padded sizes as the worker.
  BatchPathOptions options;
  options.input_height = options.input_width = size;
  options.max_forward_batch = *std::max_element(batches.begin(), batches.end());
  options.padded_batch_sizes = DefaultPaddedBatchSizes(dev, options.max_forward_batch);
  BatchPath path(model.get(), options);
  absl::StatusOr<std::string> warm = path.WarmUp(/*choose_layout=*/true);
  if (!warm.ok()) {
    std::cerr << "warm-up: " << warm.status() << "\n";
    return 1;
  }
  std::cerr << "batch path warm-up: " << *warm << "\n";
  const std::string layout = model->channels_last() ? "channels_last" : "nchw";
  const BatchItem photo = LetterboxItem(427, 640, size);
  const std::vector<c10::Stream> streams = DeviceStreams(dev, 2);
  for (int b : batches) {
    const std::vector<const BatchItem*> items(b, &photo);
    auto finish = [&](BatchRun& run) {
      if (absl::Status s = run.Wait(); !s.ok()) {
        std::cerr << "batch: " << s << "\n";
        std::exit(1);
      }
      for (int i = 0; i < b; ++i) run.TakeOutputs(i);
    };
    const double serial = Median([&] { finish(*path.Submit(items)); }, dev, 5, min_seconds);
    emit("path", layout, b, serial);
    // Two in flight, alternating streams: time per batch over 8 batches.
    const double pipelined = Median(
        [&] {
          std::unique_ptr<BatchRun> previous;
          for (int k = 0; k < 8; ++k) {
            std::optional<c10::Stream> stream;
            if (!streams.empty()) stream = streams[k % 2];
            std::unique_ptr<BatchRun> run = path.Submit(items, stream);
            if (previous) finish(*previous);
            previous = std::move(run);
          }
          finish(*previous);
        },
        dev, 3, min_seconds) / 8;
    emit("path, 2 in flight", layout, b, pipelined);
  }
  return 0;
}

int Usage() {
  std::cerr << "usage: deeplab-gpu-check correct DEVICE DEMO_DLCK [SIZE [SAMPLES.u8]]\n"
               "       deeplab-gpu-check speed DEVICE ARCH CLASSES SIZE BATCHES PRECISION "
               "[MIN_SECONDS]\n";
  return 2;
}

}  // namespace
}  // namespace deeplab

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  // As the worker: one intra-op thread per core (LibTorch's default counts physical cores,
  // and at one thread some convolutions take a slow path).
  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  if (args.size() >= 3 && args.size() <= 5 && args[0] == "correct") {
    int size = 512;
    if (args.size() >= 4 && (!absl::SimpleAtoi(args[3], &size) || size < 64)) return deeplab::Usage();
    return deeplab::Correct(args[1], args[2], size, args.size() == 5 ? args[4] : "");
  }
  if ((args.size() == 7 || args.size() == 8) && args[0] == "speed") {
    int classes = 0, size = 0;
    double min_seconds = 1.0;
    std::vector<int> batches;
    for (absl::string_view b : absl::StrSplit(args[5], ',')) {
      int n = 0;
      if (!absl::SimpleAtoi(b, &n) || n < 1) return deeplab::Usage();
      batches.push_back(n);
    }
    if (!absl::SimpleAtoi(args[3], &classes) || !absl::SimpleAtoi(args[4], &size) ||
        (args.size() == 8 && !absl::SimpleAtod(args[7], &min_seconds))) {
      return deeplab::Usage();
    }
    return deeplab::Speed(args[1], args[2], classes, size, batches,
                          deeplab::ParsePrecision(args[6]), min_seconds);
  }
  return deeplab::Usage();
}
