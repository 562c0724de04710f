// The real deeplab-gateway in front of real deeplab-worker processes on loopback ports they
// pick: bursts are batched, every request survives a worker killed mid-burst, errors carry
// the right codes, streams answer each image, late workers are picked up, SIGTERM drains.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <cmath>
#include <fstream>
#include <future>
#include <limits>
#include <set>
#include <opencv2/imgcodecs.hpp>
#include <thread>

#include "common/image_codec.h"
#include "deeplab/v1/segmentation.grpc.pb.h"
#include "deeplab/v1/worker.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/integration/cluster.h"

namespace deeplab {
namespace {

using ::deeplab::testing::MetricValue;
using ::deeplab::testing::ReadFile;
using ::deeplab::testing::Scrape;
using ::deeplab::testing::Server;
using ::deeplab::testing::StartGateway;
using ::deeplab::testing::StartWorker;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Photo(const std::string& name) {
  return ReadFile(std::string(DEEPLAB_PHOTOS_DIR) + "/" + name);
}

// A small PNG with three colour bands, so the colour weight set's labels are known.
std::string BandsPng(int height, int width) {
  cv::Mat img(height, width, CV_8UC3);
  for (int x = 0; x < width; ++x) {
    img.col(x).setTo(x < width / 3 ? cv::Scalar(250, 0, 0)
                                   : (x < 2 * width / 3 ? cv::Scalar(0, 250, 0)
                                                        : cv::Scalar(0, 0, 250)));
  }
  return EncodePng(img);
}

v1::SegmentRequest Request(const std::string& model, const std::string& image,
                           const std::string& id = "") {
  v1::SegmentRequest r;
  r.set_model(model);
  r.mutable_image()->set_encoded(image);
  r.set_request_id(id);
  r.mutable_outputs()->set_class_stats(true);
  return r;
}

bool WaitServing(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout) {
  auto health = grpc::health::v1::Health::NewStub(channel);
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    if (health->Check(&ctx, req, &resp).ok() &&
        resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return true;
    }
    // Polling another process's readiness: there is no event to wait on.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// The peak resident memory of a process (VmHWM in /proc/PID/status), in bytes; -1 if unread.
double PeakResidentBytes(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) * 1024;  // "NNN kB"
  }
  return -1;
}

// Waits until ListModels says the weight set is ready on some worker.
bool WaitModelReady(v1::Segmentation::Stub& stub, const std::string& model,
                    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    v1::ListModelsResponse models;
    if (stub.ListModels(&ctx, v1::ListModelsRequest(), &models).ok()) {
      for (const auto& m : models.models()) {
        if (m.name() == model && m.ready()) return true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// A bad command line is exit code 2, before anything listens, with a line that names the
// problem: out-of-range values, and (Abseil's messages) unknown flags and malformed values.
TEST(ServerCommandLineTest, BadCommandLinesAreExitTwoAndSayWhy) {
  struct Case {
    std::string binary, flag, message;
  };
  const std::string gateway = DEEPLAB_GATEWAY_BINARY, worker = DEEPLAB_WORKER_BINARY;
  const std::vector<Case> cases = {
      {gateway, "--no-such-flag", "Unknown command line flag 'no_such_flag'"},
      {gateway, "--autoscale-utilization=most", "Illegal value 'most'"},
      {gateway, "--autoscale-utilization=0", "utilization must be in (0, 1]"},
      {gateway, "--autoscale-utilization=1.5", "utilization must be in (0, 1]"},
      {gateway, "--autoscale-queue-target=0s", "queue target must be positive"},
      {gateway, "--autoscale-window=-1s", "window must be at least 1s"},
      {gateway, "--max-attempts=0", "--max-attempts must be at least 1"},
      {gateway, "--workers=", "--workers is empty"},
      {gateway, "--workers=localhost", "is not host:port"},
      {worker, "--no-such-flag", "Unknown command line flag 'no_such_flag'"},
      {worker, "--threads=many", "Illegal value 'many'"},
  };
  for (const Case& c : cases) {
    // A valid command line for either program, but for the flag under test (the last
    // --workers wins).
    auto run = deeplab::testing::RunProgram({c.binary, "--port=0", "--metrics-port=0",
                                             c.binary == gateway ? "--workers=127.0.0.1:1"
                                                                 : "--models=/nonexistent",
                                             c.flag},
                                            absl::Seconds(30));
    ASSERT_TRUE(run.ok()) << c.flag << ": " << run.status();
    EXPECT_EQ(run->exit_code, 2) << c.binary << " " << c.flag << "\n" << run->err;
    EXPECT_THAT(run->err, HasSubstr(c.message)) << c.binary << " " << c.flag;
    EXPECT_THAT(run->out, Not(HasSubstr("grpc"))) << c.flag << ": it started listening";
  }
}

class GatewayProcessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_ = new std::string(std::filesystem::temp_directory_path() /
                            ("deeplab_gateway_repo_" + std::to_string(getpid())));
    deeplab::testing::WriteTestRepository(*repo_);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*repo_);
    delete repo_;
  }
  static std::string* repo_;
};
std::string* GatewayProcessTest::repo_ = nullptr;

TEST_F(GatewayProcessTest, BurstIsBatchedAcrossTwoWorkersAndEveryAnswerIsRight) {
  Server w1 = StartWorker(*repo_);
  Server w2 = StartWorker(*repo_);
  Server gw = StartGateway(w1.grpc_address + "," + w2.grpc_address);
  ASSERT_TRUE(WaitServing(gw.channel, absl::Seconds(30)));
  auto stub = v1::Segmentation::NewStub(gw.channel);

  constexpr int kRequests = 48;
  const std::string image = BandsPng(30, 90);
  std::vector<std::future<std::pair<grpc::Status, v1::SegmentResponse>>> calls;
  for (int i = 0; i < kRequests; ++i) {
    calls.push_back(std::async(std::launch::async, [&, i] {
      grpc::ClientContext ctx;
      v1::SegmentResponse resp;
      grpc::Status s = stub->Segment(&ctx, Request("colour", image, "r" + std::to_string(i)), &resp);
      return std::make_pair(s, resp);
    }));
  }
  int batched = 0;
  std::set<std::string> workers;
  for (int i = 0; i < kRequests; ++i) {
    auto [status, resp] = calls[i].get();
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(resp.request_id(), "r" + std::to_string(i));
    EXPECT_EQ(resp.result().height(), 30);
    EXPECT_EQ(resp.result().width(), 90);
    ASSERT_EQ(resp.result().class_stats_size(), 3);
    for (const auto& c : resp.result().class_stats()) EXPECT_NEAR(c.fraction(), 1.0 / 3, 0.02);
    if (resp.timing().batch_size() > 1) ++batched;
    workers.insert(resp.timing().worker());
    EXPECT_GE(resp.timing().total_seconds(), resp.timing().compute_seconds());
  }
  EXPECT_GT(batched, 0);
  EXPECT_EQ(workers.size(), 2u) << "both workers should have taken batches";

  const std::string metrics = Scrape(gw.metrics_address);
  const double count = MetricValue(metrics, "deeplab_gateway_batch_size_count{model=\"colour\"}");
  const double sum = MetricValue(metrics, "deeplab_gateway_batch_size_sum{model=\"colour\"}");
  ASSERT_GT(count, 0);
  EXPECT_EQ(sum, kRequests);
  EXPECT_GT(sum / count, 1.0) << "the burst should run in batches larger than one";
  EXPECT_EQ(MetricValue(metrics, "deeplab_gateway_requests_total{code=\"OK\",model=\"colour\"}"),
            kRequests);
  for (const char* name : {"deeplab_gateway_request_seconds_bucket", "deeplab_gateway_queue_seconds",
                           "deeplab_gateway_compute_seconds", "deeplab_gateway_queue_depth",
                           "deeplab_gateway_workers{state=\"healthy\"} 2",
                           "deeplab_process_resident_memory_bytes"}) {
    EXPECT_THAT(metrics, HasSubstr(name));
  }
}

TEST_F(GatewayProcessTest, EveryRequestSucceedsWhenAWorkerIsKilledMidBurst) {
  Server w1 = StartWorker(*repo_);
  Server w2 = StartWorker(*repo_);
  Server gw = StartGateway(w1.grpc_address + "," + w2.grpc_address);
  ASSERT_TRUE(WaitServing(gw.channel, absl::Seconds(30)));
  auto stub = v1::Segmentation::NewStub(gw.channel);
  ASSERT_TRUE(WaitModelReady(*stub, "slow", absl::Seconds(60)));

  constexpr int kRequests = 24;
  const std::string image = Photo("image2.jpg");
  std::atomic<int> answered{0};
  std::vector<std::future<grpc::Status>> calls;
  for (int i = 0; i < kRequests; ++i) {
    calls.push_back(std::async(std::launch::async, [&] {
      grpc::ClientContext ctx;
      v1::SegmentResponse resp;
      grpc::Status s = stub->Segment(&ctx, Request("slow", image), &resp);
      ++answered;
      return s;
    }));
  }
  // Kill the first worker once the burst is under way (its batches are in flight).
  while (answered.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  w1.process.Signal(SIGKILL);
  ASSERT_TRUE(w1.process.Wait(absl::Seconds(10)).ok());
  for (auto& call : calls) {
    grpc::Status s = call.get();
    EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  }
  const std::string metrics = Scrape(gw.metrics_address);
  EXPECT_EQ(MetricValue(metrics, "deeplab_gateway_requests_total{code=\"OK\",model=\"slow\"}"),
            kRequests);
}

// A worker that stops answering (SIGSTOP: hung, not dead, its connections stay open) keeps
// no request: once its Status poll fails, its batches in flight are cancelled and run on the
// other worker. Before, they waited until the worker woke or the client's deadline passed:
// with the worker stopped throughout and a 12 s deadline, they failed DEADLINE_EXCEEDED.
TEST_F(GatewayProcessTest, BatchesOfAHungWorkerRunElsewhere) {
  Server w1 = StartWorker(*repo_);
  Server w2 = StartWorker(*repo_);
  Server gw = StartGateway(w1.grpc_address + "," + w2.grpc_address);
  ASSERT_TRUE(WaitServing(gw.channel, absl::Seconds(30)));
  auto stub = v1::Segmentation::NewStub(gw.channel);
  ASSERT_TRUE(WaitModelReady(*stub, "colour", absl::Seconds(60)));

  w1.process.Signal(SIGSTOP);
  constexpr int kRequests = 16;
  const std::string image = BandsPng(30, 90);
  std::vector<std::future<std::pair<grpc::Status, v1::SegmentResponse>>> calls;
  for (int i = 0; i < kRequests; ++i) {
    calls.push_back(std::async(std::launch::async, [&, i] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(12));
      v1::SegmentResponse resp;
      grpc::Status s = stub->Segment(&ctx, Request("colour", image, "h" + std::to_string(i)), &resp);
      return std::make_pair(s, resp);
    }));
  }
  for (int i = 0; i < kRequests; ++i) {
    auto [status, resp] = calls[i].get();
    EXPECT_TRUE(status.ok()) << i << ": " << status.error_code() << " " << status.error_message();
    EXPECT_EQ(resp.request_id(), "h" + std::to_string(i));
    EXPECT_EQ(resp.timing().worker(), w2.grpc_address);
  }
  const std::string metrics = Scrape(gw.metrics_address);
  EXPECT_GT(MetricValue(metrics, "deeplab_gateway_retries_total{model=\"colour\"}"), 0)
      << "no batch went to the stopped worker: the test did not test anything";
  EXPECT_EQ(MetricValue(metrics, "deeplab_gateway_requests_total{code=\"OK\",model=\"colour\"}"),
            kRequests);
  w1.process.Signal(SIGCONT);
}

// A worker that answers its Status polls but never its Infer calls (a stuck forward thread).
// It reports what a real worker reports, so the gateway sends it batches.
class StuckWorker final : public v1::Worker::Service {
 public:
  explicit StuckWorker(std::shared_ptr<grpc::Channel> real) : real_(v1::Worker::NewStub(real)) {}
  grpc::Status Status(grpc::ServerContext*, const v1::StatusRequest* request,
                      v1::StatusResponse* response) override {
    grpc::ClientContext ctx;
    return real_->Status(&ctx, *request, response);
  }
  grpc::Status Infer(grpc::ServerContext* context, const v1::InferRequest*,
                     v1::InferResponse*) override {
    ++calls;
    // Polling the call's own cancellation: nothing else would wake this handler.
    while (!context->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return grpc::Status::CANCELLED;
  }
  std::atomic<int> calls{0};

 private:
  std::unique_ptr<v1::Worker::Stub> real_;
};

// Its batches are re-sent once they take longer than the per-attempt limit: before any
// batch finished, --min-attempt-timeout per request; then 10 times the measured service
// time, at least --min-attempt-timeout. Before, they waited for the requests' deadlines and
// failed DEADLINE_EXCEEDED.
TEST_F(GatewayProcessTest, BatchesOfAWorkerStuckInInferRunElsewhere) {
  Server real = StartWorker(*repo_);
  StuckWorker stuck(real.channel);
  grpc::ServerBuilder builder;
  int port = 0;
  // "127.0.0.10:..." sorts before "127.0.0.1:...", and the scheduler gives ties to the
  // earlier name: the stuck worker gets the first batch whenever both are idle.
  builder.AddListeningPort("127.0.0.10:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&stuck);
  std::unique_ptr<grpc::Server> stuck_server = builder.BuildAndStart();
  ASSERT_NE(port, 0);
  const std::string stuck_address = "127.0.0.10:" + std::to_string(port);
  Server gw = StartGateway(stuck_address + "," + real.grpc_address,
                           {"--min-attempt-timeout", "2s"});
  ASSERT_TRUE(WaitServing(gw.channel, absl::Seconds(30)));
  auto stub = v1::Segmentation::NewStub(gw.channel);
  ASSERT_TRUE(WaitModelReady(*stub, "colour", absl::Seconds(60)));
  const std::string image = BandsPng(30, 90);
  {
    // Alone, so unmeasured its limit is 2 s; afterwards the service time is measured.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::SegmentResponse resp;
    ASSERT_TRUE(stub->Segment(&ctx, Request("colour", image), &resp).ok());
  }
  // The stuck worker was marked failed; it is back once its next Status poll succeeds.
  const absl::Time until = absl::Now() + absl::Seconds(15);
  while (MetricValue(Scrape(gw.metrics_address), "deeplab_gateway_workers{state=\"healthy\"}") < 2 &&
         absl::Now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  constexpr int kRequests = 8;
  std::vector<std::future<std::pair<grpc::Status, v1::SegmentResponse>>> calls;
  for (int i = 0; i < kRequests; ++i) {
    calls.push_back(std::async(std::launch::async, [&, i] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
      v1::SegmentResponse resp;
      grpc::Status s = stub->Segment(&ctx, Request("colour", image, "s" + std::to_string(i)), &resp);
      return std::make_pair(s, resp);
    }));
  }
  for (int i = 0; i < kRequests; ++i) {
    auto [status, resp] = calls[i].get();
    EXPECT_TRUE(status.ok()) << i << ": " << status.error_code() << " " << status.error_message();
    EXPECT_EQ(resp.request_id(), "s" + std::to_string(i));
    EXPECT_EQ(resp.timing().worker(), real.grpc_address);
  }
  EXPECT_GE(stuck.calls.load(), 2) << "the stuck worker should have had the first request's "
                                       "batch and one of the burst's";
  EXPECT_EQ(MetricValue(Scrape(gw.metrics_address),
                        "deeplab_gateway_requests_total{code=\"OK\",model=\"colour\"}"),
            kRequests + 1);
  stuck_server->Shutdown(std::chrono::system_clock::now());
}

TEST_F(GatewayProcessTest, ErrorsStreamsAndListModels) {
  Server worker = StartWorker(*repo_);
  Server gw = StartGateway(worker.grpc_address);
  ASSERT_TRUE(WaitServing(gw.channel, absl::Seconds(30)));
  auto stub = v1::Segmentation::NewStub(gw.channel);
  ASSERT_TRUE(WaitModelReady(*stub, "slow", absl::Seconds(60)));
  auto call = [&](const v1::SegmentRequest& r, absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::SegmentResponse resp;
    return stub->Segment(&ctx, r, &resp);
  };
  EXPECT_EQ(call(Request("nope", BandsPng(8, 8))).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(call(Request("nope", BandsPng(8, 8))).error_message(), HasSubstr("colour"));
  EXPECT_EQ(call(Request("", BandsPng(8, 8))).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Odd field values are the caller's error, said plainly.
  for (const float alpha : {std::nanf(""), std::numeric_limits<float>::infinity(), -0.5f, 1.5f}) {
    v1::SegmentRequest odd = Request("colour", BandsPng(8, 8));
    odd.mutable_outputs()->set_overlay_png(true);
    odd.mutable_outputs()->set_overlay_alpha(alpha);
    const grpc::Status s = call(odd);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << alpha;
    EXPECT_THAT(s.error_message(), HasSubstr("overlay_alpha must be between 0 and 1")) << alpha;
  }
  v1::SegmentRequest urgent = Request("colour", BandsPng(8, 8));
  urgent.set_priority(99);
  const grpc::Status priority = call(urgent);
  EXPECT_EQ(priority.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(priority.error_message(), HasSubstr("priority 99 is out of range"));
  EXPECT_THAT(priority.error_message(), Not(HasSubstr("task")));
  // A 10 KB name is NOT_FOUND with the name shortened, not a metadata-size error.
  const grpc::Status long_name = call(Request(std::string(10000, 'x'), BandsPng(8, 8)));
  EXPECT_EQ(long_name.error_code(), grpc::StatusCode::NOT_FOUND) << long_name.error_message();
  EXPECT_THAT(long_name.error_message(), HasSubstr("... (10000 bytes)"));
  EXPECT_LT(long_name.error_message().size(), 400u);
  v1::SegmentRequest no_image;
  no_image.set_model("colour");
  EXPECT_EQ(call(no_image).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(call(Request("colour", "garbage bytes")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  const std::string jpeg = Photo("image1.jpg");
  grpc::Status truncated = call(Request("colour", jpeg.substr(0, jpeg.size() / 2)));
  EXPECT_EQ(truncated.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(truncated.error_message(), HasSubstr("truncated"));
  // A deadline shorter than a batch of the slow model is answered DEADLINE_EXCEEDED.
  EXPECT_EQ(call(Request("slow", Photo("image3.jpg")), absl::Milliseconds(1)).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(call(Request("colour", BandsPng(10, 10))).ok());
  // Names no worker knows are counted as "unknown": clients cannot grow the label set.
  const std::string metrics = Scrape(gw.metrics_address);
  EXPECT_EQ(
      MetricValue(metrics, "deeplab_gateway_requests_total{code=\"NOT_FOUND\",model=\"unknown\"}"),
      3);
  EXPECT_THAT(metrics, ::testing::Not(HasSubstr("model=\"nope\"")));

  {
    grpc::ClientContext ctx;
    v1::ListModelsResponse models;
    ASSERT_TRUE(stub->ListModels(&ctx, v1::ListModelsRequest(), &models).ok());
    ASSERT_EQ(models.models_size(), 2);
    EXPECT_EQ(models.models(0).name(), "colour");
    EXPECT_TRUE(models.models(0).ready());
    EXPECT_EQ(models.models(0).num_classes(), 3);
    EXPECT_EQ(models.models(0).class_names(2), "blue");
    EXPECT_EQ(models.models(0).ready_workers(0), worker.grpc_address);
    EXPECT_EQ(models.healthy_workers(), 1);
  }

  // A stream of images, one of them bad: every one is answered, by id.
  grpc::ClientContext ctx;
  auto stream = stub->SegmentStream(&ctx);
  constexpr int kImages = 12;
  for (int i = 0; i < kImages; ++i) {
    ASSERT_TRUE(stream->Write(
        Request("colour", i == 5 ? std::string("bad") : BandsPng(20 + i, 30), "s" + std::to_string(i))));
  }
  stream->WritesDone();
  std::set<std::string> ids;
  v1::SegmentStreamResponse r;
  while (stream->Read(&r)) {
    ids.insert(r.request_id());
    if (r.request_id() == "s5") {
      EXPECT_EQ(r.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
      EXPECT_FALSE(r.message().empty());
    } else {
      EXPECT_EQ(r.code(), 0) << r.message();
      EXPECT_EQ(r.response().result().width(), 30);
    }
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ids.size(), static_cast<size_t>(kImages));
}

// --workers dns:///name:port: every address the name resolves to is a worker, as a
// Kubernetes headless Service lists its pods. localhost resolves to 127.0.0.1 (and perhaps
// ::1, where nothing listens: that address is simply never healthy).
TEST_F(GatewayProcessTest, WorkersFoundThroughDns) {
  Server worker = StartWorker(*repo_);
  const std::string port = worker.grpc_address.substr(worker.grpc_address.rfind(':') + 1);
  Server gw = StartGateway("dns:///localhost:" + port, {"--resolve-interval", "200ms"});
  ASSERT_TRUE(WaitServing(gw.channel, absl::Seconds(30)));
  auto stub = v1::Segmentation::NewStub(gw.channel);
  grpc::ClientContext ctx;
  v1::SegmentResponse resp;
  grpc::Status s = stub->Segment(&ctx, Request("colour", BandsPng(12, 18)), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.timing().worker(), "127.0.0.1:" + port);
}

// Polls the gateway's metrics until `series` has `value`; false after the timeout.
bool WaitMetric(const std::string& metrics_address, const std::string& series, double value,
                absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (MetricValue(Scrape(metrics_address), series) == value) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// The worker each of n sequential requests ran on.
std::set<std::string> WorkersServing(v1::Segmentation::Stub& stub, int n) {
  std::set<std::string> workers;
  for (int i = 0; i < n; ++i) {
    grpc::ClientContext ctx;
    v1::SegmentResponse resp;
    grpc::Status s = stub.Segment(&ctx, Request("colour", BandsPng(12, 18)), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    workers.insert(resp.timing().worker());
  }
  return workers;
}

// How Kubernetes scales workers: the headless Service's DNS name gains and loses addresses
// while the gateway runs. Here the gateway runs in its own mount namespace where /etc/hosts
// is a file the test rewrites (the resolver reads it on every lookup); the workers listen
// on 127.0.0.2 and 127.0.0.3 with the same port, as pods do on their own IPs.
TEST_F(GatewayProcessTest, GatewayFollowsDnsAsWorkersAreAddedAndRemoved) {
  auto probe = deeplab::testing::RunProgram(
      {"/usr/bin/unshare", "-m", "--propagation", "private", "true"}, absl::Seconds(10));
  if (!probe.ok() || probe->exit_code != 0) {
    GTEST_SKIP() << "needs `unshare -m` (root, mount namespaces) to give the gateway its own "
                    "/etc/hosts";
  }
  Server a = StartWorker(*repo_, "ready", {"--host", "127.0.0.2"});
  const std::string port = a.grpc_address.substr(a.grpc_address.rfind(':') + 1);
  Server b = StartWorker(*repo_, "ready", {"--host", "127.0.0.3", "--port", port});
  ASSERT_EQ(a.grpc_address, "127.0.0.2:" + port);
  ASSERT_EQ(b.grpc_address, "127.0.0.3:" + port);

  const std::string hosts = std::filesystem::temp_directory_path() /
                            ("deeplab_gateway_hosts_" + std::to_string(getpid()));
  // Rewritten in place: the bind mount follows the file's inode, not its name.
  auto list = [&](const std::vector<std::string>& ips) {
    std::string text = "127.0.0.1 localhost\n";
    for (const std::string& ip : ips) text += ip + " deeplab-workers-test\n";
    deeplab::testing::WriteFile(hosts, text);
  };
  list({"127.0.0.2"});
  Server gw = deeplab::testing::StartServer(
      DEEPLAB_GATEWAY_BINARY, "deeplab-gateway",
      {"--workers", "dns:///deeplab-workers-test:" + port, "--resolve-interval", "100ms",
       "--status-interval", "100ms"},
      "",
      {"/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
       "mount --bind \"$0\" /etc/hosts && exec \"$@\"", hosts});
  ASSERT_TRUE(WaitServing(gw.channel, absl::Seconds(30)));
  auto stub = v1::Segmentation::NewStub(gw.channel);
  ASSERT_TRUE(WaitModelReady(*stub, "colour", absl::Seconds(60)));
  const std::string healthy = "deeplab_gateway_workers{state=\"healthy\"}";
  const std::string unhealthy = "deeplab_gateway_workers{state=\"unhealthy\"}";
  EXPECT_TRUE(WaitMetric(gw.metrics_address, healthy, 1, absl::Seconds(10)));
  EXPECT_EQ(WorkersServing(*stub, 4), std::set<std::string>{a.grpc_address});

  // Scale up: the second address appears and takes work.
  list({"127.0.0.2", "127.0.0.3"});
  ASSERT_TRUE(WaitMetric(gw.metrics_address, healthy, 2, absl::Seconds(10)));
  // The scheduler sends work to the least loaded worker, so a burst larger than one
  // worker's batch slots must spill onto the new one.
  const std::string image = Photo("image2.jpg");
  std::vector<std::future<std::string>> calls;
  for (int i = 0; i < 12; ++i) {
    calls.push_back(std::async(std::launch::async, [&] {
      grpc::ClientContext ctx;
      v1::SegmentResponse resp;
      grpc::Status s = stub->Segment(&ctx, Request("slow", image), &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      return resp.timing().worker();
    }));
  }
  std::set<std::string> seen;
  for (auto& c : calls) seen.insert(c.get());
  EXPECT_EQ(seen, (std::set<std::string>{a.grpc_address, b.grpc_address}));

  // Scale down: the first address leaves DNS while its worker still runs; the gateway stops
  // using it rather than waiting for it to fail.
  list({"127.0.0.3"});
  ASSERT_TRUE(WaitMetric(gw.metrics_address, healthy, 1, absl::Seconds(10)));
  EXPECT_EQ(MetricValue(Scrape(gw.metrics_address), unhealthy), 0);
  EXPECT_EQ(WorkersServing(*stub, 6), std::set<std::string>{b.grpc_address});
  std::filesystem::remove(hosts);
}

// The autoscaling signal: at rest the gateway asks for min_workers (1); under a burst that
// queues on one worker, it asks for more, and exports how long the oldest request waited.
TEST_F(GatewayProcessTest, WorkersNeededRisesWhenRequestsQueue) {
  // One batch slot: with 12 clients and batches of 4, eight requests wait in the gateway.
  Server worker = StartWorker(*repo_, "ready", {"--batch-slots", "1"});
  Server gw = StartGateway(worker.grpc_address, {"--autoscale-queue-target", "100ms"});
  ASSERT_TRUE(WaitServing(gw.channel, absl::Seconds(30)));
  auto stub = v1::Segmentation::NewStub(gw.channel);
  ASSERT_TRUE(WaitModelReady(*stub, "slow", absl::Seconds(60)));
  EXPECT_TRUE(WaitMetric(gw.metrics_address, "deeplab_gateway_workers_needed", 1,
                         absl::Seconds(10)));
  EXPECT_EQ(MetricValue(Scrape(gw.metrics_address), "deeplab_gateway_worker_demand"), 0);

  const std::string image = Photo("image2.jpg");
  std::atomic<bool> done{false};
  std::vector<std::future<void>> clients;
  for (int i = 0; i < 12; ++i) {
    clients.push_back(std::async(std::launch::async, [&] {
      for (int k = 0; k < 2; ++k) {
        grpc::ClientContext ctx;
        v1::SegmentResponse resp;
        grpc::Status s = stub->Segment(&ctx, Request("slow", image), &resp);
        EXPECT_TRUE(s.ok()) << s.error_message();
      }
    }));
  }
  double most_needed = 0, oldest_wait = 0, demand = 0, worker_demand = 0;
  std::thread watcher([&] {
    while (!done.load()) {
      const std::string m = Scrape(gw.metrics_address);
      most_needed = std::max(most_needed, MetricValue(m, "deeplab_gateway_workers_needed"));
      oldest_wait = std::max(
          oldest_wait, MetricValue(m, "deeplab_gateway_queue_oldest_seconds{model=\"slow\"}"));
      demand = std::max(demand, MetricValue(m, "deeplab_gateway_slot_demand{model=\"slow\"}"));
      worker_demand = std::max(worker_demand, MetricValue(m, "deeplab_gateway_worker_demand"));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  for (auto& c : clients) c.get();
  done = true;
  watcher.join();
  EXPECT_GE(most_needed, 2);
  EXPECT_GT(oldest_wait, 0);
  EXPECT_GT(demand, 1);
  // The fraction behind workers_needed, which the autoscaler sums over gateways.
  EXPECT_GT(worker_demand, 1);
}

// Idle TCP connections to a metrics port used to take both of the HTTP server's threads
// until they closed: scraping stopped. 16 of them now leave /metrics answering at once.
TEST_F(GatewayProcessTest, IdleConnectionsCannotBlockMetrics) {
  Server worker = StartWorker(*repo_);
  Server gw = StartGateway(worker.grpc_address);
  for (const Server* server : {&worker, &gw}) {
    double seconds = 0;
    const std::string body = deeplab::testing::ScrapeWithIdleConnections(
        server->metrics_address, 16, absl::Seconds(1), &seconds);
    EXPECT_THAT(body, HasSubstr("deeplab_")) << server->metrics_address << " after " << seconds << " s";
    EXPECT_LT(seconds, 1.0);
  }
}

// An upload larger than a worker accepts is refused by the gateway, never held by a request,
// copied or forwarded. Before, the gateway took messages up to 512 MiB whatever the workers'
// limit, held, copied and forwarded them: three 400 MB uploads took it to 2.7 GB. gRPC still
// receives a refused message whole before checking its size (138 MB peak for three 48 MB
// uploads), so the bound is one receive buffer per upload, not three copies.
TEST_F(GatewayProcessTest, UploadsOverTheImageLimitAreRefusedBeforeTheyAreHeld) {
  Server worker = StartWorker(*repo_);
  Server gw = StartGateway(worker.grpc_address, {"--max-image-bytes", "4000000"});
  ASSERT_TRUE(WaitServing(gw.channel, absl::Seconds(30)));
  auto stub = v1::Segmentation::NewStub(gw.channel);
  // The peak (VmHWM), not the resident memory after: a buffer freed at once would not show
  // in the latter.
  const double rss_before = PeakResidentBytes(gw.process.pid());
  std::string huge = BandsPng(30, 90);
  huge.resize(48 << 20, 'x');  // a PNG header, then 48 MB
  std::vector<std::future<grpc::Status>> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back(std::async(std::launch::async, [&] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      v1::SegmentResponse resp;
      return stub->Segment(&ctx, Request("colour", huge), &resp);
    }));
  }
  for (auto& call : calls) {
    const grpc::Status s = call.get();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  }
  const double rss_after = PeakResidentBytes(gw.process.pid());
#if !defined(__SANITIZE_ADDRESS__)  // ASan's quarantine keeps freed buffers resident
  EXPECT_LT(rss_after - rss_before, 180e6) << "3 x 48 MB uploads were copied by the gateway";
#else
  (void)rss_before;
  (void)rss_after;
#endif
  // Just over the image limit but within the message: the gateway's own clear refusal.
  std::string over = BandsPng(30, 90);
  over.resize(4000001, 'x');
  grpc::ClientContext ctx;
  v1::SegmentResponse resp;
  const grpc::Status s = stub->Segment(&ctx, Request("colour", over), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("--max-image-bytes"));
  // And the gateway still serves.
  grpc::ClientContext ok_ctx;
  EXPECT_TRUE(stub->Segment(&ok_ctx, Request("colour", BandsPng(30, 90)), &resp).ok());
}

// The images of accepted, unanswered requests are bounded together (--max-inflight-mb):
// beyond, a request is refused RESOURCE_EXHAUSTED at once, and the others run.
TEST_F(GatewayProcessTest, InFlightImageBytesAreBounded) {
  Server worker = StartWorker(*repo_);
  Server gw = StartGateway(worker.grpc_address, {"--max-inflight-mb", "1"});
  ASSERT_TRUE(WaitServing(gw.channel, absl::Seconds(30)));
  auto stub = v1::Segmentation::NewStub(gw.channel);
  ASSERT_TRUE(WaitModelReady(*stub, "slow", absl::Seconds(60)));
  cv::Mat noise(400, 400, CV_8UC3);
  cv::randu(noise, 0, 255);
  const std::string image = EncodePng(noise);  // ~480 KB: two fit in 1 MiB
  ASSERT_GT(image.size(), 400000u);
  constexpr int kRequests = 8;
  std::vector<std::future<grpc::Status>> calls;
  for (int i = 0; i < kRequests; ++i) {
    calls.push_back(std::async(std::launch::async, [&] {
      grpc::ClientContext ctx;
      v1::SegmentResponse resp;
      return stub->Segment(&ctx, Request("slow", image), &resp);
    }));
  }
  int ok = 0, refused = 0;
  for (auto& call : calls) {
    const grpc::Status s = call.get();
    if (s.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
      EXPECT_THAT(s.error_message(), HasSubstr("--max-inflight-mb"));
      ++refused;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(refused, 1);
  EXPECT_GT(MetricValue(Scrape(gw.metrics_address),
                        "deeplab_gateway_rejections_total{model=\"slow\",reason=\"memory\"}"),
            0);
}

TEST_F(GatewayProcessTest, AWorkerThatStartsLaterIsPickedUpAndSigtermDrains) {
  // Reserve a port for the worker by starting it after the gateway on a fixed port.
  Server first = StartWorker(*repo_);
  const std::string address = first.grpc_address;
  first.process.Signal(SIGTERM);
  ASSERT_TRUE(first.process.Wait(absl::Seconds(30)).ok());

  Server gw = StartGateway(address);
  auto health = grpc::health::v1::Health::NewStub(gw.channel);
  {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  }
  auto stub = v1::Segmentation::NewStub(gw.channel);
  {
    // No worker reached yet: the gateway cannot know the weight set, so "retry", not "unknown".
    grpc::ClientContext ctx;
    v1::SegmentResponse resp;
    const grpc::Status s = stub->Segment(&ctx, Request("colour", BandsPng(8, 8)), &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(s.error_message(), HasSubstr("no worker is reachable yet"));
  }
  const std::string port = address.substr(address.rfind(':') + 1);
  Server late = deeplab::testing::StartServer(
      DEEPLAB_WORKER_BINARY, "deeplab-worker",
      {"--models", *repo_, "--threads", "1", "--port", port}, "ready");
  ASSERT_TRUE(WaitServing(gw.channel, absl::Seconds(30)));
  ASSERT_TRUE(WaitModelReady(*stub, "slow", absl::Seconds(60)));

  // Requests accepted before SIGTERM are answered; the gateway then exits 0.
  std::vector<std::future<grpc::Status>> calls;
  for (int i = 0; i < 6; ++i) {
    calls.push_back(std::async(std::launch::async, [&] {
      grpc::ClientContext ctx;
      v1::SegmentResponse resp;
      return stub->Segment(&ctx, Request("slow", Photo("image2.jpg")), &resp);
    }));
  }
  // Wait until the gateway has them all queued or running.
  for (int i = 0; i < 400; ++i) {
    const std::string m = Scrape(gw.metrics_address);
    if (m.find("deeplab_gateway_batch_size_count{model=\"slow\"}") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  gw.process.Signal(SIGTERM);
  for (auto& c : calls) {
    grpc::Status s = c.get();
    EXPECT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::UNAVAILABLE) << s.error_message();
  }
  auto code = gw.process.Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace deeplab
