// The real deeplab-bench against a real gateway and worker on loopback ports (and against the
// worker directly, as --target worker), and in-process on the same test repository: what its
// JSON says, and its exit codes. Runs are a few dozen requests of a tiny weight set, so the
// whole suite takes seconds.
#include <gmock/gmock.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <opencv2/core.hpp>

#include "absl/strings/str_join.h"
#include "common/image_codec.h"
#include "tests/integration/cluster.h"

namespace deeplab {
namespace {

using ::deeplab::testing::ProgramResult;
using ::deeplab::testing::Server;
using ::google::protobuf::Struct;
using ::testing::HasSubstr;

ProgramResult Bench(std::vector<std::string> args) {
  args.insert(args.begin(), DEEPLAB_BENCH_BINARY);
  auto result = deeplab::testing::RunProgram(args, absl::Seconds(120));
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *result : ProgramResult{};
}

Struct ParseJson(const ProgramResult& run) {
  Struct doc;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(run.out, &doc).ok())
      << "stdout: " << run.out << "\nstderr: " << run.err;
  return doc;
}

double Number(const Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  EXPECT_NE(it, s.fields().end()) << key;
  return it == s.fields().end() ? -1 : it->second.number_value();
}

std::vector<Struct> Steps(const Struct& doc) {
  std::vector<Struct> steps;
  if (!doc.fields().count("steps")) return steps;
  for (const auto& v : doc.fields().at("steps").list_value().values()) {
    steps.push_back(v.struct_value());
  }
  return steps;
}

// One step against the gateway: every measured request answered OK, batched, and the
// latency percentiles in order.
void ExpectCleanStep(const Struct& step, int requests) {
  EXPECT_EQ(Number(step, "ok"), requests);
  EXPECT_EQ(Number(step, "error_count"), 0);
  EXPECT_TRUE(step.fields().at("errors").struct_value().fields().empty());
  EXPECT_EQ(Number(step, "dropped"), 0);
  EXPECT_GT(Number(step, "throughput"), 0);
  EXPECT_GE(Number(step, "batch_size_mean"), 1);
  EXPECT_GT(Number(step, "compute_ms_mean"), 0);
  const Struct& latency = step.fields().at("latency_ms").struct_value();
  EXPECT_EQ(Number(latency, "count"), requests);
  EXPECT_GT(Number(latency, "p50"), 0);
  EXPECT_LE(Number(latency, "p50"), Number(latency, "p90"));
  EXPECT_LE(Number(latency, "p90"), Number(latency, "p99"));
  EXPECT_LE(Number(latency, "p99"), Number(latency, "max"));
}

class BenchProcessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_ = new std::string(std::filesystem::temp_directory_path() /
                            ("deeplab_bench_repo_" + std::to_string(getpid())));
    deeplab::testing::WriteTestRepository(*repo_);
    // Two colour bands: the colour weight set labels each pixel by its dominant channel.
    cv::Mat rgb(32, 64, CV_8UC3, cv::Scalar(250, 0, 0));
    rgb.colRange(32, 64).setTo(cv::Scalar(0, 0, 250));
    image_ = new std::string(*repo_ + "/bands.png");
    deeplab::testing::WriteFile(*image_, EncodePng(rgb));
    // Only the tiny weight set: "slow" would take a core for seconds to load.
    worker_ = new Server(deeplab::testing::StartWorker(*repo_, "ready", {"--load", "colour"}));
    gateway_ = new Server(deeplab::testing::StartGateway(worker_->grpc_address));
  }
  static void TearDownTestSuite() {
    delete gateway_;
    delete worker_;
    std::filesystem::remove_all(*repo_);
    delete image_;
    delete repo_;
  }

  // Against the gateway; --wait-ready covers the gateway's first poll of the worker.
  static ProgramResult BenchGateway(std::vector<std::string> args) {
    std::vector<std::string> all = {
        "--server", gateway_->grpc_address, "--image", *image_, "--wait-ready", "60s", "--warmup",
        "200ms"};
    all.insert(all.end(), args.begin(), args.end());
    return Bench(all);
  }

  static std::string* repo_;
  static std::string* image_;
  static Server* worker_;
  static Server* gateway_;
};
std::string* BenchProcessTest::repo_ = nullptr;
std::string* BenchProcessTest::image_ = nullptr;
Server* BenchProcessTest::worker_ = nullptr;
Server* BenchProcessTest::gateway_ = nullptr;

TEST_F(BenchProcessTest, ConcurrencyStepsReportEveryRequestInJson) {
  const ProgramResult run =
      BenchGateway({"--model", "colour", "--concurrency", "1,4", "--requests", "12", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const Struct doc = ParseJson(run);
  EXPECT_EQ(doc.fields().at("target").string_value(), "gateway");
  EXPECT_EQ(doc.fields().at("server").string_value(), gateway_->grpc_address);
  EXPECT_EQ(doc.fields().at("model").string_value(), "colour");
  EXPECT_EQ(doc.fields().at("mode").string_value(), "unary");
  const std::vector<Struct> steps = Steps(doc);
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(Number(steps[0], "concurrency"), 1);
  EXPECT_EQ(Number(steps[1], "concurrency"), 4);
  for (const Struct& step : steps) ExpectCleanStep(step, 12);
  // One client never shares a batch.
  EXPECT_EQ(Number(steps[0], "batch_size_mean"), 1);
}

TEST_F(BenchProcessTest, StreamsAndOpenLoopRates) {
  const ProgramResult stream = BenchGateway({"--model", "colour", "--mode", "stream",
                                             "--concurrency", "3", "--requests", "12", "--json"});
  ASSERT_EQ(stream.exit_code, 0) << stream.err;
  std::vector<Struct> steps = Steps(ParseJson(stream));
  ASSERT_EQ(steps.size(), 1u);
  ExpectCleanStep(steps[0], 12);

  const ProgramResult rate =
      BenchGateway({"--model", "colour", "--mode", "stream", "--streams", "2", "--rate", "40",
                    "--arrivals", "poisson", "--requests", "10", "--json"});
  ASSERT_EQ(rate.exit_code, 0) << rate.err;
  const Struct doc = ParseJson(rate);
  EXPECT_EQ(doc.fields().at("arrivals").string_value(), "poisson");
  steps = Steps(doc);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(Number(steps[0], "rate"), 40);
  ExpectCleanStep(steps[0], 10);
}

TEST_F(BenchProcessTest, TableForPeople) {
  const ProgramResult run =
      BenchGateway({"--model", "colour", "--concurrency", "2", "--requests", "4"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("images/s"));
  EXPECT_THAT(run.out, HasSubstr("p99 ms"));
  EXPECT_THAT(run.out, HasSubstr("weight set colour (3 classes"));
}

TEST_F(BenchProcessTest, ExitCodesForUnknownWeightSetsUnreachableServersAndBadFlags) {
  const ProgramResult unknown =
      Bench({"--server", gateway_->grpc_address, "--model", "nope", "--image", *image_,
             "--concurrency", "1", "--requests", "1"});
  EXPECT_EQ(unknown.exit_code, 3);
  EXPECT_THAT(unknown.err, HasSubstr("no weight set 'nope'"));
  EXPECT_THAT(unknown.err, HasSubstr("colour"));
  EXPECT_TRUE(unknown.out.empty()) << unknown.out;

  // Port 1 on loopback: nothing listens (and binding it would need root).
  const ProgramResult unreachable =
      Bench({"--server", "127.0.0.1:1", "--model", "colour", "--image", *image_, "--concurrency",
             "1", "--timeout", "1s"});
  EXPECT_EQ(unreachable.exit_code, 3);
  EXPECT_THAT(unreachable.err, HasSubstr("cannot reach"));

  // Each run loads LibTorch (about a second here): a few representative cases only.
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"--model", "colour", "--image", *image_, "--concurrency", "1"},  // no --server
           {"--server", "x:1", "--model", "colour", "--image", *image_, "--rate", "0"},
           {"--no-such-flag"},
           {"--duration", "soon"}}) {
    const ProgramResult run = Bench(bad);
    EXPECT_EQ(run.exit_code, 2) << absl::StrJoin(bad, " ") << "\n" << run.err;
  }
}

// Straight to the worker: the same image as one-item Infer calls, reported as the gateway
// runs are (a batch of one whose compute is the worker's forward pass).
TEST_F(BenchProcessTest, DirectToWorker) {
  const ProgramResult run =
      Bench({"--target", "worker", "--server", worker_->grpc_address, "--model", "colour",
             "--image", *image_, "--wait-ready", "60s", "--warmup", "200ms", "--concurrency", "2",
             "--requests", "8", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const Struct doc = ParseJson(run);
  EXPECT_EQ(doc.fields().at("target").string_value(), "worker");
  EXPECT_EQ(doc.fields().at("server").string_value(), worker_->grpc_address);
  EXPECT_EQ(doc.fields().at("mode").string_value(), "unary");
  std::vector<Struct> steps = Steps(doc);
  ASSERT_EQ(steps.size(), 1u);
  ExpectCleanStep(steps[0], 8);
  EXPECT_EQ(Number(steps[0], "batch_size_mean"), 1);
  EXPECT_EQ(Number(steps[0], "queue_ms_mean"), 0);

  const ProgramResult rate =
      Bench({"--target", "worker", "--server", worker_->grpc_address, "--model", "colour",
             "--image", *image_, "--warmup", "0s", "--rate", "40", "--requests", "6"});
  ASSERT_EQ(rate.exit_code, 0) << rate.err;
  EXPECT_THAT(rate.out,
              HasSubstr("worker " + worker_->grpc_address + ", weight set colour (3 classes"));
  EXPECT_THAT(rate.out, HasSubstr("rate/s"));
}

TEST_F(BenchProcessTest, DirectToWorkerExitCodes) {
  const ProgramResult unknown =
      Bench({"--target", "worker", "--server", worker_->grpc_address, "--model", "nope", "--image",
             *image_, "--concurrency", "1", "--requests", "1"});
  EXPECT_EQ(unknown.exit_code, 3);
  EXPECT_THAT(unknown.err, HasSubstr("no weight set 'nope'"));
  EXPECT_THAT(unknown.err, HasSubstr("colour"));  // what the worker does host
  EXPECT_TRUE(unknown.out.empty()) << unknown.out;

  const ProgramResult unreachable =
      Bench({"--target", "worker", "--server", "127.0.0.1:1", "--model", "colour", "--image",
             *image_, "--concurrency", "1", "--timeout", "1s"});
  EXPECT_EQ(unreachable.exit_code, 3);
  EXPECT_THAT(unreachable.err, HasSubstr("cannot reach a deeplab worker"));

  const ProgramResult stream =
      Bench({"--target", "worker", "--server", worker_->grpc_address, "--model", "colour",
             "--image", *image_, "--mode", "stream", "--concurrency", "1"});
  EXPECT_EQ(stream.exit_code, 2);
  EXPECT_THAT(stream.err, HasSubstr("--target worker"));
  EXPECT_THAT(stream.err, HasSubstr("stream"));

  const ProgramResult bad = Bench({"--target", "router", "--server", worker_->grpc_address,
                                   "--model", "colour", "--image", *image_, "--concurrency", "1"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("--target must be gateway or worker"));
}

TEST_F(BenchProcessTest, InProcessFindsTheCeiling) {
  const ProgramResult run =
      Bench({"--in-process", "--models", *repo_, "--model", "colour", "--image", *image_,
             "--batch-sizes", "1,2", "--warmup", "100ms", "--duration", "300ms", "--threads", "1",
             "--pipeline-threads", "1", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const Struct doc = ParseJson(run);
  EXPECT_EQ(doc.fields().at("mode").string_value(), "in-process");
  const std::vector<Struct> steps = Steps(doc);
  ASSERT_EQ(steps.size(), 2u);
  for (const Struct& step : steps) {
    EXPECT_GT(Number(step, "throughput"), 0);
    EXPECT_GT(Number(step, "images_ok"), 0);
    EXPECT_TRUE(step.fields().at("errors").struct_value().fields().empty());
    const Struct& stages = step.fields().at("stage_ms_per_image").struct_value();
    EXPECT_GT(Number(stages, "decode"), 0);
    EXPECT_GT(Number(stages, "forward"), 0);
  }
  EXPECT_EQ(Number(steps[1], "batch_size"), 2);
  EXPECT_GT(Number(doc.fields().at("ceiling").struct_value(), "throughput"), 0);

  const ProgramResult unknown = Bench({"--in-process", "--models", *repo_, "--model", "nope",
                                       "--image", *image_, "--duration", "100ms"});
  EXPECT_EQ(unknown.exit_code, 3);
  EXPECT_THAT(unknown.err, HasSubstr("colour"));
}

}  // namespace
}  // namespace deeplab
