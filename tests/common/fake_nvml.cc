// A stand-in for libnvidia-ml.so.1 with the entry points common/nvml.cc uses, so the real
// loading and reading code runs in tests on machines without a GPU. Two GPUs:
//   index 0, "GPU-00000000-fake", 80 GiB; index 1, "GPU-11111111-fake", 40 GiB.
// Each memory read finds 1 MiB more in use than the last, so a test can tell a fresh read
// from a cached one. FAKE_NVML_INIT_ERROR=N makes nvmlInit_v2 fail with N.
#include <cstdlib>
#include <cstring>

namespace {
struct FakeDevice {
  const char* uuid;
  unsigned long long total;
  unsigned long long used;
};
FakeDevice devices[2] = {{"GPU-00000000-fake", 80ull << 30, 1ull << 30},
                         {"GPU-11111111-fake", 40ull << 30, 2ull << 30}};
int live_inits = 0;
}  // namespace

extern "C" {

struct NvmlMemory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

int nvmlInit_v2() {
  if (const char* error = std::getenv("FAKE_NVML_INIT_ERROR")) return std::atoi(error);
  ++live_inits;
  return 0;
}

int nvmlShutdown() {
  --live_inits;
  return 0;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned index, void** device) {
  if (index >= 2) return 2;  // NVML_ERROR_INVALID_ARGUMENT
  *device = &devices[index];
  return 0;
}

int nvmlDeviceGetHandleByUUID(const char* uuid, void** device) {
  for (FakeDevice& d : devices) {
    if (std::strcmp(d.uuid, uuid) == 0) {
      *device = &d;
      return 0;
    }
  }
  return 6;  // NVML_ERROR_NOT_FOUND
}

int nvmlDeviceGetMemoryInfo(void* device, NvmlMemory* memory) {
  auto* d = static_cast<FakeDevice*>(device);
  d->used += 1ull << 20;
  memory->total = d->total;
  memory->used = d->used;
  memory->free = d->total - d->used;
  return 0;
}

const char* nvmlErrorString(int code) {
  switch (code) {
    case 2: return "Invalid Argument";
    case 6: return "Not Found";
    case 9: return "Driver Not Loaded";
    default: return "Unknown Error";
  }
}

// Not NVML: how many nvmlInit_v2 calls have not been matched by nvmlShutdown.
int fake_nvml_live_inits() { return live_inits; }

}  // extern "C"
