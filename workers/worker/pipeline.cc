#include "workers/worker/pipeline.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <opencv2/imgproc.hpp>

#include "common/image_codec.h"

namespace deeplab {
namespace {

// Normalises an RGB8 image into the top-left corner of a new zero HWC float tensor of
// height x width: one pass over the pixels, and the padding is zero after normalization,
// as keras-deeplab-v3-plus pads.
torch::Tensor NormalizeInto(const cv::Mat& rgb, int height, int width,
                            v1::Normalization normalization) {
  torch::Tensor out = torch::zeros({height, width, 3}, torch::kFloat32);
  cv::Mat whole(height, width, CV_32FC3, out.data_ptr<float>());
  cv::Mat f = whole(cv::Rect(0, 0, rgb.cols, rgb.rows));  // convertTo writes in place
  switch (normalization) {
    case v1::NORMALIZATION_DIGIPATHAI:
      rgb.convertTo(f, CV_32FC3, 1.0 / 128.0, -1.0);
      break;
    case v1::NORMALIZATION_IMAGENET: {
      rgb.convertTo(f, CV_32FC3, 1.0 / 255.0);
      cv::subtract(f, cv::Scalar(0.485, 0.456, 0.406), f);
      cv::divide(f, cv::Scalar(0.229, 0.224, 0.225), f);
      break;
    }
    case v1::NORMALIZATION_NONE:
      rgb.convertTo(f, CV_32FC3);
      break;
    case v1::NORMALIZATION_MINUS_ONE_TO_ONE:
    case v1::NORMALIZATION_UNSPECIFIED:
    default:
      rgb.convertTo(f, CV_32FC3, 1.0 / 127.5, -1.0);
  }
  return out;
}

cv::Mat ResizeImage(const cv::Mat& rgb, int height, int width) {
  if (rgb.rows == height && rgb.cols == width) return rgb;
  cv::Mat out;
  // Area averaging when shrinking avoids aliasing; bilinear when enlarging.
  const bool shrinking = height < rgb.rows || width < rgb.cols;
  cv::resize(rgb, out, cv::Size(width, height), 0, 0,
             shrinking ? cv::INTER_AREA : cv::INTER_LINEAR);
  return out;
}

// Bilinear resize of [C, h, w] planes to [C, height, width], in slices of channels so that
// at most ~64 MiB of floats are alive at once (a 12-megapixel photo has 21 channels).
template <typename Fn>
void ForEachResizedChannelBlock(const torch::Tensor& chw, int height, int width,
                                bool align_corners, Fn&& fn) {
  const int64_t channels = chw.size(0);
  const int64_t per_channel = static_cast<int64_t>(height) * width;
  const int64_t block = std::max<int64_t>(1, (int64_t{16} << 20) / std::max<int64_t>(per_channel, 1));
  for (int64_t c0 = 0; c0 < channels; c0 += block) {
    const int64_t c1 = std::min(channels, c0 + block);
    torch::Tensor slice = chw.slice(0, c0, c1).unsqueeze(0);
    torch::Tensor resized =
        (slice.size(2) == height && slice.size(3) == width)
            ? slice
            : torch::nn::functional::interpolate(
                  slice, torch::nn::functional::InterpolateFuncOptions()
                             .size(std::vector<int64_t>{height, width})
                             .mode(torch::kBilinear)
                             .align_corners(align_corners));
    fn(c0, resized.squeeze(0).contiguous());
  }
}

// Source pixels and weight of bilinear resizing along one axis, as PyTorch's
// upsample_bilinear2d computes them: src = (dst + 0.5) * in / out - 0.5 clamped at 0, or
// dst * (in - 1) / (out - 1) with align_corners.
struct AxisTaps {
  std::vector<int> lo, hi;
  std::vector<float> weight;  // of `hi`; `lo` gets 1 - weight
};

AxisTaps ComputeTaps(int in, int out, bool align_corners) {
  AxisTaps taps;
  taps.lo.resize(out);
  taps.hi.resize(out);
  taps.weight.resize(out);
  const float scale = align_corners ? (out > 1 ? static_cast<float>(in - 1) / (out - 1) : 0.0f)
                                    : static_cast<float>(in) / out;
  for (int i = 0; i < out; ++i) {
    float src = align_corners ? scale * i : std::max(scale * (i + 0.5f) - 0.5f, 0.0f);
    const int lo = std::min(static_cast<int>(src), in - 1);
    taps.lo[i] = lo;
    taps.hi[i] = std::min(lo + 1, in - 1);
    taps.weight[i] = src - lo;
  }
  return taps;
}

}  // namespace

cv::Mat UpsampleArgmax(const torch::Tensor& planes, int height, int width, bool align_corners) {
  const int64_t classes = planes.size(0);
  const int in_h = static_cast<int>(planes.size(1));
  const int in_w = static_cast<int>(planes.size(2));
  const torch::Tensor scores = planes.to(torch::kFloat32).contiguous();
  const float* data = scores.data_ptr<float>();
  const int64_t plane = static_cast<int64_t>(in_h) * in_w;
  // The argmax at the scores' own resolution (strict >: ties keep the lower class).
  cv::Mat coarse(in_h, in_w, CV_8UC1, cv::Scalar(0));
  {
    std::vector<float> best(data, data + plane);
    for (int64_t k = 1; k < classes; ++k) {
      const float* p = data + k * plane;
      uint8_t* l = coarse.ptr<uint8_t>();
      for (int64_t i = 0; i < plane; ++i) {
        if (p[i] > best[i]) {
          best[i] = p[i];
          l[i] = static_cast<uint8_t>(k);
        }
      }
    }
  }
  if (in_h == height && in_w == width) return coarse;
  const AxisTaps ys = ComputeTaps(in_h, height, align_corners);
  const AxisTaps xs = ComputeTaps(in_w, width, align_corners);
  cv::Mat labels(height, width, CV_8UC1);
  for (int y = 0; y < height; ++y) {
    const int y0 = ys.lo[y], y1 = ys.hi[y];
    const float wy1 = ys.weight[y], wy0 = 1.0f - wy1;
    const uint8_t* top = coarse.ptr<uint8_t>(y0);
    const uint8_t* bottom = coarse.ptr<uint8_t>(y1);
    uint8_t* out = labels.ptr<uint8_t>(y);
    for (int x = 0; x < width; ++x) {
      const int x0 = xs.lo[x], x1 = xs.hi[x];
      const uint8_t c = top[x0];
      if (top[x1] == c && bottom[x0] == c && bottom[x1] == c) {
        // Each of the four taps scores class c highest, so their convex combination does
        // too: no need to interpolate every class.
        out[x] = c;
        continue;
      }
      // A class boundary runs between the taps: interpolate every class, as PyTorch does.
      const float wx1 = xs.weight[x], wx0 = 1.0f - wx1;
      const int64_t i00 = static_cast<int64_t>(y0) * in_w + x0;
      const int64_t i01 = static_cast<int64_t>(y0) * in_w + x1;
      const int64_t i10 = static_cast<int64_t>(y1) * in_w + x0;
      const int64_t i11 = static_cast<int64_t>(y1) * in_w + x1;
      float best = -std::numeric_limits<float>::infinity();
      uint8_t label = 0;
      for (int64_t k = 0; k < classes; ++k) {
        const float* p = data + k * plane;
        const float v = wy0 * (wx0 * p[i00] + wx1 * p[i01]) + wy1 * (wx0 * p[i10] + wx1 * p[i11]);
        if (v > best) {
          best = v;
          label = static_cast<uint8_t>(k);
        }
      }
      out[x] = label;
    }
  }
  return labels;
}

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

PreparedImage Preprocess(const cv::Mat& rgb, const PipelineConfig& config) {
  PreparedImage out;
  out.rgb = rgb;
  const int h = config.input_height;
  const int w = config.input_width;
  if (config.tile_stride > 0) {
    // Patches of the input size at full resolution; images smaller than a patch are padded.
    const torch::Tensor whole =
        NormalizeInto(rgb, std::max(h, rgb.rows), std::max(w, rgb.cols), config.normalization);
    for (int y : TileOrigins(rgb.rows, h, config.tile_stride)) {
      for (int x : TileOrigins(rgb.cols, w, config.tile_stride)) {
        out.tile_origins.emplace_back(y, x);
        // A view: the batch is assembled (copied) once, in the engine.
        out.inputs.push_back(whole.slice(0, y, y + h).slice(1, x, x + w));
      }
    }
    return out;
  }
  if (config.resize == v1::RESIZE_MODE_STRETCH) {
    out.content_height = h;
    out.content_width = w;
  } else {
    // Letterbox: the longest side to the input size, truncating as the reference does.
    const double ratio = std::min(static_cast<double>(h) / rgb.rows,
                                  static_cast<double>(w) / rgb.cols);
    out.content_height = std::clamp(static_cast<int>(ratio * rgb.rows), 1, h);
    out.content_width = std::clamp(static_cast<int>(ratio * rgb.cols), 1, w);
  }
  cv::Mat resized = ResizeImage(rgb, out.content_height, out.content_width);
  out.inputs.push_back(NormalizeInto(resized, h, w, config.normalization));
  return out;
}

ItemScores ComputeLabels(const PreparedImage& image, const torch::Tensor& scores,
                         const PipelineConfig& config, bool want_probabilities) {
  torch::NoGradGuard no_grad;
  const int height = image.height();
  const int width = image.width();
  const int64_t classes = scores.size(1);
  // Scores at a resolution we can afford in full: per-class planes over the image.
  torch::Tensor planes;  // [C, h, w], cropped to the image content
  bool probabilities = config.outputs_probabilities;
  if (!image.tile_origins.empty()) {
    // Average probabilities where patches overlap (as DigiPathAI does), then crop.
    const int ph = std::max(height, config.input_height);
    const int pw = std::max(width, config.input_width);
    torch::Tensor sum = torch::zeros({classes, ph, pw}, torch::kFloat32);
    torch::Tensor count = torch::zeros({1, ph, pw}, torch::kFloat32);
    for (size_t i = 0; i < image.tile_origins.size(); ++i) {
      const auto [y, x] = image.tile_origins[i];
      torch::Tensor p = probabilities ? scores[i] : torch::softmax(scores[i], 0);
      sum.slice(1, y, y + config.input_height).slice(2, x, x + config.input_width).add_(p);
      count.slice(1, y, y + config.input_height).slice(2, x, x + config.input_width).add_(1.0);
    }
    planes = (sum / count).slice(1, 0, height).slice(2, 0, width);
    probabilities = true;
  } else {
    planes = scores[0].slice(1, 0, image.content_height).slice(2, 0, image.content_width);
  }
  planes = planes.contiguous();

  ItemScores out;
  // Labels are the argmax of the resized scores (logits unless the network or the tiling
  // produced probabilities), whether or not probabilities are asked for.
  out.labels = UpsampleArgmax(planes, height, width, config.align_corners);
  if (!want_probabilities) return out;
  out.probabilities.resize(classes);
  ForEachResizedChannelBlock(probabilities ? planes : torch::softmax(planes, 0), height, width,
                             config.align_corners, [&](int64_t c0, const torch::Tensor& block) {
                               for (int64_t k = 0; k < block.size(0); ++k) {
                                 out.probabilities[c0 + k] =
                                     cv::Mat(height, width, CV_32FC1, block[k].data_ptr<float>())
                                         .clone();
                               }
                             });
  return out;
}

void EncodeOutputs(const PreparedImage& image, const ItemScores& scores,
                   const PipelineConfig& config, const v1::OutputOptions& requested,
                   v1::SegmentationResult* result) {
  v1::OutputOptions options = requested;
  if (!options.label_png() && !options.label_raw() && !options.probabilities() &&
      !options.overlay_png() && !options.class_stats()) {
    options.set_label_png(true);
    options.set_class_stats(true);
  }
  const cv::Mat& labels = scores.labels;
  result->set_height(labels.rows);
  result->set_width(labels.cols);
  result->set_cost(image.cost());
  if (options.label_png()) result->set_label_png(EncodePng(labels));
  if (options.label_raw()) {
    result->set_label_raw(std::string(reinterpret_cast<const char*>(labels.data),
                                      labels.total()));
  }
  if (options.probabilities() && !scores.probabilities.empty()) {
    v1::Probabilities* p = result->mutable_probabilities();
    p->set_num_classes(static_cast<int>(scores.probabilities.size()));
    p->set_height(labels.rows);
    p->set_width(labels.cols);
    std::string* data = p->mutable_data();
    data->resize(scores.probabilities.size() * labels.total());
    for (size_t c = 0; c < scores.probabilities.size(); ++c) {
      cv::Mat q(labels.rows, labels.cols, CV_8UC1, data->data() + c * labels.total());
      scores.probabilities[c].convertTo(q, CV_8UC1, 255.0);  // saturating, rounded
    }
  }
  if (options.overlay_png()) {
    const float alpha = options.overlay_alpha() > 0 ? std::min(options.overlay_alpha(), 1.0f) : 0.5f;
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
    cv::addWeighted(image.rgb, 1.0 - alpha, colour, alpha, 0.0, overlay);
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
