// deeplab-bench's statistics and report, on timestamps made up by the test (no clocks).
#include "services/bench/bench_stats.h"

#include <gmock/gmock.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "services/bench/bench_inputs.h"
#include "services/bench/bench_report.h"

namespace deeplab::bench {
namespace {

using ::testing::HasSubstr;
using Phase = MeasurementWindow::Phase;

const absl::Time kStart = absl::FromUnixSeconds(1'000'000);

absl::Time At(double seconds) { return kStart + absl::Seconds(seconds); }

Sample Ok(double sent, double answered, int batch_size = 1, double queue = 0, double compute = 0) {
  Sample s{At(sent), At(answered), absl::StatusCode::kOk};
  s.batch_size = batch_size;
  s.queue_seconds = queue;
  s.compute_seconds = compute;
  return s;
}

Sample Failed(double sent, double answered, absl::StatusCode code) {
  return Sample{At(sent), At(answered), code};
}

google::protobuf::Struct ParseJson(const std::string& json) {
  google::protobuf::Struct doc;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(json, &doc).ok()) << json;
  return doc;
}

double Field(const google::protobuf::Struct& s, const std::string& key) {
  return s.fields().at(key).number_value();
}

TEST(PercentileTest, NearestRankIsAlwaysAnObservedValue) {
  std::vector<double> hundred;
  for (int i = 1; i <= 100; ++i) hundred.push_back(i);
  EXPECT_EQ(Percentile(hundred, 50), 50);
  EXPECT_EQ(Percentile(hundred, 90), 90);
  EXPECT_EQ(Percentile(hundred, 99), 99);
  EXPECT_EQ(Percentile(hundred, 100), 100);

  const std::vector<double> three = {10, 20, 30};
  EXPECT_EQ(Percentile(three, 50), 20);  // rank ceil(1.5) = 2
  EXPECT_EQ(Percentile(three, 90), 30);  // rank ceil(2.7) = 3
  EXPECT_EQ(Percentile(three, 1), 10);   // rank at least 1
  EXPECT_EQ(Percentile({7}, 99), 7);
}

TEST(PercentileTest, SummarizeSortsAndHandlesEmpty) {
  const LatencySummary s = Summarize({30, 10, 20, 40});
  EXPECT_EQ(s.count, 4);
  EXPECT_DOUBLE_EQ(s.mean_ms, 25);
  EXPECT_EQ(s.p50_ms, 20);
  EXPECT_EQ(s.p90_ms, 40);
  EXPECT_EQ(s.max_ms, 40);
  EXPECT_LE(s.p50_ms, s.p90_ms);
  EXPECT_LE(s.p90_ms, s.p99_ms);
  EXPECT_LE(s.p99_ms, s.max_ms);

  const LatencySummary empty = Summarize({});
  EXPECT_EQ(empty.count, 0);
  EXPECT_EQ(empty.max_ms, 0);
}

TEST(MeasurementWindowTest, WarmUpThenDuration) {
  MeasurementWindow w(kStart, absl::Seconds(2), absl::Seconds(10), 0);
  EXPECT_EQ(w.OnSend(At(0)), Phase::kWarmUp);
  EXPECT_EQ(w.OnSend(At(1.999)), Phase::kWarmUp);
  EXPECT_EQ(w.OnSend(At(2)), Phase::kMeasured);
  EXPECT_EQ(w.OnSend(At(11.999)), Phase::kMeasured);
  EXPECT_EQ(w.OnSend(At(12)), Phase::kDone);
  // Closed for good, even for a sender whose clock reading is a little older.
  EXPECT_EQ(w.OnSend(At(5)), Phase::kDone);
}

TEST(MeasurementWindowTest, AMinimumOutlastsTheDuration) {
  MeasurementWindow w(kStart, absl::Seconds(1), absl::Seconds(1), 0, /*min_measured=*/2);
  EXPECT_EQ(w.OnSend(At(0)), Phase::kWarmUp);
  EXPECT_EQ(w.OnSend(At(5)), Phase::kMeasured);
  EXPECT_EQ(w.OnSend(At(9)), Phase::kMeasured);
  EXPECT_EQ(w.OnSend(At(9.5)), Phase::kDone);
}

TEST(MeasurementWindowTest, RequestCountEndsTheStep) {
  MeasurementWindow w(kStart, absl::Seconds(1), absl::Seconds(1), 3);
  EXPECT_EQ(w.OnSend(At(0.5)), Phase::kWarmUp);
  for (double t : {1.0, 50.0, 100.0}) EXPECT_EQ(w.OnSend(At(t)), Phase::kMeasured) << t;
  EXPECT_EQ(w.OnSend(At(100.1)), Phase::kDone);

  MeasurementWindow no_warmup(kStart, absl::ZeroDuration(), absl::Seconds(1), 1);
  EXPECT_EQ(no_warmup.OnSend(kStart), Phase::kMeasured);
  EXPECT_EQ(no_warmup.OnSend(kStart), Phase::kDone);
}

TEST(StepStatsTest, AggregatesOkAnswersAndCountsErrorsByCodeName) {
  StepStats stats("concurrency", 4);
  stats.Add(Ok(0.0, 0.1, /*batch_size=*/1, /*queue=*/0.01, /*compute=*/0.05));
  stats.Add(Ok(0.1, 0.4, 3, 0.03, 0.20));
  stats.Add(Ok(0.2, 0.4, 2, 0.02, 0.15));
  stats.Add(Failed(0.3, 0.3, absl::StatusCode::kResourceExhausted));
  stats.Add(Failed(0.5, 0.5, absl::StatusCode::kResourceExhausted));
  stats.Add(Failed(1.0, 2.0, absl::StatusCode::kDeadlineExceeded));
  const StepResult r = stats.Finish();

  EXPECT_EQ(r.load, "concurrency");
  EXPECT_EQ(r.level, 4);
  EXPECT_EQ(r.ok, 3);
  EXPECT_EQ(r.errors,
            (std::map<std::string, int64_t>{{"DEADLINE_EXCEEDED", 1}, {"RESOURCE_EXHAUSTED", 2}}));
  EXPECT_EQ(r.error_count(), 3);
  EXPECT_EQ(r.dropped, 0);
  // From the first send (0) to the last answer (2.0, a failure still took that long).
  EXPECT_DOUBLE_EQ(r.seconds, 2.0);
  EXPECT_DOUBLE_EQ(r.throughput, 1.5);
  // Latencies and timing means of the OK answers only: 100, 300, 200 ms.
  EXPECT_EQ(r.latency.count, 3);
  EXPECT_NEAR(r.latency.p50_ms, 200, 1e-6);
  EXPECT_NEAR(r.latency.max_ms, 300, 1e-6);
  EXPECT_NEAR(r.latency.mean_ms, 200, 1e-6);
  EXPECT_DOUBLE_EQ(r.mean_batch_size, 2.0);
  EXPECT_NEAR(r.mean_queue_ms, 20, 1e-9);
  EXPECT_NEAR(r.mean_compute_ms, 133.3333333, 1e-6);
}

TEST(StepStatsTest, DroppedArrivalsAndEmptySteps) {
  StepStats stats("rate", 50);
  stats.Add(Ok(0.0, 0.5));
  stats.AddDropped(At(0.2));
  stats.AddDropped(At(1.0));
  const StepResult r = stats.Finish();
  EXPECT_EQ(r.ok, 1);
  EXPECT_EQ(r.dropped, 2);
  EXPECT_EQ(r.error_count(), 0);
  EXPECT_DOUBLE_EQ(r.seconds, 1.0);

  const StepResult empty = StepStats("rate", 1).Finish();
  EXPECT_EQ(empty.ok, 0);
  EXPECT_EQ(empty.seconds, 0);
  EXPECT_EQ(empty.throughput, 0);
  EXPECT_EQ(empty.mean_batch_size, 0);
}

TEST(BatchStepStatsTest, StagesPerOkImageAndTheCeiling) {
  BatchStepStats two(2);
  const StageSeconds s{0.001, 0.002, 0.050, 0.003, 0.004};
  two.AddBatch(At(0), At(0.1), {absl::StatusCode::kOk, absl::StatusCode::kOk}, {s, s});
  two.AddBatch(At(0.1), At(0.3), {absl::StatusCode::kOk, absl::StatusCode::kInvalidArgument},
               {s, s});
  const BatchStepResult r2 = two.Finish();
  EXPECT_EQ(r2.batch_size, 2);
  EXPECT_EQ(r2.batches, 2);
  EXPECT_EQ(r2.images_ok, 3);
  EXPECT_EQ(r2.errors, (std::map<std::string, int64_t>{{"INVALID_ARGUMENT", 1}}));
  EXPECT_DOUBLE_EQ(r2.seconds, 0.3);
  EXPECT_DOUBLE_EQ(r2.throughput, 10);
  EXPECT_NEAR(r2.batch_latency.max_ms, 200, 1e-6);
  EXPECT_NEAR(r2.mean_stage.decode, 1, 1e-9);
  EXPECT_NEAR(r2.mean_stage.forward, 50, 1e-9);
  EXPECT_NEAR(r2.mean_stage.encode, 4, 1e-9);

  BatchStepStats one(1);
  one.AddBatch(At(0), At(0.2), {absl::StatusCode::kOk}, {s});
  const std::vector<BatchStepResult> steps = {one.Finish(), r2, BatchStepStats(4).Finish()};
  EXPECT_EQ(BestBatchStep(steps), 1);
  EXPECT_EQ(BestBatchStep({BatchStepStats(8).Finish()}), -1);

  const std::string footer = BatchTableFooter(steps);
  EXPECT_THAT(footer, HasSubstr("ceiling: 10.00 images/s at batch size 2"));
  EXPECT_THAT(footer, HasSubstr("forward 50.00 ms"));
  EXPECT_THAT(BatchTableRow(r2), HasSubstr("INVALID_ARGUMENT:1"));
}

TEST(ReportTest, ErrorsColumn) {
  EXPECT_EQ(FormatErrors({}, 0), "-");
  EXPECT_EQ(FormatErrors({{"UNAVAILABLE", 3}, {"CANCELLED", 1}}, 2),
            "CANCELLED:1 UNAVAILABLE:3 dropped:2");
}

TEST(ReportTest, LoadJsonHasEveryStep) {
  StepStats a("concurrency", 1);
  a.Add(Ok(0, 0.1, 1));
  StepStats b("concurrency", 2);
  b.Add(Ok(0, 0.2, 2));
  b.Add(Failed(0, 0.1, absl::StatusCode::kUnavailable));
  RunInfo info;
  info.target = "gateway";
  info.server = "127.0.0.1:8000";
  info.model = "colour \"quoted\"";
  info.mode = "unary";
  info.images = 1;
  info.outputs = {"class_stats"};
  info.duration_seconds = 10;

  const google::protobuf::Struct doc = ParseJson(LoadJson(info, {a.Finish(), b.Finish()}));
  EXPECT_EQ(doc.fields().at("model").string_value(), "colour \"quoted\"");
  EXPECT_EQ(doc.fields().at("target").string_value(), "gateway");
  EXPECT_EQ(doc.fields().at("server").string_value(), "127.0.0.1:8000");
  EXPECT_FALSE(doc.fields().contains("models"));
  const auto& steps = doc.fields().at("steps").list_value().values();
  ASSERT_EQ(steps.size(), 2);
  const google::protobuf::Struct& second = steps[1].struct_value();
  EXPECT_EQ(Field(second, "concurrency"), 2);
  EXPECT_EQ(Field(second, "ok"), 1);
  EXPECT_EQ(Field(second, "error_count"), 1);
  EXPECT_EQ(second.fields().at("errors").struct_value().fields().at("UNAVAILABLE").number_value(),
            1);
  EXPECT_EQ(Field(second, "batch_size_mean"), 2);
  EXPECT_EQ(Field(second.fields().at("latency_ms").struct_value(), "p99"), 200);

  // No steps still gives a list.
  const google::protobuf::Struct none = ParseJson(LoadJson(info, {}));
  EXPECT_TRUE(none.fields().at("steps").has_list_value());
  EXPECT_THAT(LoadTableHeader("rate"), HasSubstr("rate/s"));
  EXPECT_THAT(LoadTableRow(b.Finish()), HasSubstr("UNAVAILABLE:1"));
}

TEST(ReportTest, BatchJsonNamesTheCeiling) {
  BatchStepStats one(1);
  one.AddBatch(At(0), At(0.5), {absl::StatusCode::kOk}, {StageSeconds{}});
  RunInfo info;
  info.mode = "in-process";
  const google::protobuf::Struct doc = ParseJson(BatchJson(info, {one.Finish()}));
  EXPECT_EQ(Field(doc.fields().at("ceiling").struct_value(), "batch_size"), 1);
  EXPECT_EQ(Field(doc.fields().at("ceiling").struct_value(), "throughput"), 2);
  EXPECT_TRUE(ParseJson(BatchJson(info, {})).fields().at("ceiling").has_null_value());
}

TEST(InputsTest, OutputsAndLists) {
  auto outputs = ParseOutputs({"label_png", "class_stats"});
  ASSERT_TRUE(outputs.ok());
  EXPECT_TRUE(outputs->label_png());
  EXPECT_TRUE(outputs->class_stats());
  EXPECT_FALSE(outputs->overlay_png());
  EXPECT_THAT(std::string(ParseOutputs({"labels"}).status().message()), HasSubstr("label_png"));
  EXPECT_FALSE(ParseOutputs({}).ok());

  EXPECT_EQ(*ParsePositiveInts("concurrency", {"1", "2", "8"}), (std::vector<int>{1, 2, 8}));
  EXPECT_FALSE(ParsePositiveInts("concurrency", {"0"}).ok());
  EXPECT_FALSE(ParsePositiveInts("concurrency", {"two"}).ok());
  EXPECT_EQ(*ParsePositiveNumbers("rate", {"0.5", "20"}), (std::vector<double>{0.5, 20}));
  EXPECT_THAT(std::string(ParsePositiveNumbers("rate", {"-1"}).status().message()),
              HasSubstr("--rate"));
  EXPECT_FALSE(LoadImages("", "").ok());
  EXPECT_FALSE(LoadImages("/nonexistent.png", "").ok());
}

}  // namespace
}  // namespace deeplab::bench
