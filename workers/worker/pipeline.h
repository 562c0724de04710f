// The per-item image pipeline of a weight set: an RGB image in, network inputs out
// (Preprocess), and the network's scores back to a label map and outputs at the image's
// original size (ComputeLabels, EncodeOutputs).
//
// Geometry: letterbox (longest side to the input size, aspect kept, zero padding
// bottom/right; the padding is cropped from the scores), stretch, or tiling (overlapping
// patches of the input size, scores averaged where they overlap). Labels are the argmax of
// the scores resized bilinearly (align_corners as configured) to the original size.
//
// All functions are pure and thread-safe; a PipelineConfig is immutable once built.
#ifndef DEEPLAB_WORKERS_WORKER_PIPELINE_H_
#define DEEPLAB_WORKERS_WORKER_PIPELINE_H_

#include <torch/torch.h>

#include <opencv2/core.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tiling.h"
#include "deeplab/v1/common.pb.h"
#include "deeplab/v1/model_config.pb.h"
#include "workers/repository/model_repository.h"

namespace deeplab {

struct PipelineConfig {
  int input_height = 0;
  int input_width = 0;
  v1::ResizeMode resize = v1::RESIZE_MODE_LETTERBOX;
  v1::Normalization normalization = v1::NORMALIZATION_MINUS_ONE_TO_ONE;
  // Tiling: patch = input size, origins every tile_stride pixels. 0: not tiled.
  int tile_stride = 0;
  bool align_corners = false;
  int num_classes = 0;
  // The network already applies softmax/sigmoid; otherwise its scores are logits.
  bool outputs_probabilities = false;
  std::vector<std::string> class_names;
  std::vector<Rgb> palette;
};

// From a validated config (LoadModelConfig).
PipelineConfig MakePipelineConfig(const v1::ModelConfig& config);

// An image ready for the network.
struct PreparedImage {
  cv::Mat rgb;  // the original, RGB8, kept for the overlay
  // One HWC float tensor (or view) of the input size per network input: 1, or one per patch.
  std::vector<torch::Tensor> inputs;
  // Letterbox/stretch: the part of the input the image occupies (the rest is padding).
  int content_height = 0;
  int content_width = 0;
  // Tiling: each patch's top-left corner in the original image.
  std::vector<std::pair<int, int>> tile_origins;

  int height() const { return rgb.rows; }
  int width() const { return rgb.cols; }
  int cost() const { return static_cast<int>(inputs.size()); }
};

PreparedImage Preprocess(const cv::Mat& rgb, const PipelineConfig& config);

// Labels (CV_8UC1, original size) and, when asked, per-class probabilities.
struct ItemScores {
  cv::Mat labels;
  // num_classes planes of CV_32F at the original size; empty unless probabilities were asked.
  std::vector<cv::Mat> probabilities;
};

// scores: [cost, C, input_height, input_width] float, the network's output for this item's
// inputs in order.
ItemScores ComputeLabels(const PreparedImage& image, const torch::Tensor& scores,
                         const PipelineConfig& config, bool want_probabilities);

// The argmax over classes of `planes` ([C, h, w] scores, C <= 256) resized bilinearly to
// height x width, as torch::nn::functional::interpolate followed by argmax computes it,
// without resizing every class: where the four source pixels of an output pixel share their
// argmax, the interpolated scores (a convex combination) have it too; only pixels between
// differing source pixels interpolate every class. For a 12-megapixel photo and 21 classes
// that is a few passes over one byte per pixel instead of 21 float planes (1 GB).
cv::Mat UpsampleArgmax(const torch::Tensor& planes, int height, int width, bool align_corners);

// Fills the outputs `options` ask for (label PNG and class stats when it asks for none).
void EncodeOutputs(const PreparedImage& image, const ItemScores& scores,
                   const PipelineConfig& config, const v1::OutputOptions& options,
                   v1::SegmentationResult* result);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_WORKER_PIPELINE_H_
