// The per-item image pipeline of a weight set, the parts that run on the CPU around the
// batch path (workers/batch): an RGB image in, uint8 network inputs out (Preprocess), and
// the restored labels back to encoded outputs (EncodeOutputs).
//
// Geometry: letterbox (longest side to the input size, aspect kept, zero padding
// bottom/right), stretch, or tiling (overlapping patches of the input size at full
// resolution). Normalization, cropping the padding, resizing scores back and the argmax run
// in the batch path, on the model's device.
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
#include "common/image_codec.h"
#include "common/tiling.h"
#include "deeplab/v1/common.pb.h"
#include "deeplab/v1/model_config.pb.h"
#include "workers/batch/batch_path.h"
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

// The batch path's name for a config's normalization.
InputNormalization InputNormalizationOf(v1::Normalization normalization);

// The batch path's options for this weight set (everything but the padded batch sizes).
BatchPathOptions MakeBatchPathOptions(const PipelineConfig& config, int max_forward_batch);

// An image ready for the network.
struct PreparedImage {
  // The image as decoded, RGB8, kept for the overlay: the original, or smaller when it was
  // decoded at a reduced scale (never when an overlay is asked for).
  cv::Mat rgb;
  // uint8 network inputs (views into one buffer) and the geometry to restore outputs: its
  // height and width are the original's.
  BatchItem item;

  int height() const { return item.geometry.height; }
  int width() const { return item.geometry.width; }
  int cost() const { return item.geometry.cost(); }
};

PreparedImage Preprocess(const cv::Mat& rgb, const PipelineConfig& config);
// `image.rgb` may be smaller than the original (image.height x image.width): the network
// input is made from it, the outputs come back at the original size.
PreparedImage Preprocess(const DecodedImage& image, const PipelineConfig& config);

// How small an image of a given original size may be decoded for this weight set: the
// letterboxed (or stretched) content size. Null when tiled: patches take full resolution.
MinimumSize MinimumDecodeSize(const PipelineConfig& config);

// Fills the outputs `options` ask for (label PNG and class stats when it asks for none)
// from the restored labels and, when asked, uint8 probabilities (host tensors).
void EncodeOutputs(const PreparedImage& image, const ItemOutputs& outputs,
                   const PipelineConfig& config, const v1::OutputOptions& options,
                   v1::SegmentationResult* result);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_WORKER_PIPELINE_H_
