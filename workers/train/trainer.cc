#include "workers/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/weights/native_checkpoint.h"

namespace deeplab {
namespace {

constexpr double kPi = 3.14159265358979323846;

std::vector<Scene> MakeBatch(uint64_t seed, uint64_t first, int count, const SceneOptions& options) {
  std::vector<Scene> scenes;
  scenes.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) scenes.push_back(GenerateScene(seed, first + i, options));
  return scenes;
}

double LearningRate(const TrainOptions& o, int step) {
  if (step < o.warmup_steps) return o.learning_rate * (step + 1) / o.warmup_steps;
  const double progress =
      static_cast<double>(step - o.warmup_steps) / std::max(1, o.steps - o.warmup_steps);
  return o.learning_rate * (0.01 + 0.99 * 0.5 * (1 + std::cos(kPi * progress)));
}

std::string FormatDuration(double seconds) {
  const int s = static_cast<int>(std::lround(seconds));
  return absl::StrFormat("%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
}

}  // namespace

torch::Tensor LabelsToTensor(const std::vector<Scene>& scenes) {
  const int64_t n = static_cast<int64_t>(scenes.size());
  const int64_t h = scenes[0].labels.rows, w = scenes[0].labels.cols;
  torch::Tensor out = torch::empty({n, h, w}, torch::kUInt8);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out[i].data_ptr<uint8_t>(), scenes[i].labels.data, static_cast<size_t>(h * w));
  }
  return out.to(torch::kLong);
}

torch::Tensor ScenesToTensor(const std::vector<Scene>& scenes) {
  const int64_t n = static_cast<int64_t>(scenes.size());
  const int64_t h = scenes[0].image.rows, w = scenes[0].image.cols;
  torch::Tensor hwc = torch::empty({n, h, w, 3}, torch::kUInt8);
  for (int64_t i = 0; i < n; ++i) {
    const cv::Mat& image = scenes[i].image;
    TORCH_CHECK(image.rows == h && image.cols == w && image.type() == CV_8UC3 && image.isContinuous());
    std::memcpy(hwc[i].data_ptr<uint8_t>(), image.data, static_cast<size_t>(h * w * 3));
  }
  return hwc.permute({0, 3, 1, 2}).to(torch::kFloat).div_(127.5).sub_(1.0).contiguous();
}

absl::StatusOr<ConfusionMatrix> EvaluateOnScenes(DeepLabV3Plus& model, uint64_t seed, int count,
                                                 const SceneOptions& options, int batch_size) {
  ConfusionMatrix confusion(model->spec().num_classes);
  model->eval();
  torch::NoGradGuard no_grad;
  for (int first = 0; first < count; first += batch_size) {
    const std::vector<Scene> scenes =
        MakeBatch(seed, static_cast<uint64_t>(first), std::min(batch_size, count - first), options);
    torch::Tensor predicted = model->forward(ScenesToTensor(scenes)).argmax(1).to(torch::kUInt8);
    for (size_t i = 0; i < scenes.size(); ++i) {
      torch::Tensor p = predicted[static_cast<int64_t>(i)].contiguous();
      cv::Mat labels(p.size(0), p.size(1), CV_8UC1, p.data_ptr<uint8_t>());
      if (absl::Status s = confusion.Add(scenes[i].labels, labels); !s.ok()) return s;
    }
  }
  return confusion;
}

absl::StatusOr<TrainReport> Train(const TrainOptions& o, std::ostream& log) {
  if (absl::Status s = ValidateSceneOptions(o.scenes); !s.ok()) return s;
  const int classes = static_cast<int>(SceneClassNames().size());
  if (o.spec.num_classes != classes) {
    return absl::InvalidArgumentError(absl::StrCat("the scenes have ", classes,
                                                   " classes; the network has ", o.spec.num_classes));
  }
  if (o.steps < 1 || o.batch_size < 1 || o.validation_count < 1 || !(o.learning_rate > 0) ||
      o.warmup_steps < 0 || o.log_every < 1 || o.validate_every < 0) {
    return absl::InvalidArgumentError(
        "steps, batch size, validation count and log interval must be positive, the learning "
        "rate above zero, warm-up steps and the validation interval not negative");
  }
  if (o.seed == o.validation_seed) {
    return absl::InvalidArgumentError("the validation seed must differ from the training seed");
  }
  torch::manual_seed(o.seed);
  absl::StatusOr<DeepLabV3Plus> built = BuildDeepLabV3Plus(o.spec);
  if (!built.ok()) return built.status();
  DeepLabV3Plus model = *built;
  // Start from LibTorch's default convolution initialisation (Kaiming-uniform on fan-in),
  // not the fan-out He initialisation the family uses for random-weight serving: with
  // fan-out, depthwise kernels start tiny and the logits large, and from-scratch training
  // barely moved in the first thousand steps (measured: binary object/background pixel
  // accuracy 0.75 against 0.88 after 300 steps).
  for (const auto& m : model->modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) conv->reset_parameters();
  }
  model->train();

  torch::optim::Adam optimizer(
      model->parameters(),
      torch::optim::AdamOptions(o.learning_rate).weight_decay(o.weight_decay));
  TrainReport report;
  report.best_miou = -1;
  log << absl::StrFormat("training %s on %dx%d scenes: %d steps of %d, seed %d\n",
                         DescribeModelSpec(model->spec()), o.scenes.height, o.scenes.width,
                         o.steps, o.batch_size, o.seed);
  const auto start = std::chrono::steady_clock::now();
  double smoothed = 0;

  auto validate = [&](int step) -> absl::Status {
    absl::StatusOr<ConfusionMatrix> confusion =
        EvaluateOnScenes(model, o.validation_seed, o.validation_count, o.scenes, o.batch_size);
    model->train();
    if (!confusion.ok()) return confusion.status();
    const double miou = confusion->MeanIou();
    std::string per_class;
    for (int c = 0; c < classes; ++c) {
      absl::StrAppendFormat(&per_class, " %s %.3f", SceneClassNames()[static_cast<size_t>(c)],
                            confusion->Iou(c));
    }
    log << absl::StrFormat("validation at step %d: mIoU %.4f, pixel accuracy %.4f (%d scenes,"
                           " seed %d):%s\n",
                           step, miou, confusion->PixelAccuracy(), o.validation_count,
                           o.validation_seed, per_class);
    if (miou > report.best_miou) {
      report.best_miou = miou;
      report.best_step = step;
      report.class_iou.clear();
      for (int c = 0; c < classes; ++c) report.class_iou.push_back(confusion->Iou(c));
      if (!o.out.empty()) {
        // Written beside and renamed, so an interrupted run never leaves half a file.
        const std::string partial = o.out + ".partial";
        if (absl::Status s = SaveNativeCheckpoint(partial, model, o.source_note); !s.ok()) return s;
        std::error_code ec;
        std::filesystem::rename(partial, o.out, ec);
        if (ec) return absl::InternalError(absl::StrCat("cannot write ", o.out, ": ", ec.message()));
        log << "  saved " << o.out << " (best so far)\n";
      }
    }
    log.flush();
    return absl::OkStatus();
  };

  for (int step = 0; step < o.steps; ++step) {
    const double lr = LearningRate(o, step);
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
    }
    const std::vector<Scene> scenes =
        MakeBatch(o.seed, static_cast<uint64_t>(step) * o.batch_size, o.batch_size, o.scenes);
    torch::Tensor logits = model->forward(ScenesToTensor(scenes));
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits, LabelsToTensor(scenes));
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    const double value = loss.item<double>();
    if (!std::isfinite(value)) {
      return absl::InternalError(absl::StrCat("the loss diverged at step ", step + 1,
                                              "; try a lower --lr"));
    }
    report.losses.push_back(value);
    smoothed = step == 0 ? value : 0.9 * smoothed + 0.1 * value;
    const int done = step + 1;
    if (done % o.log_every == 0 || done == o.steps) {
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double per_step = elapsed / done;
      log << absl::StrFormat(
          "step %d/%d  loss %.4f (avg %.4f)  lr %.2e  %.1f images/s  elapsed %s  eta %s\n", done,
          o.steps, value, smoothed, lr, o.batch_size / per_step, FormatDuration(elapsed),
          FormatDuration(per_step * (o.steps - done)));
      log.flush();
    }
    if (o.validate_every > 0 && done % o.validate_every == 0 && done != o.steps) {
      if (absl::Status s = validate(done); !s.ok()) return s;
    }
  }
  if (absl::Status s = validate(o.steps); !s.ok()) return s;
  return report;
}

}  // namespace deeplab
