#include "services/bench/bench_report.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace deeplab::bench {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

// Microsecond resolution is plenty for milliseconds and keeps the JSON readable.
double Round3(double v) { return std::round(v * 1000.0) / 1000.0; }

Value Number(double v) {
  Value value;
  value.set_number_value(Round3(v));
  return value;
}

Value Text(const std::string& s) {
  Value value;
  value.set_string_value(s);
  return value;
}

Value Object(Struct s) {
  Value value;
  *value.mutable_struct_value() = std::move(s);
  return value;
}

Value EmptyList() {
  Value value;
  value.mutable_list_value();  // prints [] rather than nothing when no element follows
  return value;
}

void Put(Struct* s, const std::string& key, Value value) {
  (*s->mutable_fields())[key] = std::move(value);
}

Value Latencies(const LatencySummary& l) {
  Struct s;
  Put(&s, "count", Number(static_cast<double>(l.count)));
  Put(&s, "mean", Number(l.mean_ms));
  Put(&s, "p50", Number(l.p50_ms));
  Put(&s, "p90", Number(l.p90_ms));
  Put(&s, "p99", Number(l.p99_ms));
  Put(&s, "max", Number(l.max_ms));
  return Object(std::move(s));
}

Value Errors(const std::map<std::string, int64_t>& errors) {
  Struct s;
  for (const auto& [code, count] : errors) Put(&s, code, Number(static_cast<double>(count)));
  return Object(std::move(s));
}

Struct Header(const RunInfo& info) {
  Struct s;
  Put(&s, "target", Text(info.target));
  if (!info.server.empty()) Put(&s, "server", Text(info.server));
  if (!info.models.empty()) Put(&s, "models", Text(info.models));
  Put(&s, "model", Text(info.model));
  Put(&s, "mode", Text(info.mode));
  if (!info.arrivals.empty()) Put(&s, "arrivals", Text(info.arrivals));
  if (!info.device.empty()) Put(&s, "device", Text(info.device));
  Put(&s, "images", Number(info.images));
  Value outputs = EmptyList();
  for (const std::string& o : info.outputs) {
    *outputs.mutable_list_value()->add_values() = Text(o);
  }
  Put(&s, "outputs", std::move(outputs));
  Put(&s, "warmup_seconds", Number(info.warmup_seconds));
  Put(&s, "duration_seconds", Number(info.duration_seconds));
  Put(&s, "requests", Number(static_cast<double>(info.requests)));
  return s;
}

std::string ToJson(const Struct& s) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  // A Struct holds only strings, numbers, lists and objects: printing cannot fail.
  (void)google::protobuf::util::MessageToJsonString(s, &json, options);
  return json;
}

}  // namespace

std::string FormatErrors(const std::map<std::string, int64_t>& errors, int64_t dropped) {
  std::vector<std::string> parts;
  for (const auto& [code, count] : errors) parts.push_back(absl::StrCat(code, ":", count));
  if (dropped > 0) parts.push_back(absl::StrCat("dropped:", dropped));
  return parts.empty() ? "-" : absl::StrJoin(parts, " ");
}

std::string LoadTableHeader(const std::string& load) {
  return absl::StrFormat("%11s %9s %9s %9s %9s %9s %6s %9s %10s %8s  %s\n",
                         load == "rate" ? "rate/s" : "concurrency", "images/s", "p50 ms", "p90 ms",
                         "p99 ms", "max ms", "batch", "queue ms", "compute ms", "ok", "errors");
}

std::string LoadTableRow(const StepResult& r) {
  return absl::StrFormat("%11g %9.2f %9.1f %9.1f %9.1f %9.1f %6.2f %9.1f %10.1f %8d  %s\n", r.level,
                         r.throughput, r.latency.p50_ms, r.latency.p90_ms, r.latency.p99_ms,
                         r.latency.max_ms, r.mean_batch_size, r.mean_queue_ms, r.mean_compute_ms,
                         r.ok, FormatErrors(r.errors, r.dropped));
}

std::string LoadJson(const RunInfo& info, const std::vector<StepResult>& steps) {
  Struct doc = Header(info);
  Value list = EmptyList();
  for (const StepResult& r : steps) {
    Struct s;
    Put(&s, r.load, Number(r.level));
    Put(&s, "ok", Number(static_cast<double>(r.ok)));
    Put(&s, "errors", Errors(r.errors));
    Put(&s, "error_count", Number(static_cast<double>(r.error_count())));
    Put(&s, "dropped", Number(static_cast<double>(r.dropped)));
    Put(&s, "seconds", Number(r.seconds));
    Put(&s, "throughput", Number(r.throughput));
    Put(&s, "latency_ms", Latencies(r.latency));
    Put(&s, "batch_size_mean", Number(r.mean_batch_size));
    Put(&s, "queue_ms_mean", Number(r.mean_queue_ms));
    Put(&s, "compute_ms_mean", Number(r.mean_compute_ms));
    *list.mutable_list_value()->add_values() = Object(std::move(s));
  }
  Put(&doc, "steps", std::move(list));
  return ToJson(doc);
}

std::string BatchTableHeader() {
  return absl::StrFormat("%5s %9s %8s %12s %12s %12s %8s  %s\n", "batch", "images/s", "batches",
                         "batch p50 ms", "batch p90 ms", "batch max ms", "ok", "errors");
}

std::string BatchTableRow(const BatchStepResult& r) {
  return absl::StrFormat("%5d %9.2f %8d %12.1f %12.1f %12.1f %8d  %s\n", r.batch_size, r.throughput,
                         r.batches, r.batch_latency.p50_ms, r.batch_latency.p90_ms,
                         r.batch_latency.max_ms, r.images_ok, FormatErrors(r.errors, 0));
}

std::string BatchTableFooter(const std::vector<BatchStepResult>& steps) {
  const int best = BestBatchStep(steps);
  if (best < 0) return "no batch size completed an image\n";
  const BatchStepResult& b = steps[best];
  const StageSeconds& st = b.mean_stage;
  const double total = st.decode + st.preprocess + st.forward + st.postprocess + st.encode;
  auto part = [total](const char* name, double ms) {
    return absl::StrFormat("%s %.2f ms (%.0f%%)", name, ms, total > 0 ? 100.0 * ms / total : 0.0);
  };
  return absl::StrCat(
      absl::StrFormat("ceiling: %.2f images/s at batch size %d\n", b.throughput, b.batch_size),
      "per image at that batch size: ",
      absl::StrJoin({part("decode", st.decode), part("preprocess", st.preprocess),
                     part("forward", st.forward), part("postprocess", st.postprocess),
                     part("encode", st.encode)},
                    ", "),
      "\n");
}

std::string BatchJson(const RunInfo& info, const std::vector<BatchStepResult>& steps) {
  Struct doc = Header(info);
  Value list = EmptyList();
  for (const BatchStepResult& r : steps) {
    Struct s;
    Put(&s, "batch_size", Number(r.batch_size));
    Put(&s, "batches", Number(static_cast<double>(r.batches)));
    Put(&s, "images_ok", Number(static_cast<double>(r.images_ok)));
    Put(&s, "errors", Errors(r.errors));
    Put(&s, "seconds", Number(r.seconds));
    Put(&s, "throughput", Number(r.throughput));
    Put(&s, "batch_latency_ms", Latencies(r.batch_latency));
    Struct stages;
    Put(&stages, "decode", Number(r.mean_stage.decode));
    Put(&stages, "preprocess", Number(r.mean_stage.preprocess));
    Put(&stages, "forward", Number(r.mean_stage.forward));
    Put(&stages, "postprocess", Number(r.mean_stage.postprocess));
    Put(&stages, "encode", Number(r.mean_stage.encode));
    Put(&s, "stage_ms_per_image", Object(std::move(stages)));
    *list.mutable_list_value()->add_values() = Object(std::move(s));
  }
  Put(&doc, "steps", std::move(list));
  const int best = BestBatchStep(steps);
  Value ceiling;
  if (best < 0) {
    ceiling.set_null_value(google::protobuf::NULL_VALUE);
  } else {
    Struct s;
    Put(&s, "batch_size", Number(steps[best].batch_size));
    Put(&s, "throughput", Number(steps[best].throughput));
    ceiling = Object(std::move(s));
  }
  Put(&doc, "ceiling", std::move(ceiling));
  return ToJson(doc);
}

}  // namespace deeplab::bench
