// common/nvml: which NVML device cuda:K is, and the real dlopen/dlsym/read code run against
// a fake libnvidia-ml (tests/common/fake_nvml.cc); plus the process collector's device
// families.
#include "common/nvml.h"

#include <dlfcn.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/metric_family.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "common/process_metrics.h"

namespace deeplab {
namespace {

using ::testing::HasSubstr;

TEST(ResolveNvmlDeviceTest, WithoutCudaVisibleDevicesTheIndexIsNvmls) {
  auto ref = ResolveNvmlDevice(1, nullptr);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->index, 1u);
  EXPECT_EQ(ref->uuid, "");
}

TEST(ResolveNvmlDeviceTest, CudaVisibleDevicesRenumbers) {
  auto by_index = ResolveNvmlDevice(1, "3,2");
  ASSERT_TRUE(by_index.ok()) << by_index.status();
  EXPECT_EQ(by_index->index, 2u);

  auto by_uuid = ResolveNvmlDevice(0, " GPU-8f2a-11, 0");
  ASSERT_TRUE(by_uuid.ok()) << by_uuid.status();
  EXPECT_FALSE(by_uuid->index.has_value());
  EXPECT_EQ(by_uuid->uuid, "GPU-8f2a-11");

  auto mig = ResolveNvmlDevice(0, "MIG-4b1c");
  ASSERT_TRUE(mig.ok()) << mig.status();
  EXPECT_EQ(mig->uuid, "MIG-4b1c");
}

TEST(ResolveNvmlDeviceTest, BadIndicesAndEntriesSayWhy) {
  EXPECT_THAT(ResolveNvmlDevice(-1, nullptr).status().message(), HasSubstr("< 0"));
  EXPECT_THAT(ResolveNvmlDevice(2, "0,1").status().message(),
              HasSubstr("cuda:2 is not among CUDA_VISIBLE_DEVICES='0,1'"));
  // An empty CUDA_VISIBLE_DEVICES hides every GPU.
  EXPECT_FALSE(ResolveNvmlDevice(0, "").ok());
  EXPECT_THAT(ResolveNvmlDevice(0, "first").status().message(),
              HasSubstr("'first' is neither an index nor a GPU-/MIG- UUID"));
}

class NvmlDeviceTest : public ::testing::Test {
 protected:
  // A handle of our own keeps the fake loaded, and its counters alive, across the
  // NvmlDevice objects that open and close it.
  void SetUp() override {
    lib_ = dlopen(DEEPLAB_FAKE_NVML, RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(lib_, nullptr) << dlerror();
    live_inits_ = reinterpret_cast<int (*)()>(dlsym(lib_, "fake_nvml_live_inits"));
    ASSERT_NE(live_inits_, nullptr);
  }
  void TearDown() override {
    if (lib_ != nullptr) dlclose(lib_);
  }
  // The fake's count of NVML inits not yet shut down.
  int LiveInits() const { return live_inits_(); }

  void* lib_ = nullptr;
  int (*live_inits_)() = nullptr;
};

TEST_F(NvmlDeviceTest, ReadsTheMemoryOfTheDeviceByIndexAndByUuid) {
  auto first = NvmlDevice::Open(NvmlDeviceRef{0u, ""}, DEEPLAB_FAKE_NVML);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)->name(), "GPU 0");
  auto memory = (*first)->Memory();
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_EQ(memory->total_bytes, 80.0 * (1ull << 30));
  EXPECT_GT(memory->used_bytes, 1.0 * (1ull << 30));
  // Read now, not cached: the fake uses 1 MiB more on every read.
  auto again = (*first)->Memory();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->used_bytes - memory->used_bytes, 1 << 20);

  auto second = NvmlDevice::Open(NvmlDeviceRef{std::nullopt, "GPU-11111111-fake"},
                                 DEEPLAB_FAKE_NVML);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->name(), "GPU GPU-11111111-fake");
  auto other = (*second)->Memory();
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->total_bytes, 40.0 * (1ull << 30));
}

TEST_F(NvmlDeviceTest, ClosingShutsNvmlDown) {
  {
    auto device = NvmlDevice::Open(NvmlDeviceRef{0u, ""}, DEEPLAB_FAKE_NVML);
    ASSERT_TRUE(device.ok()) << device.status();
    EXPECT_EQ(LiveInits(), 1);
  }
  EXPECT_EQ(LiveInits(), 0);
  // A device NVML does not have: the init is undone too.
  auto missing = NvmlDevice::Open(NvmlDeviceRef{5u, ""}, DEEPLAB_FAKE_NVML);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.status().message(), HasSubstr("NVML cannot find GPU 5: Invalid Argument"));
  EXPECT_EQ(LiveInits(), 0);
  auto unknown = NvmlDevice::Open(NvmlDeviceRef{std::nullopt, "GPU-nope"}, DEEPLAB_FAKE_NVML);
  EXPECT_THAT(unknown.status().message(), HasSubstr("GPU GPU-nope: Not Found"));
}

TEST_F(NvmlDeviceTest, NoLibraryNotNvmlOrNoDriverAreClearErrors) {
  auto none = NvmlDevice::Open(NvmlDeviceRef{0u, ""}, "libnvidia-ml-absent.so.1");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(none.status().message(), HasSubstr("cannot load libnvidia-ml-absent.so.1"));
  EXPECT_THAT(none.status().message(), HasSubstr("NVIDIA driver"));

  auto not_nvml = NvmlDevice::Open(NvmlDeviceRef{0u, ""}, "libm.so.6");
  ASSERT_FALSE(not_nvml.ok());
  EXPECT_THAT(not_nvml.status().message(), HasSubstr("libm.so.6 has no nvmlInit_v2"));

  ASSERT_EQ(setenv("FAKE_NVML_INIT_ERROR", "9", 1), 0);
  auto no_driver = NvmlDevice::Open(NvmlDeviceRef{0u, ""}, DEEPLAB_FAKE_NVML);
  unsetenv("FAKE_NVML_INIT_ERROR");
  ASSERT_FALSE(no_driver.ok());
  EXPECT_THAT(no_driver.status().message(),
              HasSubstr("nvmlInit: Driver Not Loaded (NVML error 9)"));
}

const prometheus::MetricFamily* Find(const std::vector<prometheus::MetricFamily>& families,
                                     const std::string& name) {
  for (const auto& f : families) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

TEST(ProcessCollectorTest, DeviceFamiliesOnlyWithAReaderAndAGoodRead) {
  auto plain = MakeProcessCollector()->Collect();
  ASSERT_NE(Find(plain, "deeplab_process_resident_memory_bytes"), nullptr);
  EXPECT_GT(Find(plain, "deeplab_process_resident_memory_bytes")->metric[0].gauge.value, 0);
  EXPECT_EQ(Find(plain, "deeplab_device_memory_used_bytes"), nullptr);

  auto device = NvmlDevice::Open(NvmlDeviceRef{1u, ""}, DEEPLAB_FAKE_NVML);
  ASSERT_TRUE(device.ok()) << device.status();
  // The collector keeps the device open after the last other owner lets go.
  auto collector = MakeProcessCollector(NvmlDevice::Reader(std::move(*device)));
  auto with_gpu = collector->Collect();
  ASSERT_NE(Find(with_gpu, "deeplab_device_memory_used_bytes"), nullptr);
  ASSERT_NE(Find(with_gpu, "deeplab_device_memory_total_bytes"), nullptr);
  EXPECT_GT(Find(with_gpu, "deeplab_device_memory_used_bytes")->metric[0].gauge.value,
            2.0 * (1ull << 30));
  EXPECT_EQ(Find(with_gpu, "deeplab_device_memory_total_bytes")->metric[0].gauge.value,
            40.0 * (1ull << 30));

  auto failing = MakeProcessCollector([]() -> std::optional<DeviceMemory> {
    return std::nullopt;
  })->Collect();
  EXPECT_NE(Find(failing, "deeplab_process_resident_memory_bytes"), nullptr);
  EXPECT_EQ(Find(failing, "deeplab_device_memory_used_bytes"), nullptr);
}

}  // namespace
}  // namespace deeplab
