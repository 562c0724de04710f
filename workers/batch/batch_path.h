// The batch path: from decoded, letterboxed uint8 pixels to per-item uint8 labels (and
// probabilities) at each image's original size, with every step between on the model's
// device. Only uint8 crosses to the device (4x fewer bytes than float32) and only what a
// request asked for comes back: labels, and probabilities quantized to uint8 when asked.
//
//   host uint8 [N,H,W,3] (pinned on CUDA) --copy--> device: normalize, zero the padding,
//   dtype and layout of the model -> forward -> per item: crop the letterbox padding or
//   average overlapping tiles -> resize scores to the original size -> argmax (uint8)
//   [-> softmax, resize, quantize] --copy--> host uint8
//
// On a CUDA device a batch is enqueued on a stream the caller gives (Submit returns at
// once) and the host waits only for its results (BatchRun::Wait), so one thread can keep
// two batches in flight: the next one uploads while the current one computes. On the CPU
// the same code runs synchronously, and the label restore uses the exact coarse-argmax
// path (UpsampleArgmax), run per item by whichever thread calls TakeOutputs.
//
// LibTorch only (no OpenCV, no gRPC, no protobuf): scripts/gpu_check.sh builds it on a bare
// GPU machine. Thread safety: a BatchPath is immutable after WarmUp and may Submit from
// several threads at once; a BatchRun belongs to its caller (TakeOutputs of different items
// may run on different threads).
#ifndef DEEPLAB_WORKERS_BATCH_BATCH_PATH_H_
#define DEEPLAB_WORKERS_BATCH_BATCH_PATH_H_

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "workers/weights/segmentation_model.h"

namespace deeplab {

// How uint8 pixels become network inputs, computed as the references compute them.
enum class InputNormalization {
  kMinusOneToOne,  // x / 127.5 - 1 (keras-deeplab-v3-plus)
  kDigiPathAi,     // (x - 128) / 128
  kImageNet,       // (x / 255 - mean) / std, torchvision's mean and std
  kNone,           // x as float
};

// Normalizes a uint8 NHWC batch on its device into an NCHW batch of `dtype` in the given
// memory format. Each input's pixels outside its top-left valid_heights[i] x
// valid_widths[i] are padding and become exactly zero after normalization (as
// keras-deeplab-v3-plus pads).
torch::Tensor NormalizeBatch(const torch::Tensor& pixels, const std::vector<int>& valid_heights,
                             const std::vector<int>& valid_widths, InputNormalization normalization,
                             torch::ScalarType dtype, bool channels_last);

// Where one item's network inputs sit in its original image.
struct ItemGeometry {
  int height = 0;  // original
  int width = 0;
  // Letterbox or stretch: the top-left part of the (single) input the image fills.
  int content_height = 0;
  int content_width = 0;
  // Tiled: each patch's top-left corner in the original image, in input order.
  std::vector<std::pair<int, int>> tile_origins;

  int cost() const { return tile_origins.empty() ? 1 : static_cast<int>(tile_origins.size()); }
};

// Which implementation restores labels: chosen by the scores' device (the CPU:
// UpsampleArgmax; others: UpsampleArgmaxTensorOps), or the tensor ops on any device (tests
// compare the two on the CPU).
enum class LabelPath { kByDevice, kTensorOps };

struct RestoreOptions {
  LabelPath label_path = LabelPath::kByDevice;
  int input_height = 0;
  int input_width = 0;
  bool align_corners = false;
  // The network already applies softmax/sigmoid; otherwise its scores are logits.
  bool scores_are_probabilities = false;
};

// One item's outputs at its original size, on the device they were computed on (host
// tensors once a BatchRun hands them out).
struct ItemOutputs {
  torch::Tensor labels;         // uint8 [height, width]
  torch::Tensor probabilities;  // uint8 [classes, height, width], round(p * 255); or undefined
};

// Labels (and, when asked, quantized probabilities) of one item from its scores
// [cost, classes, input_height, input_width] (any floating dtype, any device). Tiles:
// probabilities averaged where patches overlap (as DigiPathAI does); labels are their
// argmax. Otherwise the letterbox padding is cropped and the scores are resized bilinearly
// to the original size before the argmax. CPU tensors take UpsampleArgmax; other devices
// UpsampleArgmaxTensorOps; both give the same labels (batch_path_test).
ItemOutputs RestoreItem(const torch::Tensor& scores, const ItemGeometry& geometry,
                        const RestoreOptions& options, bool want_probabilities);

// The argmax over classes of `planes` ([C, h, w] float32 on the CPU, C <= 256) resized
// bilinearly to height x width, as torch::nn::functional::interpolate followed by argmax
// computes it, without resizing every class: where the four source pixels of an output
// pixel share their argmax, the interpolated scores (a convex combination) have it too;
// only pixels between differing source pixels interpolate every class. For a 12-megapixel
// photo and 21 classes that is a few passes over one byte per pixel instead of 21 float
// planes (1 GB). Returns uint8 [height, width] on the CPU.
torch::Tensor UpsampleArgmax(const torch::Tensor& planes, int height, int width, bool align_corners);

// The same labels from tensor operations on planes' device (the GPU's implementation): the
// same taps, weights and order of float operations, the full interpolation in strips of
// rows, and the coarse argmax where the four taps agree. Returns uint8 [height, width] on
// planes' device.
torch::Tensor UpsampleArgmaxTensorOps(const torch::Tensor& planes, int height, int width,
                                      bool align_corners);

struct BatchPathOptions {
  int input_height = 0;
  int input_width = 0;
  InputNormalization normalization = InputNormalization::kMinusOneToOne;
  RestoreOptions restore;  // input size filled in by the constructor
  // Largest forward pass, in network inputs; bigger batches run in several passes.
  int max_forward_batch = 32;
  // Batch sizes a forward pass is padded up to (so cuDNN's benchmark mode, which picks
  // algorithms per shape, sees few shapes, each warmed up once). Empty: no padding (the
  // CPU, where padding costs compute in full).
  std::vector<int> padded_batch_sizes;
};

// The padded sizes for a device: on CUDA powers of two up to max_forward_batch and
// max_forward_batch itself; on a CPU none.
std::vector<int> DefaultPaddedBatchSizes(const torch::Device& device, int max_forward_batch);

// One network input: the uint8 pixels of the input size (a view is fine) and the part of
// them that is image rather than padding.
struct BatchInput {
  torch::Tensor pixels;  // uint8 [input_height, input_width, 3] on the CPU
  int valid_height = 0;
  int valid_width = 0;
};

struct BatchItem {
  std::vector<BatchInput> inputs;  // geometry.cost() of them
  ItemGeometry geometry;
  bool want_probabilities = false;
};

// A submitted batch. Wait, then TakeOutputs for each item.
class BatchRun {
 public:
  // Blocks until the device has finished the batch and its outputs are on the host; the
  // batch's status (INTERNAL when the model or a device operation failed).
  absl::Status Wait();
  // Item i's outputs on the host, once. On a CPU model this computes them (RestoreItem), so
  // callers spread items over threads; on a device it hands over the copies.
  ItemOutputs TakeOutputs(int i);

  int64_t bytes_to_device() const { return bytes_to_device_; }
  int64_t bytes_to_host() const { return bytes_to_host_; }
  // Network inputs in the batch, without padding, and the padded passes' total.
  int inputs() const { return inputs_; }
  int padded_inputs() const { return padded_inputs_; }

 private:
  friend class BatchPath;
  absl::Status status_;
  std::optional<c10::Stream> stream_;
  bool restored_on_device_ = false;
  RestoreOptions restore_;
  std::vector<ItemGeometry> geometry_;
  std::vector<bool> want_probabilities_;
  std::vector<torch::Tensor> scores_;  // per item, CPU models only
  std::vector<ItemOutputs> outputs_;   // per item, device models: host copies
  int64_t bytes_to_device_ = 0;
  int64_t bytes_to_host_ = 0;
  int inputs_ = 0;
  int padded_inputs_ = 0;
};

class BatchPath {
 public:
  // model must outlive the BatchPath.
  BatchPath(SegmentationModel* model, BatchPathOptions options);

  // Enqueues a batch on `stream` (a stream of the model's device; nullopt: the current
  // one; ignored on a CPU). Items must have at least one input each. Never throws: a
  // failure is in the run's Wait().
  std::unique_ptr<BatchRun> Submit(const std::vector<const BatchItem*>& items,
                                   std::optional<c10::Stream> stream = std::nullopt);

  // Before serving: with choose_layout, times the whole path in NCHW and in channels-last at
  // the largest padded batch size (batch 1 on a CPU) and keeps the faster (unless one pass
  // takes over 2 s: then the layout stays); then runs every padded batch size once. Returns
  // a line for the log, e.g. "layout nchw (41.2 ms) over channels_last (47.9 ms) at batch
  // 32; warmed batch sizes 1,2,4,8,16,32".
  absl::StatusOr<std::string> WarmUp(bool choose_layout);

  const BatchPathOptions& options() const { return options_; }

 private:
  // The padded size of a pass of n inputs.
  int PaddedSize(int n) const;

  SegmentationModel* const model_;
  BatchPathOptions options_;
};

// `count` streams of `device` from LibTorch's pool (CUDA), for the batches one thread keeps
// in flight; empty on a CPU.
std::vector<c10::Stream> DeviceStreams(const torch::Device& device, int count);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_BATCH_BATCH_PATH_H_
