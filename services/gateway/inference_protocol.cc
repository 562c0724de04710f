#include "services/gateway/inference_protocol.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace deeplab {
namespace oip {
namespace {

constexpr char kLabels[] = "labels";
constexpr char kProbabilities[] = "probabilities";
constexpr char kClassStats[] = "class_stats";
constexpr char kLabelPng[] = "label_png";
constexpr char kOverlayPng[] = "overlay_png";
const char* const kOutputNames[] = {kLabels, kProbabilities, kClassStats, kLabelPng, kOverlayPng};

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

inference::InferParameter StringParam(const std::string& value) {
  inference::InferParameter p;
  p.set_string_param(value);
  return p;
}

inference::InferParameter IntParam(int64_t value) {
  inference::InferParameter p;
  p.set_int64_param(value);
  return p;
}

absl::StatusOr<int64_t> IntParameter(const inference::InferParameter& p, const std::string& name) {
  switch (p.parameter_choice_case()) {
    case inference::InferParameter::kInt64Param:
      return p.int64_param();
    case inference::InferParameter::kUint64Param:
      if (p.uint64_param() > static_cast<uint64_t>(INT32_MAX)) break;
      return static_cast<int64_t>(p.uint64_param());
    default:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("parameter ", name, " must be an integer"));
}

absl::StatusOr<double> NumberParameter(const inference::InferParameter& p,
                                       const std::string& name) {
  switch (p.parameter_choice_case()) {
    case inference::InferParameter::kDoubleParam:
      return p.double_param();
    case inference::InferParameter::kInt64Param:
      return static_cast<double>(p.int64_param());
    case inference::InferParameter::kUint64Param:
      return static_cast<double>(p.uint64_param());
    default:
      return absl::InvalidArgumentError(absl::StrCat("parameter ", name, " must be a number"));
  }
}

inference::ModelMetadataResponse::TensorMetadata Tensor(const std::string& name,
                                                        const std::string& datatype,
                                                        std::vector<int64_t> shape) {
  inference::ModelMetadataResponse::TensorMetadata t;
  t.set_name(name);
  t.set_datatype(datatype);
  for (int64_t d : shape) t.add_shape(d);
  return t;
}

void AppendLe32(std::string* out, uint32_t v) {
  const char b[4] = {static_cast<char>(v & 0xff), static_cast<char>((v >> 8) & 0xff),
                     static_cast<char>((v >> 16) & 0xff), static_cast<char>((v >> 24) & 0xff)};
  out->append(b, 4);
}

}  // namespace

std::string ServerVersion() { return "0.1.0"; }

inference::ServerMetadataResponse ServerMetadata() {
  inference::ServerMetadataResponse r;
  r.set_name(kServerName);
  r.set_version(ServerVersion());
  r.add_extensions(kBinaryExtension);
  return r;
}

absl::StatusOr<v1::ModelInfo> FindModel(const v1::ListModelsResponse& models,
                                        const std::string& name, const std::string& version) {
  if (name.empty()) {
    return absl::InvalidArgumentError("the request names no model: set the model name");
  }
  for (const v1::ModelInfo& m : models.models()) {
    if (m.name() != name) continue;
    if (!version.empty() && version != kModelVersion) {
      return absl::NotFoundError(absl::StrCat("model '", QuotedName(name), "' has no version '",
                                              QuotedName(version), "'; its only version is 1"));
    }
    return m;
  }
  if (models.healthy_workers() == 0) {
    return absl::UnavailableError(absl::StrCat(
        "no worker is reachable yet, so model '", QuotedName(name),
        "' cannot be looked up; retry (model metadata lists the models once workers answer)"));
  }
  std::vector<std::string> names;
  for (const v1::ModelInfo& m : models.models()) names.push_back(m.name());
  return absl::NotFoundError(absl::StrCat("unknown model '", QuotedName(name),
                                          "'; available: ", absl::StrJoin(names, ", ")));
}

inference::ModelMetadataResponse ModelMetadata(const v1::ModelInfo& model) {
  inference::ModelMetadataResponse r;
  r.set_name(model.name());
  r.add_versions(kModelVersion);
  r.set_platform(kPlatform);
  *r.add_inputs() = Tensor("image", "BYTES", {-1});
  const int64_t c = model.num_classes();
  *r.add_outputs() = Tensor(kLabels, "UINT8", {-1, -1, -1});
  *r.add_outputs() = Tensor(kProbabilities, "UINT8", {-1, c, -1, -1});
  *r.add_outputs() = Tensor(kClassStats, "FP32", {-1, c});
  *r.add_outputs() = Tensor(kLabelPng, "BYTES", {-1});
  *r.add_outputs() = Tensor(kOverlayPng, "BYTES", {-1});
  auto& p = *r.mutable_parameters();
  p["description"] = StringParam(model.description());
  p["backbone"] = StringParam(model.backbone());
  p["num_classes"] = IntParam(model.num_classes());
  p["class_names"] = StringParam(absl::StrJoin(model.class_names(), ","));
  p["input_height"] = IntParam(model.input_height());
  p["input_width"] = IntParam(model.input_width());
  p["tile_stride"] = IntParam(model.tile_stride());
  p["max_batch_size"] = IntParam(model.max_batch_size());
  p["inputs"] = StringParam(
      "image: BYTES [N] encoded images (JPEG, PNG, BMP, TIFF, WebP), or UINT8 [N, H, W, 3] or "
      "[H, W, 3] RGB pixels");
  return r;
}

std::string EncodeBytesElements(const std::vector<const std::string*>& elements) {
  size_t total = 0;
  for (const std::string* e : elements) total += 4 + e->size();
  std::string out;
  out.reserve(total);
  for (const std::string* e : elements) {
    AppendLe32(&out, static_cast<uint32_t>(e->size()));
    out.append(*e);
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> DecodeBytesElements(const std::string& raw) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < raw.size()) {
    if (raw.size() - pos < 4) {
      return absl::InvalidArgumentError(
          "BYTES data ends inside an element's 4-byte length prefix");
    }
    const auto* b = reinterpret_cast<const unsigned char*>(raw.data() + pos);
    const uint64_t len = static_cast<uint64_t>(b[0]) | (static_cast<uint64_t>(b[1]) << 8) |
                         (static_cast<uint64_t>(b[2]) << 16) | (static_cast<uint64_t>(b[3]) << 24);
    pos += 4;
    if (len > raw.size() - pos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BYTES element ", out.size(), " says it has ", len, " bytes but only ",
          raw.size() - pos, " follow"));
    }
    out.emplace_back(raw, pos, len);
    pos += len;
  }
  return out;
}

absl::StatusOr<InferPlan> PlanInfer(const inference::ModelInferRequest& request,
                                    const v1::ModelInfo& model) {
  InferPlan plan;
  plan.num_classes = model.num_classes();
  if (request.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ModelInfer takes exactly one input tensor (the image: BYTES [N] or UINT8 [N, H, W, 3]), "
        "got ", request.inputs_size()));
  }
  const auto& input = request.inputs(0);
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(),
                     " entries for 1 input"));
  }
  if (raw && input.has_contents()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", QuotedName(input.name()), "' has both contents and raw_input_contents; use one"));
  }
  const auto& shape = input.shape();
  for (int64_t d : shape) {
    if (d < 1 || d > (int64_t{1} << 31)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", QuotedName(input.name()), "' has shape ", ShapeText(shape),
          "; every dimension must be at least 1"));
    }
  }

  // Per-image settings from the request's parameters.
  v1::OutputOptions outputs;
  int32_t priority = 0;
  for (const auto& [name, value] : request.parameters()) {
    if (name == "priority") {
      absl::StatusOr<int64_t> v = IntParameter(value, name);
      if (!v.ok()) return v.status();
      if (*v < 0 || *v > 1000000) {
        return absl::InvalidArgumentError("parameter priority must be in 0..1000000");
      }
      priority = static_cast<int32_t>(*v);
    } else if (name == "overlay_alpha") {
      absl::StatusOr<double> v = NumberParameter(value, name);
      if (!v.ok()) return v.status();
      if (!(*v >= 0 && *v <= 1)) {
        return absl::InvalidArgumentError("parameter overlay_alpha must be in 0..1");
      }
      outputs.set_overlay_alpha(static_cast<float>(*v));
    } else if (name == "timeout") {
      absl::StatusOr<int64_t> v = IntParameter(value, name);
      if (!v.ok()) return v.status();
      if (*v < 1) {
        return absl::InvalidArgumentError("parameter timeout (microseconds) must be positive");
      }
      plan.timeout = absl::Microseconds(*v);
    }
    // Other parameters (binary_data_output, timeout, ...) are the transport's or ignored, as
    // the protocol allows.
  }

  std::set<std::string> seen;
  for (const auto& o : request.outputs()) {
    bool known = false;
    for (const char* n : kOutputNames) known = known || o.name() == n;
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown output '", QuotedName(o.name()), "'; the outputs are ",
          absl::StrJoin(kOutputNames, ", ")));
    }
    if (!seen.insert(o.name()).second) {
      return absl::InvalidArgumentError(absl::StrCat("output '", o.name(), "' is asked twice"));
    }
    plan.outputs.push_back(o.name());
  }
  if (plan.outputs.empty()) plan.outputs = {kLabels, kClassStats};
  for (const std::string& n : plan.outputs) {
    if (n == kLabels) outputs.set_label_raw(true);
    if (n == kProbabilities) outputs.set_probabilities(true);
    if (n == kClassStats) outputs.set_class_stats(true);
    if (n == kLabelPng) outputs.set_label_png(true);
    if (n == kOverlayPng) outputs.set_overlay_png(true);
  }

  auto new_request = [&](size_t i) -> v1::SegmentRequest& {
    v1::SegmentRequest& r = plan.requests.emplace_back();
    r.set_model(model.name());
    *r.mutable_outputs() = outputs;
    r.set_priority(priority);
    if (!request.id().empty()) r.set_request_id(absl::StrCat(request.id(), "#", i));
    return r;
  };

  if (input.datatype() == "BYTES") {
    if (shape.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a BYTES input holds encoded images and has shape [N]; '", QuotedName(input.name()),
          "' has ", ShapeText(shape)));
    }
    const int64_t n = shape[0];
    if (raw) {
      absl::StatusOr<std::vector<std::string>> elements =
          DecodeBytesElements(request.raw_input_contents(0));
      if (!elements.ok()) return elements.status();
      if (static_cast<int64_t>(elements->size()) != n) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", QuotedName(input.name()), "' has shape ", ShapeText(shape), " but its data has ",
            elements->size(), " elements"));
      }
      for (size_t i = 0; i < elements->size(); ++i) {
        new_request(i).mutable_image()->set_encoded(std::move((*elements)[i]));
      }
    } else {
      const auto& data = input.contents().bytes_contents();
      if (data.size() != n) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", QuotedName(input.name()), "' has shape ", ShapeText(shape),
            " but contents.bytes_contents has ", data.size(), " elements"));
      }
      for (int i = 0; i < data.size(); ++i) new_request(i).mutable_image()->set_encoded(data[i]);
    }
    return plan;
  }

  if (input.datatype() == "UINT8") {
    if (shape.size() != 3 && shape.size() != 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a UINT8 input holds pixels and has shape [N, H, W, 3] or [H, W, 3]; '",
          QuotedName(input.name()), "' has ", ShapeText(shape)));
    }
    plan.batched = shape.size() == 4;
    const int64_t n = plan.batched ? shape[0] : 1;
    const int64_t h = shape[shape.size() - 3], w = shape[shape.size() - 2],
                  c = shape[shape.size() - 1];
    if (c != 1 && c != 3 && c != 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a UINT8 input's last dimension is its channels: 3 (RGB), 1 or 4; '",
          QuotedName(input.name()), "' has shape ", ShapeText(shape)));
    }
    if (h > (1 << 20) || w > (1 << 20) || n > (1 << 20) || h * w * c > (int64_t{1} << 31)) {
      return absl::InvalidArgumentError(absl::StrCat("input shape ", ShapeText(shape),
                                                     " is too large"));
    }
    const int64_t per_image = h * w * c;
    std::string pixels;
    if (raw) {
      const std::string& data = request.raw_input_contents(0);
      if (static_cast<int64_t>(data.size()) != n * per_image) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", QuotedName(input.name()), "' has shape ", ShapeText(shape), " (",
            n * per_image, " bytes) but raw_input_contents has ", data.size(), " bytes"));
      }
      for (int64_t i = 0; i < n; ++i) {
        v1::RawImage* img = new_request(i).mutable_image()->mutable_raw();
        img->set_height(static_cast<int32_t>(h));
        img->set_width(static_cast<int32_t>(w));
        img->set_channels(static_cast<int32_t>(c));
        img->set_data(data.substr(i * per_image, per_image));
      }
    } else {
      const auto& data = input.contents().uint_contents();
      if (static_cast<int64_t>(data.size()) != n * per_image) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", QuotedName(input.name()), "' has shape ", ShapeText(shape), " (",
            n * per_image, " values) but contents.uint_contents has ", data.size()));
      }
      for (int64_t i = 0; i < n; ++i) {
        std::string bytes(per_image, '\0');
        for (int64_t k = 0; k < per_image; ++k) {
          const uint32_t v = data[static_cast<int>(i * per_image + k)];
          if (v > 255) {
            return absl::InvalidArgumentError(absl::StrCat(
                "input '", QuotedName(input.name()), "' is UINT8 but holds the value ", v));
          }
          bytes[k] = static_cast<char>(v);
        }
        v1::RawImage* img = new_request(i).mutable_image()->mutable_raw();
        img->set_height(static_cast<int32_t>(h));
        img->set_width(static_cast<int32_t>(w));
        img->set_channels(static_cast<int32_t>(c));
        img->set_data(std::move(bytes));
      }
    }
    return plan;
  }

  return absl::InvalidArgumentError(absl::StrCat(
      "input '", QuotedName(input.name()), "' has datatype '", QuotedName(input.datatype()),
      "'; it must be BYTES (encoded images) or UINT8 (pixels)"));
}

absl::Status BuildInferResponse(const InferPlan& plan, const inference::ModelInferRequest& request,
                                const std::vector<v1::SegmentResponse>& responses,
                                inference::ModelInferResponse* out) {
  out->set_model_name(plan.requests.empty() ? request.model_name()
                                             : plan.requests.front().model());
  out->set_model_version(kModelVersion);
  out->set_id(request.id());
  const int64_t n = static_cast<int64_t>(responses.size());
  const int64_t c = plan.num_classes;
  auto same_size = [&](const char* what) -> absl::Status {
    for (const auto& r : responses) {
      if (r.result().height() != responses.front().result().height() ||
          r.result().width() != responses.front().result().width()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the images of this request differ in size, so they have no common ", what,
            " tensor; send them in separate requests, or ask for label_png"));
      }
    }
    return absl::OkStatus();
  };
  for (const std::string& name : plan.outputs) {
    auto* t = out->add_outputs();
    t->set_name(name);
    std::string* data = out->add_raw_output_contents();
    const int64_t h = responses.empty() ? 0 : responses.front().result().height();
    const int64_t w = responses.empty() ? 0 : responses.front().result().width();
    if (name == kLabels || name == kProbabilities) {
      const bool labels = name == kLabels;
      if (absl::Status s = same_size(labels ? "labels" : "probabilities"); !s.ok()) return s;
      t->set_datatype("UINT8");
      if (plan.batched) t->add_shape(n);
      if (!labels) t->add_shape(c);
      t->add_shape(h);
      t->add_shape(w);
      const size_t each = static_cast<size_t>((labels ? 1 : c) * h * w);
      data->reserve(each * responses.size());
      for (const auto& r : responses) {
        const std::string& bytes =
            labels ? r.result().label_raw() : r.result().probabilities().data();
        if (bytes.size() != each) {
          return absl::InternalError(absl::StrCat("a worker answered ", bytes.size(), " bytes of ",
                                                  name, " where ", each, " were expected"));
        }
        data->append(bytes);
      }
    } else if (name == kClassStats) {
      t->set_datatype("FP32");
      if (plan.batched) t->add_shape(n);
      t->add_shape(c);
      std::vector<float> fractions(static_cast<size_t>(n * c), 0.0f);
      for (int64_t i = 0; i < n; ++i) {
        for (const auto& s : responses[i].result().class_stats()) {
          if (s.class_id() >= 0 && s.class_id() < c) {
            fractions[i * c + s.class_id()] = static_cast<float>(s.fraction());
          }
        }
      }
      // Little-endian FP32, as the protocol's raw contents are (and as this machine stores).
      data->resize(fractions.size() * sizeof(float));
      if (!fractions.empty()) std::memcpy(data->data(), fractions.data(), data->size());
    } else {  // label_png, overlay_png
      t->set_datatype("BYTES");
      t->add_shape(n);
      std::vector<const std::string*> elements;
      for (const auto& r : responses) {
        elements.push_back(name == kLabelPng ? &r.result().label_png() : &r.result().overlay_png());
      }
      *data = EncodeBytesElements(elements);
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<InferCall> InferCall::Start(Gateway* gateway,
                                            const inference::ModelInferRequest& request,
                                            inference::ModelInferResponse* response,
                                            absl::Time deadline, Done done) {
  std::shared_ptr<InferCall> call(new InferCall(gateway, response, std::move(done)));
  call->Run(request, deadline);
  return call;
}

void InferCall::Run(const inference::ModelInferRequest& request, absl::Time deadline) {
  absl::StatusOr<v1::ModelInfo> model =
      FindModel(gateway_->ListModelsFor(request.model_name()), request.model_name(),
                request.model_version());
  if (!model.ok()) {
    done_(model.status());
    return;
  }
  absl::StatusOr<InferPlan> plan = PlanInfer(request, *model);
  if (!plan.ok()) {
    done_(plan.status());
    return;
  }
  plan_ = *std::move(plan);
  if (plan_.timeout != absl::InfiniteDuration()) {
    deadline = std::min(deadline, absl::Now() + plan_.timeout);
  }
  echo_.set_id(request.id());
  echo_.set_model_name(request.model_name());
  answers_.resize(plan_.requests.size());
  const size_t n = plan_.requests.size();
  {
    absl::MutexLock lock(&mu_);
    ids_.assign(n, 0);
    remaining_ = n;
  }
  std::shared_ptr<InferCall> self = shared_from_this();
  bool finish = false;
  for (size_t i = 0; i < n; ++i) {
    {
      absl::MutexLock lock(&mu_);
      if (stop_) {  // failed or cancelled: the rest are never submitted
        RecordFailureLocked(i, absl::CancelledError("the call was cancelled"));
        remaining_ -= n - i;
        finish = remaining_ == 0 && !done_called_;
        done_called_ = done_called_ || finish;
        break;
      }
    }
    const uint64_t id = gateway_->Submit(&plan_.requests[i], &answers_[i], deadline,
                                         [self, i](absl::Status s) { self->OnImageDone(i, s); });
    absl::MutexLock lock(&mu_);
    ids_[i] = id;
  }
  if (finish) Finish();
}

void InferCall::RecordFailureLocked(size_t index, absl::Status status) {
  // The failure reported is the lowest-index image's that is not a cancellation (images
  // cancelled because another failed are not the cause).
  const bool cancelled = status.code() == absl::StatusCode::kCancelled;
  const bool had_cancelled = failure_.code() == absl::StatusCode::kCancelled;
  const bool better = failure_.ok() || (had_cancelled && !cancelled) ||
                      (had_cancelled == cancelled && index < failed_index_);
  if (better) {
    failure_ = std::move(status);
    failed_index_ = index;
  }
}

void InferCall::OnImageDone(size_t index, absl::Status status) {
  std::vector<uint64_t> to_cancel;
  bool finish = false;
  {
    absl::MutexLock lock(&mu_);
    if (!status.ok()) {
      RecordFailureLocked(index, std::move(status));
      if (!stop_) {
        stop_ = true;
        for (size_t i = 0; i < ids_.size(); ++i) {
          if (i != index && ids_[i] != 0) to_cancel.push_back(ids_[i]);
        }
      }
    }
    finish = --remaining_ == 0 && !done_called_;
    done_called_ = done_called_ || finish;
  }
  for (uint64_t id : to_cancel) gateway_->Cancel(id);
  if (finish) Finish();
}

void InferCall::Cancel() {
  std::vector<uint64_t> to_cancel;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    for (uint64_t id : ids_) {
      if (id != 0) to_cancel.push_back(id);
    }
  }
  for (uint64_t id : to_cancel) gateway_->Cancel(id);
}

void InferCall::Finish() {
  absl::Status failure;
  size_t index;
  {
    absl::MutexLock lock(&mu_);
    failure = failure_;
    index = failed_index_;
  }
  if (!failure.ok()) {
    done_(absl::Status(failure.code(), absl::StrCat("image ", index, ": ", failure.message())));
    return;
  }
  done_(BuildInferResponse(plan_, echo_, answers_, response_));
  answers_.clear();
}

}  // namespace oip
}  // namespace deeplab
