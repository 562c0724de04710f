#include "workers/batch/batch_path.h"

#include <ATen/Context.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace deeplab {
namespace {

namespace F = torch::nn::functional;

// Source pixels and weight of bilinear resizing along one axis, as PyTorch's
// upsample_bilinear2d computes them: src = (dst + 0.5) * in / out - 0.5 clamped at 0, or
// dst * (in - 1) / (out - 1) with align_corners.
struct AxisTaps {
  std::vector<int64_t> lo, hi;
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

// Bilinear resize of [C, h, w] planes to [C, height, width], quantized to uint8
// (round(p * 255), saturated), in slices of channels so that at most ~64 MiB of floats are
// alive at once (a 12-megapixel photo has 21 channels).
torch::Tensor QuantizedResize(const torch::Tensor& chw, int height, int width,
                              bool align_corners) {
  const int64_t channels = chw.size(0);
  torch::Tensor out = torch::empty({channels, height, width},
                                   torch::TensorOptions().dtype(torch::kUInt8).device(chw.device()));
  const int64_t per_channel = static_cast<int64_t>(height) * width;
  const int64_t block = std::max<int64_t>(1, (int64_t{16} << 20) / std::max<int64_t>(per_channel, 1));
  for (int64_t c0 = 0; c0 < channels; c0 += block) {
    const int64_t c1 = std::min(channels, c0 + block);
    torch::Tensor slice = chw.slice(0, c0, c1).unsqueeze(0);
    torch::Tensor resized =
        (slice.size(2) == height && slice.size(3) == width)
            ? slice
            : F::interpolate(slice, F::InterpolateFuncOptions()
                                        .size(std::vector<int64_t>{height, width})
                                        .mode(torch::kBilinear)
                                        .align_corners(align_corners));
    out.slice(0, c0, c1).copy_(resized.squeeze(0).mul(255.0).round_().clamp_(0, 255));
  }
  return out;
}

}  // namespace

torch::Tensor NormalizeBatch(const torch::Tensor& pixels, const std::vector<int>& valid_heights,
                             const std::vector<int>& valid_widths, InputNormalization normalization,
                             torch::ScalarType dtype, bool channels_last) {
  // NHWC uint8 seen as NCHW: a channels-last view, which the float conversion keeps.
  torch::Tensor x = pixels.permute({0, 3, 1, 2}).to(torch::kFloat32);
  switch (normalization) {
    case InputNormalization::kMinusOneToOne:
      x.div_(127.5).sub_(1.0);
      break;
    case InputNormalization::kDigiPathAi:
      x.sub_(128.0).div_(128.0);
      break;
    case InputNormalization::kImageNet: {
      // Per-channel scalars: a tensor of means would be a blocking copy to the device.
      const double mean[3] = {0.485, 0.456, 0.406};
      const double std[3] = {0.229, 0.224, 0.225};
      x.div_(255.0);
      for (int c = 0; c < 3; ++c) x.select(1, c).sub_(mean[c]).div_(std[c]);
      break;
    }
    case InputNormalization::kNone:
      break;
  }
  const int64_t height = x.size(2), width = x.size(3);
  for (int64_t i = 0; i < x.size(0); ++i) {
    const int vh = i < static_cast<int64_t>(valid_heights.size()) ? valid_heights[i] : height;
    const int vw = i < static_cast<int64_t>(valid_widths.size()) ? valid_widths[i] : width;
    if (vh < height) x[i].slice(1, vh, height).zero_();
    if (vw < width) x[i].slice(1, 0, vh).slice(2, vw, width).zero_();
  }
  return x.to(dtype).contiguous(channels_last ? torch::MemoryFormat::ChannelsLast
                                              : torch::MemoryFormat::Contiguous);
}

torch::Tensor UpsampleArgmax(const torch::Tensor& planes, int height, int width, bool align_corners) {
  const int64_t classes = planes.size(0);
  const int in_h = static_cast<int>(planes.size(1));
  const int in_w = static_cast<int>(planes.size(2));
  const torch::Tensor scores = planes.to(torch::kCPU, torch::kFloat32).contiguous();
  const float* data = scores.data_ptr<float>();
  const int64_t plane = static_cast<int64_t>(in_h) * in_w;
  // The argmax at the scores' own resolution (strict >: ties keep the lower class).
  torch::Tensor coarse_t = torch::zeros({in_h, in_w}, torch::kUInt8);
  uint8_t* coarse = coarse_t.data_ptr<uint8_t>();
  {
    std::vector<float> best(data, data + plane);
    for (int64_t k = 1; k < classes; ++k) {
      const float* p = data + k * plane;
      for (int64_t i = 0; i < plane; ++i) {
        if (p[i] > best[i]) {
          best[i] = p[i];
          coarse[i] = static_cast<uint8_t>(k);
        }
      }
    }
  }
  if (in_h == height && in_w == width) return coarse_t;
  const AxisTaps ys = ComputeTaps(in_h, height, align_corners);
  const AxisTaps xs = ComputeTaps(in_w, width, align_corners);
  torch::Tensor labels = torch::empty({height, width}, torch::kUInt8);
  uint8_t* out_data = labels.data_ptr<uint8_t>();
  for (int y = 0; y < height; ++y) {
    const int64_t y0 = ys.lo[y], y1 = ys.hi[y];
    const float wy1 = ys.weight[y], wy0 = 1.0f - wy1;
    const uint8_t* top = coarse + y0 * in_w;
    const uint8_t* bottom = coarse + y1 * in_w;
    uint8_t* out = out_data + static_cast<int64_t>(y) * width;
    for (int x = 0; x < width; ++x) {
      const int64_t x0 = xs.lo[x], x1 = xs.hi[x];
      const uint8_t c = top[x0];
      if (top[x1] == c && bottom[x0] == c && bottom[x1] == c) {
        // Each of the four taps scores class c highest, so their convex combination does
        // too: no need to interpolate every class.
        out[x] = c;
        continue;
      }
      // A class boundary runs between the taps: interpolate every class, as PyTorch does.
      const float wx1 = xs.weight[x], wx0 = 1.0f - wx1;
      const int64_t i00 = y0 * in_w + x0;
      const int64_t i01 = y0 * in_w + x1;
      const int64_t i10 = y1 * in_w + x0;
      const int64_t i11 = y1 * in_w + x1;
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

torch::Tensor UpsampleArgmaxTensorOps(const torch::Tensor& planes, int height, int width,
                                      bool align_corners) {
  const torch::Tensor scores = planes.to(torch::kFloat32).contiguous();
  const torch::Device device = scores.device();
  const int64_t classes = scores.size(0);
  const int in_h = static_cast<int>(scores.size(1));
  const int in_w = static_cast<int>(scores.size(2));
  const torch::Tensor coarse = scores.argmax(0).to(torch::kUInt8);
  if (in_h == height && in_w == width) return coarse;
  const AxisTaps ys = ComputeTaps(in_h, height, align_corners);
  const AxisTaps xs = ComputeTaps(in_w, width, align_corners);
  // Taps and weights computed on the host exactly as UpsampleArgmax computes them, copied
  // through pinned memory: a copy from pageable memory would wait for the whole stream.
  auto to_device = [&](const auto& v, torch::ScalarType type) {
    const torch::Tensor source =
        torch::from_blob(const_cast<void*>(static_cast<const void*>(v.data())),
                         {static_cast<int64_t>(v.size())}, type);
    if (device.is_cpu()) return source.clone();
    torch::Tensor staged =
        torch::empty(source.sizes(), torch::TensorOptions().dtype(type).pinned_memory(true));
    staged.copy_(source);
    return staged.to(device, /*non_blocking=*/true);
  };
  const torch::Tensor x0 = to_device(xs.lo, torch::kInt64);
  const torch::Tensor x1 = to_device(xs.hi, torch::kInt64);
  const torch::Tensor wx1 = to_device(xs.weight, torch::kFloat32);
  const torch::Tensor wx0 = 1.0f - wx1;
  const torch::Tensor y0_all = to_device(ys.lo, torch::kInt64);
  const torch::Tensor y1_all = to_device(ys.hi, torch::kInt64);
  const torch::Tensor wy1_all = to_device(ys.weight, torch::kFloat32);
  const torch::Tensor wy0_all = 1.0f - wy1_all;
  // Columns of the coarse labels at the output's x taps, for the agreement test.
  const torch::Tensor coarse_x0 = coarse.index_select(1, x0);
  const torch::Tensor coarse_x1 = coarse.index_select(1, x1);

  torch::Tensor labels =
      torch::empty({height, width}, torch::TensorOptions().dtype(torch::kUInt8).device(device));
  // Rows per strip: about 16 M floats per temporary.
  const int64_t rows =
      std::max<int64_t>(1, (int64_t{16} << 20) / std::max<int64_t>(classes * width, 1));
  for (int64_t r0 = 0; r0 < height; r0 += rows) {
    const int64_t r1 = std::min<int64_t>(height, r0 + rows);
    const torch::Tensor y0 = y0_all.slice(0, r0, r1);
    const torch::Tensor y1 = y1_all.slice(0, r0, r1);
    const torch::Tensor wy0 = wy0_all.slice(0, r0, r1).view({1, -1, 1});
    const torch::Tensor wy1 = wy1_all.slice(0, r0, r1).view({1, -1, 1});
    // Along x first, then y: wy0 * (wx0 * p00 + wx1 * p01) + wy1 * (wx0 * p10 + wx1 * p11),
    // each product and sum rounded as UpsampleArgmax rounds it.
    auto along_x = [&](const torch::Tensor& source_rows) {
      return source_rows.index_select(2, x0) * wx0 + source_rows.index_select(2, x1) * wx1;
    };
    const torch::Tensor top = along_x(scores.index_select(1, y0));
    const torch::Tensor bottom = along_x(scores.index_select(1, y1));
    const torch::Tensor full = (top * wy0 + bottom * wy1).argmax(0).to(torch::kUInt8);
    const torch::Tensor c00 = coarse_x0.index_select(0, y0);
    const torch::Tensor c01 = coarse_x1.index_select(0, y0);
    const torch::Tensor c10 = coarse_x0.index_select(0, y1);
    const torch::Tensor c11 = coarse_x1.index_select(0, y1);
    const torch::Tensor agree = c00.eq(c01).logical_and_(c00.eq(c10)).logical_and_(c00.eq(c11));
    labels.slice(0, r0, r1).copy_(torch::where(agree, c00, full));
  }
  return labels;
}

ItemOutputs RestoreItem(const torch::Tensor& scores, const ItemGeometry& g,
                        const RestoreOptions& options, bool want_probabilities) {
  torch::NoGradGuard no_grad;
  const int64_t classes = scores.size(1);
  const auto float_options = torch::TensorOptions().dtype(torch::kFloat32).device(scores.device());
  torch::Tensor planes;  // [C, h, w] float32, cropped to the image content
  bool probabilities = options.scores_are_probabilities;
  if (!g.tile_origins.empty()) {
    const int ph = std::max(g.height, options.input_height);
    const int pw = std::max(g.width, options.input_width);
    torch::Tensor sum = torch::zeros({classes, ph, pw}, float_options);
    torch::Tensor count = torch::zeros({1, ph, pw}, float_options);
    for (size_t i = 0; i < g.tile_origins.size(); ++i) {
      const auto [y, x] = g.tile_origins[i];
      const torch::Tensor tile = scores[static_cast<int64_t>(i)].to(torch::kFloat32);
      sum.slice(1, y, y + options.input_height)
          .slice(2, x, x + options.input_width)
          .add_(probabilities ? tile : torch::softmax(tile, 0));
      count.slice(1, y, y + options.input_height).slice(2, x, x + options.input_width).add_(1.0);
    }
    planes = (sum / count).slice(1, 0, g.height).slice(2, 0, g.width);
    probabilities = true;
  } else {
    planes = scores[0].slice(1, 0, g.content_height).slice(2, 0, g.content_width).to(torch::kFloat32);
  }
  planes = planes.contiguous();
  ItemOutputs out;
  // Labels are the argmax of the resized scores (logits unless the network or the tiling
  // produced probabilities), whether or not probabilities are asked for.
  const bool coarse_path = options.label_path == LabelPath::kByDevice && planes.device().is_cpu();
  out.labels = coarse_path ? UpsampleArgmax(planes, g.height, g.width, options.align_corners)
                             : UpsampleArgmaxTensorOps(planes, g.height, g.width,
                                                       options.align_corners);
  if (want_probabilities) {
    out.probabilities = QuantizedResize(probabilities ? planes : torch::softmax(planes, 0),
                                        g.height, g.width, options.align_corners);
  }
  return out;
}

std::vector<int> DefaultPaddedBatchSizes(const torch::Device& device, int max_forward_batch) {
  std::vector<int> sizes;
  if (device.is_cpu()) return sizes;
  for (int n = 1; n < max_forward_batch; n *= 2) sizes.push_back(n);
  sizes.push_back(max_forward_batch);
  return sizes;
}

std::vector<c10::Stream> DeviceStreams(const torch::Device& device, int count) {
  std::vector<c10::Stream> streams;
  if (device.is_cpu()) return streams;
  c10::impl::VirtualGuardImpl impl(device.type());
  const torch::Device exact(device.type(), device.has_index() ? device.index() : impl.getDevice().index());
  for (int i = 0; i < count; ++i) streams.push_back(impl.getStreamFromGlobalPool(exact));
  return streams;
}

absl::Status BatchRun::Wait() {
  if (status_.ok() && stream_.has_value()) {
    try {
      stream_->synchronize();
    } catch (const c10::Error& e) {
      status_ = absl::InternalError(absl::StrCat("device batch failed: ", e.what_without_backtrace()));
    }
  }
  return status_;
}

ItemOutputs BatchRun::TakeOutputs(int i) {
  if (restored_on_device_) return std::move(outputs_[i]);
  ItemOutputs out = RestoreItem(scores_[i], geometry_[i], restore_, want_probabilities_[i]);
  scores_[i] = torch::Tensor();
  return out;
}

BatchPath::BatchPath(SegmentationModel* model, BatchPathOptions options)
    : model_(model), options_(std::move(options)) {
  options_.restore.input_height = options_.input_height;
  options_.restore.input_width = options_.input_width;
  options_.max_forward_batch = std::max(1, options_.max_forward_batch);
  std::sort(options_.padded_batch_sizes.begin(), options_.padded_batch_sizes.end());
  if (model_->device().is_cuda()) {
    // The shapes are few and fixed (padded batch sizes at one input size): let cuDNN time
    // its algorithms for each once, at warm-up.
    at::globalContext().setBenchmarkCuDNN(true);
  }
}

int BatchPath::PaddedSize(int n) const {
  for (int size : options_.padded_batch_sizes) {
    if (size >= n) return size;
  }
  return n;
}

std::unique_ptr<BatchRun> BatchPath::Submit(const std::vector<const BatchItem*>& items,
                                            std::optional<c10::Stream> stream) {
  auto run = std::make_unique<BatchRun>();
  run->restore_ = options_.restore;
  const torch::Device device = model_->device();
  const bool on_cpu = device.is_cpu();
  if (!on_cpu) {
    // Without a stream given, the device's current one: Wait must know what to wait for.
    run->stream_ = stream.has_value() ? *stream
                                      : c10::impl::VirtualGuardImpl(device.type()).getStream(device);
  }
  std::optional<c10::StreamGuard> guard;
  if (run->stream_.has_value()) guard.emplace(*run->stream_);
  const int h = options_.input_height, w = options_.input_width;
  try {
    torch::InferenceMode inference;
    std::vector<int> valid_h, valid_w;
    for (const BatchItem* item : items) {
      run->geometry_.push_back(item->geometry);
      run->want_probabilities_.push_back(item->want_probabilities);
      for (const BatchInput& in : item->inputs) {
        valid_h.push_back(in.valid_height);
        valid_w.push_back(in.valid_width);
      }
    }
    const int total = static_cast<int>(valid_h.size());
    run->inputs_ = total;
    // The batch as uint8, assembled once on the host (pinned, so the copy is asynchronous).
    torch::Tensor host = torch::empty(
        {total, h, w, 3}, torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(!on_cpu));
    int k = 0;
    for (const BatchItem* item : items) {
      for (const BatchInput& in : item->inputs) host[k++].copy_(in.pixels);
    }
    run->bytes_to_device_ = host.numel();
    const torch::Tensor pixels = on_cpu ? host : host.to(device, /*non_blocking=*/true);
    std::vector<torch::Tensor> outputs;
    for (int begin = 0; begin < total; begin += options_.max_forward_batch) {
      const int end = std::min(total, begin + options_.max_forward_batch);
      const int n = end - begin;
      const int padded = PaddedSize(n);
      run->padded_inputs_ += padded;
      torch::Tensor chunk = pixels.slice(0, begin, end);
      std::vector<int> chunk_h(valid_h.begin() + begin, valid_h.begin() + end);
      std::vector<int> chunk_w(valid_w.begin() + begin, valid_w.begin() + end);
      if (padded > n) {
        chunk = torch::cat({chunk, torch::zeros({padded - n, h, w, 3}, chunk.options())});
      }
      torch::Tensor input = NormalizeBatch(chunk, chunk_h, chunk_w, options_.normalization,
                                           model_->dtype(), model_->channels_last());
      absl::StatusOr<torch::Tensor> out = model_->Run(input);
      if (!out.ok()) {
        run->status_ = out.status();
        return run;
      }
      outputs.push_back(out->slice(0, 0, n));
    }
    const torch::Tensor scores = outputs.size() == 1 ? outputs[0] : torch::cat(outputs, 0);
    int64_t offset = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const int cost = items[i]->geometry.cost();
      const torch::Tensor item_scores = scores.slice(0, offset, offset + cost);
      offset += cost;
      const ItemGeometry& g = items[i]->geometry;
      const int64_t label_bytes = static_cast<int64_t>(g.height) * g.width;
      run->bytes_to_host_ +=
          label_bytes * (1 + (items[i]->want_probabilities ? model_->num_classes() : 0));
      if (on_cpu) {
        run->scores_.push_back(item_scores);
        continue;
      }
      ItemOutputs device_out =
          RestoreItem(item_scores, g, options_.restore, items[i]->want_probabilities);
      ItemOutputs host_out;
      auto to_host = [](const torch::Tensor& t) {
        torch::Tensor copy = torch::empty(
            t.sizes(), torch::TensorOptions().dtype(t.scalar_type()).pinned_memory(true));
        copy.copy_(t, /*non_blocking=*/true);
        return copy;
      };
      host_out.labels = to_host(device_out.labels);
      if (device_out.probabilities.defined()) {
        host_out.probabilities = to_host(device_out.probabilities);
      }
      run->outputs_.push_back(std::move(host_out));
    }
    run->restored_on_device_ = !on_cpu;
  } catch (const c10::Error& e) {
    run->status_ = absl::InternalError(absl::StrCat("batch failed on ", device.str(), ": ",
                                                    e.what_without_backtrace()));
  }
  return run;
}

absl::StatusOr<std::string> BatchPath::WarmUp(bool choose_layout) {
  const int h = options_.input_height, w = options_.input_width;
  std::vector<int> sizes = options_.padded_batch_sizes;
  if (sizes.empty()) sizes.push_back(1);
  // A batch of `n` grey inputs through the whole path.
  auto run_batch = [&](int n) -> absl::Status {
    BatchItem item;
    item.geometry.height = h;
    item.geometry.width = w;
    item.geometry.content_height = h;
    item.geometry.content_width = w;
    item.inputs.push_back({torch::full({h, w, 3}, 128, torch::kUInt8), h, w});
    std::vector<const BatchItem*> items(n, &item);
    std::unique_ptr<BatchRun> run = Submit(items);
    if (absl::Status s = run->Wait(); !s.ok()) return s;
    for (int i = 0; i < n; ++i) run->TakeOutputs(i);
    return absl::OkStatus();
  };
  auto seconds_of = [&](int n, double* seconds) -> absl::Status {
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = run_batch(n);
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return s;
  };
  std::string line;
  if (choose_layout) {
    const int n = sizes.back();
    const bool initial = model_->channels_last();
    auto name = [](bool channels_last) { return channels_last ? "channels_last" : "nchw"; };
    // The first pass allocates (and lets cuDNN pick its algorithms): untimed, but it says
    // what timing would cost. A CPU pass over a large model at one intra-op thread can take
    // 15 s: beyond kMaxTimedPassSeconds the layout stays as it is, and the log says so.
    constexpr double kMaxTimedPassSeconds = 2.0;
    double first = 0;
    if (absl::Status s = seconds_of(n, &first); !s.ok()) return s;
    if (first > kMaxTimedPassSeconds) {
      line = absl::StrFormat("layout %s, not timed (a pass took %.1f s; --layout chooses); ",
                             name(initial), first);
    } else {
      // One timed pass on a CPU, the fastest of three on a device.
      const int reps = model_->device().is_cpu() ? 1 : 3;
      double best[2] = {std::numeric_limits<double>::infinity(),
                        std::numeric_limits<double>::infinity()};
      for (bool channels_last : {initial, !initial}) {
        if (channels_last != initial) {
          model_->SetChannelsLast(channels_last);
          double untimed = 0;
          if (absl::Status s = seconds_of(n, &untimed); !s.ok()) return s;
        }
        for (int rep = 0; rep < reps; ++rep) {
          double t = 0;
          if (absl::Status s = seconds_of(n, &t); !s.ok()) return s;
          best[channels_last] = std::min(best[channels_last], t);
        }
      }
      const bool channels_last = best[1] < best[0];
      model_->SetChannelsLast(channels_last);
      line = absl::StrFormat("layout %s (%.1f ms) over %s (%.1f ms) at batch %d; ",
                             name(channels_last), 1e3 * best[channels_last], name(!channels_last),
                             1e3 * best[!channels_last], n);
    }
  }
  for (int n : sizes) {
    if (absl::Status s = run_batch(n); !s.ok()) return s;
  }
  return absl::StrCat(line, "warmed batch sizes ", absl::StrJoin(sizes, ","));
}

}  // namespace deeplab
