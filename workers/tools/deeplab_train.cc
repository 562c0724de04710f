// deeplab-train: procedural scenes and a CPU trainer for the demo weight set.
//   deeplab-train generate --count N --seed S --size HxW --out DIR
//   deeplab-train fit --arch mobilenetv2 --alpha 0.5 --decoder true --size 128x128
//                     --steps 3000 --seed 1 --out models/demo/demo.dlck
//   deeplab-train eval --weights FILE [--arch ...] --seed S --count N
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/cpu_count.h"
#include "workers/tools/tool_flags.h"
#include "workers/train/scenes.h"
#include "workers/train/trainer.h"
#include "workers/weights/native_checkpoint.h"

ABSL_FLAG(int, count, 100, "generate/eval: number of scenes");
ABSL_FLAG(uint64_t, seed, 1, "Scene seed (generate, eval) or training seed (fit)");
ABSL_FLAG(std::string, size, "128x128", "Scene size HxW");
ABSL_FLAG(int, min_objects, 2, "Fewest objects per scene");
ABSL_FLAG(int, max_objects, 6, "Most objects per scene");
ABSL_FLAG(std::string, out, "", "generate: output folder; fit: native checkpoint to write");
ABSL_FLAG(int, steps, 3000, "fit: optimiser steps");
ABSL_FLAG(int, batch, 16, "fit: scenes per step (and per evaluation batch)");
ABSL_FLAG(double, lr, 2e-3, "fit: peak Adam learning rate");
ABSL_FLAG(int, warmup, 100, "fit: linear warm-up steps");
ABSL_FLAG(double, weight_decay, 1e-5, "fit: Adam weight decay");
ABSL_FLAG(uint64_t, val_seed, 1000001, "fit: validation scene seed (must differ from --seed)");
ABSL_FLAG(int, val_count, 64, "fit: validation scenes");
ABSL_FLAG(int, log_every, 20, "fit: steps between progress lines");
ABSL_FLAG(int, validate_every, 500, "fit: steps between validations and checkpoint writes");
ABSL_FLAG(int, threads, 0, "LibTorch threads; 0: one per core");
ABSL_FLAG(std::string, weights, "", "eval: native checkpoint (.dlck) to score");

namespace {

constexpr char kUsage[] =
    "Procedural scenes and a CPU trainer for DeepLabv3+.\n"
    "Usage:\n"
    "  deeplab-train generate --count N --seed S --size HxW --out DIR\n"
    "      writes DIR/images/NNNNNN.png, DIR/labels/NNNNNN.png (pixel = class id), "
    "DIR/classes.txt\n"
    "  deeplab-train fit [--arch A --alpha X --decoder true --output-stride 16] --size HxW\n"
    "      --steps N --batch B --lr LR --seed S --out FILE.dlck\n"
    "      trains on freshly generated scenes, validates on --val-seed scenes, keeps the best\n"
    "  deeplab-train eval --weights FILE.dlck --seed S --count N --size HxW\n"
    "      prints the mean IoU of a checkpoint on scenes of seed S\n"
    "Exit codes: 0 ok, 1 failed, 2 bad arguments.";

int Fail(int code, const std::string& message) {
  std::cerr << "deeplab-train: " << message << "\n";
  return code;
}

absl::StatusOr<deeplab::SceneOptions> SceneOptionsFromFlags() {
  absl::StatusOr<std::pair<int64_t, int64_t>> size = deeplab::ParseImageSize(absl::GetFlag(FLAGS_size));
  if (!size.ok()) return size.status();
  deeplab::SceneOptions options;
  options.height = static_cast<int>(size->first);
  options.width = static_cast<int>(size->second);
  options.min_objects = absl::GetFlag(FLAGS_min_objects);
  options.max_objects = absl::GetFlag(FLAGS_max_objects);
  if (absl::Status s = deeplab::ValidateSceneOptions(options); !s.ok()) return s;
  return options;
}

// The architecture flags, with the class count the scenes have.
absl::StatusOr<deeplab::ModelSpec> SpecFromFlags() {
  absl::StatusOr<deeplab::ModelSpec> spec = deeplab::ModelSpecFromFlags();
  if (!spec.ok()) return spec.status();
  spec->num_classes = static_cast<int>(deeplab::SceneClassNames().size());
  return deeplab::ResolveModelSpec(*spec);
}

int Generate() {
  absl::StatusOr<deeplab::SceneOptions> options = SceneOptionsFromFlags();
  if (!options.ok()) return Fail(2, std::string(options.status().message()));
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return Fail(2, "generate needs --out DIR");
  const int count = absl::GetFlag(FLAGS_count);
  if (count < 1) return Fail(2, "--count must be at least 1");
  if (absl::Status s = deeplab::WriteScenes(out, absl::GetFlag(FLAGS_seed), count, *options);
      !s.ok()) {
    return Fail(1, std::string(s.message()));
  }
  std::cout << "wrote " << count << " scenes (" << options->height << "x" << options->width
            << ", seed " << absl::GetFlag(FLAGS_seed) << ") to " << out << "/images and " << out
            << "/labels; classes: " << absl::StrJoin(deeplab::SceneClassNames(), ", ") << "\n";
  return 0;
}

int Fit(const std::string& command_line) {
  absl::StatusOr<deeplab::SceneOptions> scenes = SceneOptionsFromFlags();
  if (!scenes.ok()) return Fail(2, std::string(scenes.status().message()));
  absl::StatusOr<deeplab::ModelSpec> spec = SpecFromFlags();
  if (!spec.ok()) return Fail(2, std::string(spec.status().message()));
  deeplab::TrainOptions o;
  o.spec = *spec;
  o.scenes = *scenes;
  o.steps = absl::GetFlag(FLAGS_steps);
  o.batch_size = absl::GetFlag(FLAGS_batch);
  o.learning_rate = absl::GetFlag(FLAGS_lr);
  o.warmup_steps = absl::GetFlag(FLAGS_warmup);
  o.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.validation_seed = absl::GetFlag(FLAGS_val_seed);
  o.validation_count = absl::GetFlag(FLAGS_val_count);
  o.log_every = absl::GetFlag(FLAGS_log_every);
  o.validate_every = absl::GetFlag(FLAGS_validate_every);
  o.out = absl::GetFlag(FLAGS_out);
  o.source_note = command_line;
  absl::StatusOr<deeplab::TrainReport> report = deeplab::Train(o, std::cout);
  if (!report.ok()) {
    return Fail(report.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                std::string(report.status().message()));
  }
  std::cout << absl::StrFormat("best validation mIoU %.4f at step %d%s\n", report->best_miou,
                               report->best_step, o.out.empty() ? "" : "; weights in " + o.out);
  return 0;
}

int Eval() {
  absl::StatusOr<deeplab::SceneOptions> scenes = SceneOptionsFromFlags();
  if (!scenes.ok()) return Fail(2, std::string(scenes.status().message()));
  const std::string weights = absl::GetFlag(FLAGS_weights);
  if (weights.empty()) return Fail(2, "eval needs --weights FILE.dlck");
  // The architecture comes from the checkpoint's own header.
  absl::StatusOr<deeplab::v1::CheckpointHeader> header = deeplab::ReadNativeCheckpointHeader(weights);
  if (!header.ok()) return Fail(1, std::string(header.status().message()));
  absl::StatusOr<deeplab::ModelSpec> spec =
      deeplab::ResolveModelSpec(deeplab::ModelSpecFromProto(header->architecture()));
  absl::StatusOr<deeplab::DeepLabV3Plus> model =
      spec.ok() ? deeplab::BuildDeepLabV3Plus(*spec) : spec.status();
  if (!model.ok()) return Fail(1, std::string(model.status().message()));
  if (absl::Status s = deeplab::LoadNativeCheckpoint(weights, *model); !s.ok()) {
    return Fail(1, std::string(s.message()));
  }
  const int count = absl::GetFlag(FLAGS_count);
  if (count < 1) return Fail(2, "--count must be at least 1");
  absl::StatusOr<deeplab::ConfusionMatrix> confusion = deeplab::EvaluateOnScenes(
      *model, absl::GetFlag(FLAGS_seed), count, *scenes, absl::GetFlag(FLAGS_batch));
  if (!confusion.ok()) return Fail(1, std::string(confusion.status().message()));
  std::cout << absl::StrFormat("mIoU %.4f  pixel accuracy %.4f  (%d scenes, seed %d)\n",
                               confusion->MeanIou(), confusion->PixelAccuracy(), count,
                               absl::GetFlag(FLAGS_seed));
  for (int c = 0; c < confusion->num_classes(); ++c) {
    std::cout << absl::StrFormat("  %-10s IoU %.4f\n",
                                 deeplab::SceneClassNames()[static_cast<size_t>(c)], confusion->Iou(c));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::string command_line = "deeplab-train";
  for (int i = 1; i < argc; ++i) absl::StrAppend(&command_line, " ", argv[i]);
  std::vector<char*> args = deeplab::ParseToolCommandLine(argc, argv);
  if (args.size() != 2) return Fail(2, absl::StrCat("expected one command: generate, fit or eval\n", kUsage));
  const int threads = absl::GetFlag(FLAGS_threads);
  at::set_num_threads(threads > 0 ? threads : deeplab::UsableCores().usable);
  const std::string command = args[1];
  if (command == "generate") return Generate();
  if (command == "fit") return Fit(command_line);
  if (command == "eval") return Eval();
  return Fail(2, absl::StrCat("unknown command '", command, "'; expected generate, fit or eval"));
}
