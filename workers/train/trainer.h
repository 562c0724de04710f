// Trains a network of the DeepLabv3+ family on procedural scenes (scenes.h), on the CPU.
//
// Every training batch is freshly generated from (seed, step), so the network never sees an
// image twice and a run is reproducible from its options (up to floating-point reduction
// order across threads). Validation uses scenes from a different seed.
#ifndef DEEPLAB_WORKERS_TRAIN_TRAINER_H_
#define DEEPLAB_WORKERS_TRAIN_TRAINER_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/model/deeplab.h"
#include "workers/model/model_spec.h"
#include "workers/train/scenes.h"

namespace deeplab {

struct TrainOptions {
  ModelSpec spec;  // num_classes must equal SceneClassNames().size()
  SceneOptions scenes;
  int steps = 2000;
  int batch_size = 16;
  double learning_rate = 2e-3;  // Adam, linear warm-up then cosine decay to 1% of it
  int warmup_steps = 100;
  double weight_decay = 1e-5;
  uint64_t seed = 1;
  uint64_t validation_seed = 1000001;
  int validation_count = 64;
  int log_every = 20;           // steps between progress lines
  int validate_every = 500;     // steps between validations (and checkpoint writes); 0: end only
  std::string out;              // native checkpoint written at the best validation; may be empty
  std::string source_note;      // stored in the checkpoint header (e.g. the command line)
};

struct TrainReport {
  std::vector<double> losses;  // the loss of every step
  double best_miou = 0;        // best validation mean IoU
  int best_step = 0;
  std::vector<double> class_iou;  // per class, at the best validation
};

// Images (CV_8UC3 RGB, one size) to a normalised NCHW float tensor, x / 127.5 - 1: the
// NORMALIZATION_MINUS_ONE_TO_ONE the demo weight set's config names.
torch::Tensor ScenesToTensor(const std::vector<Scene>& scenes);

// Label maps (CV_8UC1, one size) to an (N, H, W) int64 tensor of class ids.
torch::Tensor LabelsToTensor(const std::vector<Scene>& scenes);

// Mean IoU of `model` (put in eval mode) on scenes 0..count-1 of `seed`.
absl::StatusOr<ConfusionMatrix> EvaluateOnScenes(DeepLabV3Plus& model, uint64_t seed, int count,
                                                 const SceneOptions& options, int batch_size);

// Trains from scratch (He initialisation from options.seed). Progress goes to `log`.
absl::StatusOr<TrainReport> Train(const TrainOptions& options, std::ostream& log);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_TRAIN_TRAINER_H_
