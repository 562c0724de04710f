#include "workers/worker/pipeline.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <opencv2/imgproc.hpp>

#include "common/image_codec.h"

namespace deeplab {
namespace {

// Resizes rgb into `out` (its size and type already set: cv::resize writes in place).
void ResizeInto(const cv::Mat& rgb, cv::Mat& out) {
  if (rgb.size() == out.size()) {
    rgb.copyTo(out);
    return;
  }
  // Area averaging when shrinking avoids aliasing; bilinear when enlarging.
  const bool shrinking = out.rows < rgb.rows || out.cols < rgb.cols;
  cv::resize(rgb, out, out.size(), 0, 0, shrinking ? cv::INTER_AREA : cv::INTER_LINEAR);
}

// A zero uint8 HWC tensor of height x width and, over its memory, the OpenCV view of it.
std::pair<torch::Tensor, cv::Mat> ZeroImage(int height, int width) {
  torch::Tensor t = torch::zeros({height, width, 3}, torch::kUInt8);
  return {t, cv::Mat(height, width, CV_8UC3, t.data_ptr<uint8_t>())};
}

}  // namespace

PipelineConfig MakePipelineConfig(const v1::ModelConfig& config) {
  PipelineConfig p;
  p.input_height = config.input().height();
  p.input_width = config.input().width();
  p.resize = config.input().resize();
  p.normalization = config.input().normalization();
  p.tile_stride = config.has_tiling() ? config.tiling().stride() : 0;
  p.align_corners = config.architecture().align_corners();
  p.num_classes = config.architecture().num_classes();
  p.outputs_probabilities = config.architecture().activation() != v1::ACTIVATION_NONE;
  p.class_names.assign(config.class_names().begin(), config.class_names().end());
  p.palette = ResolvePalette(config);
  return p;
}

InputNormalization InputNormalizationOf(v1::Normalization n) {
  switch (n) {
    case v1::NORMALIZATION_DIGIPATHAI:
      return InputNormalization::kDigiPathAi;
    case v1::NORMALIZATION_IMAGENET:
      return InputNormalization::kImageNet;
    case v1::NORMALIZATION_NONE:
      return InputNormalization::kNone;
    case v1::NORMALIZATION_MINUS_ONE_TO_ONE:
    case v1::NORMALIZATION_UNSPECIFIED:
    default:
      return InputNormalization::kMinusOneToOne;
  }
}

BatchPathOptions MakeBatchPathOptions(const PipelineConfig& config, int max_forward_batch) {
  BatchPathOptions options;
  options.input_height = config.input_height;
  options.input_width = config.input_width;
  options.normalization = InputNormalizationOf(config.normalization);
  options.restore.align_corners = config.align_corners;
  options.restore.scores_are_probabilities = config.outputs_probabilities;
  options.max_forward_batch = max_forward_batch;
  return options;
}

namespace {

// The letterboxed (or stretched) content size of an original height x width.
cv::Size ContentSize(int height, int width, const PipelineConfig& config) {
  const int h = config.input_height;
  const int w = config.input_width;
  if (config.resize == v1::RESIZE_MODE_STRETCH) return cv::Size(w, h);
  // Letterbox: the longest side to the input size, truncating as the reference does.
  const double ratio = std::min(static_cast<double>(h) / height, static_cast<double>(w) / width);
  return cv::Size(std::clamp(static_cast<int>(ratio * width), 1, w),
                  std::clamp(static_cast<int>(ratio * height), 1, h));
}

}  // namespace

MinimumSize MinimumDecodeSize(const PipelineConfig& config) {
  if (config.tile_stride > 0) return nullptr;
  return [config](int height, int width) { return ContentSize(height, width, config); };
}

PreparedImage Preprocess(const cv::Mat& rgb, const PipelineConfig& config) {
  DecodedImage image;
  image.rgb = rgb;
  image.height = rgb.rows;
  image.width = rgb.cols;
  return Preprocess(image, config);
}

PreparedImage Preprocess(const DecodedImage& image, const PipelineConfig& config) {
  const cv::Mat& rgb = image.rgb;
  PreparedImage out;
  out.rgb = rgb;
  ItemGeometry& g = out.item.geometry;
  g.height = image.height;
  g.width = image.width;
  const int h = config.input_height;
  const int w = config.input_width;
  if (config.tile_stride > 0) {
    // Patches of the input size at full resolution; images smaller than a patch are padded.
    auto [whole, view] = ZeroImage(std::max(h, rgb.rows), std::max(w, rgb.cols));
    rgb.copyTo(view(cv::Rect(0, 0, rgb.cols, rgb.rows)));
    for (int y : TileOrigins(rgb.rows, h, config.tile_stride)) {
      for (int x : TileOrigins(rgb.cols, w, config.tile_stride)) {
        g.tile_origins.emplace_back(y, x);
        // A view: the batch is assembled (copied) once, in the batch path.
        out.item.inputs.push_back({whole.slice(0, y, y + h).slice(1, x, x + w),
                                   std::min(h, rgb.rows - y), std::min(w, rgb.cols - x)});
      }
    }
    return out;
  }
  // From the original size, so a reduced decode gives the same geometry.
  const cv::Size content_size = ContentSize(image.height, image.width, config);
  g.content_height = content_size.height;
  g.content_width = content_size.width;
  // Resized straight into the top-left corner of the zero input.
  auto [input, view] = ZeroImage(h, w);
  cv::Mat content = view(cv::Rect(0, 0, g.content_width, g.content_height));
  ResizeInto(rgb, content);
  out.item.inputs.push_back({input, g.content_height, g.content_width});
  return out;
}

void EncodeOutputs(const PreparedImage& image, const ItemOutputs& outputs,
                   const PipelineConfig& config, const v1::OutputOptions& requested,
                   v1::SegmentationResult* result) {
  v1::OutputOptions options = requested;
  if (!options.label_png() && !options.label_raw() && !options.probabilities() &&
      !options.overlay_png() && !options.class_stats()) {
    options.set_label_png(true);
    options.set_class_stats(true);
  }
  const torch::Tensor label_tensor = outputs.labels.contiguous();
  const cv::Mat labels(static_cast<int>(label_tensor.size(0)), static_cast<int>(label_tensor.size(1)),
                       CV_8UC1, label_tensor.data_ptr<uint8_t>());
  result->set_height(labels.rows);
  result->set_width(labels.cols);
  result->set_cost(image.cost());
  if (options.label_png()) result->set_label_png(EncodePng(labels));
  if (options.label_raw()) {
    result->set_label_raw(std::string(reinterpret_cast<const char*>(labels.data),
                                      labels.total()));
  }
  if (options.probabilities() && outputs.probabilities.defined()) {
    // Already quantized on the model's device: one copy into the message.
    const torch::Tensor q = outputs.probabilities.contiguous();
    v1::Probabilities* p = result->mutable_probabilities();
    p->set_num_classes(static_cast<int>(q.size(0)));
    p->set_height(labels.rows);
    p->set_width(labels.cols);
    p->set_data(reinterpret_cast<const char*>(q.data_ptr<uint8_t>()), q.numel());
  }
  if (options.overlay_png()) {
    // Validated in [0, 1] before decoding (ValidateOutputOptions); 0 is the default.
    const float alpha = options.overlay_alpha() > 0 ? options.overlay_alpha() : 0.5f;
    cv::Mat colour(labels.rows, labels.cols, CV_8UC3);
    cv::Mat lut(1, 256, CV_8UC3, cv::Scalar(0, 0, 0));
    for (size_t i = 0; i < config.palette.size() && i < 256; ++i) {
      lut.at<cv::Vec3b>(0, static_cast<int>(i)) =
          cv::Vec3b(config.palette[i][0], config.palette[i][1], config.palette[i][2]);
    }
    cv::Mat labels3;
    cv::cvtColor(labels, labels3, cv::COLOR_GRAY2RGB);
    cv::LUT(labels3, lut, colour);
    cv::Mat overlay;
    cv::Mat base = image.rgb;
    if (base.size() != labels.size()) {  // decoded reduced (the engine avoids it for overlays)
      cv::resize(image.rgb, base, labels.size(), 0, 0, cv::INTER_LINEAR);
    }
    cv::addWeighted(base, 1.0 - alpha, colour, alpha, 0.0, overlay);
    result->set_overlay_png(EncodePng(overlay));
  }
  if (options.class_stats()) {
    int64_t counts[256] = {0};
    for (int y = 0; y < labels.rows; ++y) {
      const uint8_t* row = labels.ptr<uint8_t>(y);
      for (int x = 0; x < labels.cols; ++x) ++counts[row[x]];
    }
    const double total = static_cast<double>(labels.total());
    for (int c = 0; c < 256; ++c) {
      if (counts[c] == 0) continue;
      v1::ClassStat* stat = result->add_class_stats();
      stat->set_class_id(c);
      if (c < static_cast<int>(config.class_names.size())) stat->set_name(config.class_names[c]);
      stat->set_pixels(counts[c]);
      stat->set_fraction(counts[c] / total);
    }
  }
}

}  // namespace deeplab
