// Procedural training scenes for the demo weight set: RGB images with a label map.
//
// Each scene is a textured, noisy background with a few objects of four classes that differ
// only by shape (circle, square, triangle, star). Every object has a random size, position,
// rotation, colour and shading, and later objects occlude earlier ones; background clutter
// (lines) is labelled background. Colour therefore tells a network nothing: it must learn
// shape. A scene is a pure function of (seed, index, options), so any scene can be
// regenerated alone and sets from different seeds never coincide.
//
// Independent of LibTorch and gRPC (OpenCV and Abseil only). Thread-safe: no shared state.
#ifndef DEEPLAB_WORKERS_TRAIN_SCENES_H_
#define DEEPLAB_WORKERS_TRAIN_SCENES_H_

#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "absl/status/status.h"

namespace deeplab {

struct SceneOptions {
  int height = 128;
  int width = 128;
  int min_objects = 2;
  int max_objects = 6;
  // Object radius as a fraction of min(height, width).
  double min_radius = 0.09;
  double max_radius = 0.24;
};

struct Scene {
  cv::Mat image;   // CV_8UC3, RGB
  cv::Mat labels;  // CV_8UC1, class ids (SceneClassNames() order)
};

// "background", "circle", "square", "triangle", "star": the demo weight set's classes.
const std::vector<std::string>& SceneClassNames();

// INVALID_ARGUMENT when a size or count is out of range (sizes 16..4096).
absl::Status ValidateSceneOptions(const SceneOptions& options);

// Scene `index` of the set drawn from `seed`. Options must be valid.
Scene GenerateScene(uint64_t seed, uint64_t index, const SceneOptions& options);

// Writes scenes 0..count-1 of `seed` as DIR/images/NNNNNN.png (RGB) and DIR/labels/NNNNNN.png
// (8-bit grey, pixel value = class id), and DIR/classes.txt (one class name per line).
absl::Status WriteScenes(const std::string& dir, uint64_t seed, int count,
                         const SceneOptions& options);

// Accumulates a confusion matrix of predicted against true labels and reports IoU.
class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int num_classes);

  // Both CV_8UC1 of one size; true labels >= num_classes are ignored (e.g. 255 "void").
  // INVALID_ARGUMENT on a size or type mismatch, or a prediction out of range.
  absl::Status Add(const cv::Mat& truth, const cv::Mat& predicted);

  int num_classes() const { return num_classes_; }
  int64_t count(int truth, int predicted) const { return counts_[truth * num_classes_ + predicted]; }
  // Intersection over union of class c; NaN when the class appears in neither map.
  double Iou(int c) const;
  // Mean of the IoUs that are defined (classes seen in the truth or the predictions).
  double MeanIou() const;
  double PixelAccuracy() const;

 private:
  int num_classes_;
  std::vector<int64_t> counts_;
};

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_TRAIN_SCENES_H_
