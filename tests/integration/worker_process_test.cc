// The real deeplab-worker binary on loopback ports it picks itself: health, Status,
// reflection, Infer on real photos, /metrics, and the SIGTERM drain.
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <dlfcn.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "common/image_codec.h"
#include "deeplab/v1/worker.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/integration/cluster.h"

namespace deeplab {
namespace {

using ::deeplab::testing::MetricValue;
using ::deeplab::testing::ReadFile;
using ::deeplab::testing::Scrape;
using ::deeplab::testing::Server;
using ::deeplab::testing::StartWorker;
using ::deeplab::testing::WriteFile;
using ::testing::HasSubstr;
using ::testing::Not;

class WorkerProcessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_ = new std::string(std::filesystem::temp_directory_path() /
                            ("deeplab_worker_repo_" + std::to_string(getpid())));
    deeplab::testing::WriteTestRepository(*repo_);
    WriteFile(*repo_ + "/missing/config.pbtxt", R"pb(
      name: "missing"
      architecture { backbone: "mobilenetv2" num_classes: 2 }
      input { height: 64 width: 64 }
      class_names: ["a", "b"]
      weights { file: "absent.h5" format: WEIGHTS_FORMAT_KERAS_H5 }
    )pb");
    WriteFile(*repo_ + "/broken/config.pbtxt", "name: \"broken\"\narchitecture { classes: 2 }\n");
    // A Keras file that crashes libhdf5 (tests/workers/data): only its weight set fails.
    WriteFile(*repo_ + "/hostile/config.pbtxt", R"pb(
      name: "hostile"
      architecture { backbone: "mobilenetv2" num_classes: 2 }
      input { height: 64 width: 64 }
      class_names: ["a", "b"]
      weights { file: "hostile.h5" format: WEIGHTS_FORMAT_KERAS_H5 }
    )pb");
    std::filesystem::copy_file(
        std::string(DEEPLAB_SOURCE_DIR) + "/tests/workers/data/libhdf5_crash_global_heap.h5",
        *repo_ + "/hostile/hostile.h5");
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*repo_);
    delete repo_;
  }
  static std::string* repo_;
};
std::string* WorkerProcessTest::repo_ = nullptr;

v1::InferRequest PhotoRequest(const std::string& model, const std::vector<std::string>& names) {
  v1::InferRequest request;
  request.set_model(model);
  for (const std::string& name : names) {
    v1::InferItem* item = request.add_items();
    item->set_id(name);
    item->mutable_image()->set_encoded(ReadFile(std::string(DEEPLAB_PHOTOS_DIR) + "/" + name));
    item->mutable_outputs()->set_label_png(true);
    item->mutable_outputs()->set_class_stats(true);
  }
  return request;
}

TEST_F(WorkerProcessTest, ServesHealthStatusReflectionInferAndMetrics) {
  Server worker = StartWorker(*repo_);

  auto health = grpc::health::v1::Health::NewStub(worker.channel);
  for (const std::string service : {"", "deeplab.v1.Worker"}) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }

  auto stub = v1::Worker::NewStub(worker.channel);
  {
    grpc::ClientContext ctx;
    v1::StatusResponse status;
    ASSERT_TRUE(stub->Status(&ctx, v1::StatusRequest(), &status).ok());
    std::map<std::string, v1::WeightSetStatus> sets;
    for (const auto& ws : status.weight_sets()) sets[ws.name()] = ws;
    ASSERT_EQ(sets.size(), 5u);
    EXPECT_TRUE(sets["colour"].ready());
    EXPECT_TRUE(sets["slow"].ready());
    EXPECT_FALSE(sets["missing"].ready());
    EXPECT_THAT(sets["missing"].reason(), HasSubstr("absent.h5"));
    EXPECT_FALSE(sets["broken"].ready());
    EXPECT_THAT(sets["broken"].reason(), HasSubstr("config.pbtxt"));
    EXPECT_FALSE(sets["hostile"].ready());
    EXPECT_THAT(sets["hostile"].reason(), HasSubstr("HDF5 library"));
    EXPECT_THAT(sets["hostile"].reason(), HasSubstr("hostile.h5"));
    EXPECT_EQ(status.device(), "cpu");
    EXPECT_EQ(status.free_batch_slots(), status.batch_slots());
  }

  // Server reflection lists our service (list_services, field 7 of the request).
  {
    grpc::GenericStub generic(worker.channel);
    grpc::ClientContext ctx;
    grpc::CompletionQueue cq;
    auto call = generic.PrepareCall(
        &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    void* tag;
    bool ok;
    call->StartCall(reinterpret_cast<void*>(1));
    ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
    const char list_services[] = {0x3A, 0x01, '*'};
    grpc::Slice slice(list_services, sizeof(list_services));
    grpc::ByteBuffer request(&slice, 1);
    call->Write(request, reinterpret_cast<void*>(2));
    ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
    grpc::ByteBuffer response;
    call->Read(&response, reinterpret_cast<void*>(3));
    ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(response.Dump(&slices).ok());
    std::string bytes;
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    EXPECT_THAT(bytes, HasSubstr("deeplab.v1.Worker"));
    EXPECT_THAT(bytes, HasSubstr("grpc.health.v1.Health"));
    ctx.TryCancel();
    call->Finish(new grpc::Status, reinterpret_cast<void*>(4));
    while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(4)) {
    }
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
  }

  // Real photos (EXIF-rotated phone JPEGs and an RGBA PNG) come back at their own size.
  {
    const std::vector<std::string> photos = {"cat.jpg", "image1.jpg", "rgba.png"};
    v1::InferRequest request = PhotoRequest("colour", photos);
    request.add_items()->set_id("empty");
    grpc::ClientContext ctx;
    v1::InferResponse response;
    grpc::Status s = stub->Infer(&ctx, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(response.items_size(), 4);
    for (size_t i = 0; i < photos.size(); ++i) {
      const v1::ItemResult& item = response.items(static_cast<int>(i));
      ASSERT_EQ(item.code(), 0) << photos[i] << ": " << item.message();
      absl::StatusOr<cv::Mat> rgb = DecodeImage(
          ReadFile(std::string(DEEPLAB_PHOTOS_DIR) + "/" + photos[i]), ImageLimits());
      ASSERT_TRUE(rgb.ok());
      EXPECT_EQ(item.result().height(), rgb->rows) << photos[i];
      EXPECT_EQ(item.result().width(), rgb->cols) << photos[i];
      absl::StatusOr<cv::Mat> labels = DecodeImage(item.result().label_png(), ImageLimits());
      ASSERT_TRUE(labels.ok());
      EXPECT_EQ(labels->rows, rgb->rows);
    }
    EXPECT_EQ(response.items(3).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
    EXPECT_THAT(response.items(3).message(), HasSubstr("empty"));
  }

  // Whole-batch refusals carry the right codes.
  {
    grpc::ClientContext ctx;
    v1::InferResponse response;
    EXPECT_EQ(stub->Infer(&ctx, PhotoRequest("nope", {"image2.jpg"}), &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
    grpc::ClientContext ctx2;
    EXPECT_EQ(stub->Infer(&ctx2, PhotoRequest("missing", {"image2.jpg"}), &response).error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }

  const std::string metrics = Scrape(worker.metrics_address);
  for (const char* name :
       {"deeplab_worker_items_total{code=\"OK\",model=\"colour\"} 3",
        "deeplab_worker_items_total{code=\"INVALID_ARGUMENT\",model=\"colour\"} 1",
        "deeplab_worker_batches_total", "deeplab_worker_batch_size_bucket",
        "deeplab_worker_stage_seconds_bucket{model=\"colour\",stage=\"decode\"",
        "stage=\"forward\"", "stage=\"encode\"", "deeplab_worker_weight_set_ready{model=\"missing\"} 0",
        "deeplab_worker_weight_set_ready{model=\"colour\"} 1", "deeplab_worker_batch_slots",
        "deeplab_process_resident_memory_bytes"}) {
    EXPECT_THAT(metrics, HasSubstr(name));
  }

  worker.process.Signal(SIGTERM);
  auto code = worker.process.Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

// After one huge image the worker gives the memory it needed back: before, its resident
// memory stayed at the peak of the largest image it had seen.
TEST_F(WorkerProcessTest, MemoryGrownForAHugeImageIsReturned) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's allocator keeps freed memory in quarantine";
#endif
  Server worker = StartWorker(*repo_);
  auto stub = v1::Worker::NewStub(worker.channel);
  const double before =
      MetricValue(Scrape(worker.metrics_address), "deeplab_process_resident_memory_bytes");
  cv::Mat huge(6000, 7000, CV_8UC3, cv::Scalar(10, 200, 30));  // 42 MP, compresses to little
  v1::InferRequest request;
  request.set_model("colour");
  v1::InferItem* item = request.add_items();
  item->set_id("huge");
  item->mutable_image()->set_encoded(EncodePng(huge));
  item->mutable_outputs()->set_label_png(true);
  item->mutable_outputs()->set_probabilities(true);
  grpc::ClientContext ctx;
  v1::InferResponse response;
  ASSERT_TRUE(stub->Infer(&ctx, request, &response).ok());
  ASSERT_EQ(response.items(0).code(), 0) << response.items(0).message();
  EXPECT_EQ(response.items(0).result().width(), 7000);
  response.Clear();
  // The memory goes back at the next Status poll (a gateway polls every second).
  grpc::ClientContext status_ctx;
  v1::StatusResponse status;
  ASSERT_TRUE(stub->Status(&status_ctx, v1::StatusRequest(), &status).ok());
  const double after =
      MetricValue(Scrape(worker.metrics_address), "deeplab_process_resident_memory_bytes");
  std::cerr << "worker resident memory: " << before / 1e6 << " MB before, " << after / 1e6
            << " MB after a 42 MP image\n";
  // The image alone is 126 MB decoded and 126 MB of probabilities at the original size.
  EXPECT_LT(after - before, 120e6);
}

// Phone photos (restart markers after every row of blocks) are decoded in bands on several
// threads: the labels are the ones one thread gives, byte for byte.
TEST_F(WorkerProcessTest, PhonePhotosDecodedInBandsGiveTheLabelsOfOneThread) {
  std::vector<std::string> labels[2];
  for (int i = 0; i < 2; ++i) {
    Server worker = StartWorker(*repo_, "ready",
                                {"--load", "colour", "--decode-threads", i == 0 ? "3" : "1"});
    auto stub = v1::Worker::NewStub(worker.channel);
    const v1::InferRequest request = PhotoRequest("colour", {"cat.jpg", "dog_baxter.jpg"});
    grpc::ClientContext ctx;
    v1::InferResponse response;
    ASSERT_TRUE(stub->Infer(&ctx, request, &response).ok());
    for (const auto& result : response.items()) {
      ASSERT_EQ(result.code(), 0) << result.message();
      labels[i].push_back(result.result().label_png());
    }
    // Both photos went through the fast path (for a 64x64 input: 1/8 scale), in bands only
    // where asked.
    const std::string metrics = Scrape(worker.metrics_address);
    const std::string scale = "deeplab_worker_decoded_images_total{model=\"colour\",scale=\"1/8\",";
    EXPECT_EQ(MetricValue(metrics, scale + "threads=\"bands\"}"), i == 0 ? 2 : -1) << metrics;
    EXPECT_EQ(MetricValue(metrics, scale + "threads=\"one\"}"), i == 0 ? -1 : 2) << metrics;
  }
  ASSERT_EQ(labels[0].size(), 2u);
  EXPECT_EQ(labels[0], labels[1]);

  // A negative thread count is a bad command line.
  absl::StatusOr<deeplab::testing::ProgramResult> bad = deeplab::testing::RunProgram(
      {DEEPLAB_WORKER_BINARY, "--models", *repo_, "--decode-threads", "-1"}, absl::Seconds(60));
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_EQ(bad->exit_code, 2);
  EXPECT_THAT(bad->err, HasSubstr("--decode-threads must be 0 (one per core) or more, got -1"));
}

// Thread counts that default to one per core count the cores the worker may run on (its
// affinity mask, and a cgroup CPU quota), not the machine's: under `taskset -c 0` it runs
// one LibTorch thread, not one per CPU of the machine.
TEST_F(WorkerProcessTest, DefaultThreadsFollowTheCoresItMayUse) {
  absl::StatusOr<deeplab::testing::ChildProcess> worker = deeplab::testing::ChildProcess::Start(
      {"/usr/bin/taskset", "-c", "0", DEEPLAB_WORKER_BINARY, "--models", *repo_, "--load",
       "colour", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  absl::StatusOr<std::string> line = worker->WaitForLine("deeplab-worker: cores ", absl::Seconds(60));
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(*line, HasSubstr("1 (affinity 1,"));
  EXPECT_THAT(*line, HasSubstr("threads 1, pipeline threads 1,"));
  worker->Signal(SIGTERM);
  absl::StatusOr<int> code = worker->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();
}

// oneDNN fixes the size of its primitive cache when the process first uses it: the worker
// sets it before loading anything, from --primitive-cache-capacity unless the environment
// says otherwise, and its start line says what oneDNN took.
TEST_F(WorkerProcessTest, SizesOneDnnsPrimitiveCacheBeforeLoading) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"/usr/bin/env", "-u", "ONEDNN_PRIMITIVE_CACHE_CAPACITY", "-u",
        "DNNL_PRIMITIVE_CACHE_CAPACITY", DEEPLAB_WORKER_BINARY, "--primitive-cache-capacity",
        "3000"},
       "oneDNN primitive cache 3000"},
      {{"/usr/bin/env", "-u", "DNNL_PRIMITIVE_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY=555",
        DEEPLAB_WORKER_BINARY, "--primitive-cache-capacity", "3000"},
       "oneDNN primitive cache 555"},
  };
  for (const auto& [command, expected] : cases) {
    std::vector<std::string> argv = command;
    for (const char* arg : {"--models", repo_->c_str(), "--load", "colour", "--host", "127.0.0.1",
                            "--port", "0", "--metrics-port", "0"}) {
      argv.push_back(arg);
    }
    absl::StatusOr<deeplab::testing::ChildProcess> worker =
        deeplab::testing::ChildProcess::Start(argv);
    ASSERT_TRUE(worker.ok()) << worker.status();
    absl::StatusOr<std::string> line =
        worker->WaitForLine("deeplab-worker: cores ", absl::Seconds(60));
    ASSERT_TRUE(line.ok()) << line.status();
    EXPECT_THAT(*line, HasSubstr(expected));
    worker->Signal(SIGTERM);
    absl::StatusOr<int> code = worker->Wait(absl::Seconds(60));
    ASSERT_TRUE(code.ok()) << code.status();
  }

  absl::StatusOr<deeplab::testing::ProgramResult> bad = deeplab::testing::RunProgram(
      {DEEPLAB_WORKER_BINARY, "--models", *repo_, "--primitive-cache-capacity", "-1"},
      absl::Seconds(60));
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_EQ(bad->exit_code, 2);
  EXPECT_THAT(bad->err, HasSubstr("--primitive-cache-capacity must be 0 (no cache) or more"));
}

TEST_F(WorkerProcessTest, SigtermDrainsInFlightBatchesAndRefusesNewOnes) {
  Server worker = StartWorker(*repo_);
  auto stub = v1::Worker::NewStub(worker.channel);
  // Large photos, so that the batch stays in flight long enough (hundreds of ms of
  // decoding) for the polling below to see it even on a loaded machine.
  v1::InferRequest slow_request =
      PhotoRequest("slow", {"dog_baxter.jpg", "image1.jpg", "dog_baxter.jpg", "image3.jpg",
                            "dog_baxter.jpg", "image2.jpg"});
  v1::InferResponse slow_response;
  grpc::ClientContext slow_ctx;
  std::future<grpc::Status> slow = std::async(std::launch::async, [&] {
    return stub->Infer(&slow_ctx, slow_request, &slow_response);
  });
  // Wait until the batch is in flight (a slot taken), then ask the worker to stop.
  for (int i = 0; i < 2000; ++i) {
    grpc::ClientContext ctx;
    v1::StatusResponse status;
    ASSERT_TRUE(stub->Status(&ctx, v1::StatusRequest(), &status).ok());
    if (status.free_batch_slots() < status.batch_slots()) break;
    ASSERT_EQ(slow.wait_for(std::chrono::milliseconds(5)), std::future_status::timeout)
        << "the batch finished before the test saw it in flight";
  }
  worker.process.Signal(SIGTERM);
  ASSERT_TRUE(worker.process.WaitForLine("deeplab-worker: signal", absl::Seconds(10)).ok());

  // New work is refused with UNAVAILABLE (retry elsewhere) while the old batch finishes.
  grpc::ClientContext ctx;
  v1::InferResponse refused;
  EXPECT_EQ(stub->Infer(&ctx, PhotoRequest("colour", {"image2.jpg"}), &refused).error_code(),
            grpc::StatusCode::UNAVAILABLE);

  grpc::Status s = slow.get();
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(slow_response.items_size(), 6);
  for (const auto& item : slow_response.items()) EXPECT_EQ(item.code(), 0) << item.message();
  auto code = worker.process.Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

// --device cuda exports the GPU's memory through NVML: here a fake libnvidia-ml
// (tests/common/fake_nvml.cc) put in front by LD_LIBRARY_PATH, with two GPUs of 80 and
// 40 GiB. CUDA_VISIBLE_DEVICES picks which GPU cuda:0 is. A CPU LibTorch cannot load the
// weight set onto CUDA, so it is not ready; the metrics come all the same.
TEST_F(WorkerProcessTest, ACudaWorkerExportsItsGpusMemoryFromNvml) {
  const std::string library_path = std::string("LD_LIBRARY_PATH=") + DEEPLAB_FAKE_NVML_DIR;
  const std::vector<std::string> args = {"--models", *repo_, "--load", "colour", "--threads",
                                         "1", "--device", "cuda"};
  const double gib = 1 << 30;
  struct Case {
    std::vector<std::string> env;
    double total;
  };
  for (const Case& c : {Case{{"-u", "CUDA_VISIBLE_DEVICES", library_path}, 80 * gib},
                        Case{{"CUDA_VISIBLE_DEVICES=GPU-11111111-fake", library_path}, 40 * gib},
                        Case{{"CUDA_VISIBLE_DEVICES=1,0", library_path}, 40 * gib}}) {
    std::vector<std::string> wrapper = {"/usr/bin/env"};
    wrapper.insert(wrapper.end(), c.env.begin(), c.env.end());
    Server worker = deeplab::testing::StartServer(DEEPLAB_WORKER_BINARY, "deeplab-worker", args,
                                                  "", wrapper);
    const std::string metrics = Scrape(worker.metrics_address);
    const std::string where = absl::StrJoin(c.env, " ");
    EXPECT_EQ(MetricValue(metrics, "deeplab_device_memory_total_bytes"), c.total) << where;
    EXPECT_GT(MetricValue(metrics, "deeplab_device_memory_used_bytes"), gib) << where;
    // Read at each scrape: the fake finds 1 MiB more in use every time.
    EXPECT_GT(MetricValue(Scrape(worker.metrics_address), "deeplab_device_memory_used_bytes"),
              MetricValue(metrics, "deeplab_device_memory_used_bytes"))
        << where;
    worker.process.Signal(SIGTERM);
    EXPECT_TRUE(worker.process.Wait(absl::Seconds(30)).ok());
  }

  // Without NVML (no driver on this machine) the worker runs and leaves the families out.
  if (void* nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL)) {
    dlclose(nvml);
    GTEST_SKIP() << "this machine has NVML: its absence cannot be tested here";
  }
  // The wrapper keeps the worker's stderr in a file, to count the line that says why.
  const std::string log = *repo_ + "/no_nvml.stderr";
  Server worker = deeplab::testing::StartServer(
      DEEPLAB_WORKER_BINARY, "deeplab-worker", args, "",
      {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>" + log});
  const std::string metrics = Scrape(worker.metrics_address);
  EXPECT_THAT(metrics, HasSubstr("deeplab_process_resident_memory_bytes"));
  EXPECT_THAT(metrics, Not(HasSubstr("deeplab_device_memory")));
  Scrape(worker.metrics_address);
  worker.process.Signal(SIGTERM);
  EXPECT_TRUE(worker.process.Wait(absl::Seconds(30)).ok());
  const std::string err = ReadFile(log);
  const std::string why = "deeplab-worker: device memory metrics off: cannot load libnvidia-ml.so.1";
  EXPECT_THAT(err, HasSubstr(why));
  EXPECT_EQ(err.find(why), err.rfind(why)) << "said more than once:\n" << err;
}

TEST(ShippedRepositoryTest, ListsEveryWeightSetAndSaysHowToFetchMissingWeights) {
  // "ready" comes once every weight set has loaded or failed to (the demo's weights are in
  // the repository, so it is ready; the published ones are missing here).
  Server worker = StartWorker(std::string(DEEPLAB_SOURCE_DIR) + "/models", "ready");
  auto stub = v1::Worker::NewStub(worker.channel);
  grpc::ClientContext ctx;
  v1::StatusResponse status;
  ASSERT_TRUE(stub->Status(&ctx, v1::StatusRequest(), &status).ok());
  std::set<std::string> names;
  for (const auto& ws : status.weight_sets()) {
    names.insert(ws.name());
    if (ws.name().rfind("pascal", 0) == 0 || ws.name().rfind("cityscapes", 0) == 0 ||
        ws.name().rfind("pathology", 0) == 0) {
      EXPECT_FALSE(ws.ready()) << ws.name();
      EXPECT_THAT(ws.reason(), HasSubstr("fetch_weights.sh")) << ws.name();
    }
  }
  for (const auto& ws : status.weight_sets()) {
    if (ws.name() == "demo") {
      EXPECT_TRUE(ws.ready()) << ws.reason();
    }
  }
  for (const char* name : {"demo", "pascal_voc", "pascal_voc_mobilenetv2", "cityscapes",
                           "cityscapes_mobilenetv2", "pathology_digestpath", "pathology_paip",
                           "pathology_camelyon"}) {
    EXPECT_TRUE(names.count(name)) << name;
  }
  worker.process.Signal(SIGTERM);
  EXPECT_TRUE(worker.process.Wait(absl::Seconds(30)).ok());
}

}  // namespace
}  // namespace deeplab
