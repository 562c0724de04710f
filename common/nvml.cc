#include "common/nvml.h"

#include <dlfcn.h>

#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace deeplab {

// The few NVML entry points used, with the C signatures of nvml.h (stable since NVML 5).
// nvmlReturn_t is a C enum (an int); 0 is NVML_SUCCESS. nvmlDevice_t is an opaque pointer.
namespace {
using NvmlReturn = int;
using NvmlHandle = void*;
struct NvmlMemory {  // nvmlMemory_t
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
constexpr NvmlReturn kNvmlSuccess = 0;
}  // namespace

struct NvmlDevice::Api {
  NvmlReturn (*init)();
  NvmlReturn (*shutdown)();
  NvmlReturn (*by_index)(unsigned, NvmlHandle*);
  NvmlReturn (*by_uuid)(const char*, NvmlHandle*);
  NvmlReturn (*memory)(NvmlHandle, NvmlMemory*);
  const char* (*error_string)(NvmlReturn);

  std::string Error(NvmlReturn code) const {
    const char* text = error_string != nullptr ? error_string(code) : nullptr;
    return text != nullptr ? absl::StrCat(text, " (NVML error ", code, ")")
                           : absl::StrCat("NVML error ", code);
  }
};

absl::StatusOr<NvmlDeviceRef> ResolveNvmlDevice(int cuda_index,
                                                const char* cuda_visible_devices) {
  if (cuda_index < 0) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device index ", cuda_index, " < 0"));
  }
  NvmlDeviceRef ref;
  if (cuda_visible_devices == nullptr) {
    ref.index = static_cast<unsigned>(cuda_index);
    return ref;
  }
  const std::vector<std::string> entries =
      absl::StrSplit(cuda_visible_devices, ',', absl::SkipWhitespace());
  if (static_cast<size_t>(cuda_index) >= entries.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cuda:", cuda_index, " is not among CUDA_VISIBLE_DEVICES='",
                     cuda_visible_devices, "'"));
  }
  const std::string entry(absl::StripAsciiWhitespace(entries[cuda_index]));
  unsigned index = 0;
  if (absl::StartsWith(entry, "GPU-") || absl::StartsWith(entry, "MIG-")) {
    ref.uuid = entry;
  } else if (absl::SimpleAtoi(entry, &index)) {
    ref.index = index;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("CUDA_VISIBLE_DEVICES entry '", entry,
                                                   "' is neither an index nor a GPU-/MIG- UUID"));
  }
  return ref;
}

absl::StatusOr<std::unique_ptr<NvmlDevice>> NvmlDevice::Open(const NvmlDeviceRef& device,
                                                             const std::string& library) {
  void* lib = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load ", library, ": ", why != nullptr ? why : "unknown error",
                     " (it comes with the NVIDIA driver)"));
  }
  auto api = std::make_unique<Api>();
  std::string missing;
  auto find = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, symbol));
    if (fn == nullptr && missing.empty()) missing = symbol;
  };
  find(api->init, "nvmlInit_v2");
  find(api->shutdown, "nvmlShutdown");
  find(api->by_index, "nvmlDeviceGetHandleByIndex_v2");
  find(api->by_uuid, "nvmlDeviceGetHandleByUUID");
  find(api->memory, "nvmlDeviceGetMemoryInfo");
  find(api->error_string, "nvmlErrorString");
  if (!missing.empty()) {
    dlclose(lib);
    return absl::FailedPreconditionError(
        absl::StrCat(library, " has no ", missing, ": not NVML, or older than NVML 5"));
  }
  if (NvmlReturn rc = api->init(); rc != kNvmlSuccess) {
    const std::string error = api->Error(rc);
    dlclose(lib);
    return absl::FailedPreconditionError(absl::StrCat("nvmlInit: ", error));
  }
  NvmlHandle handle = nullptr;
  const std::string name = device.index.has_value() ? absl::StrCat("GPU ", *device.index)
                                                    : absl::StrCat("GPU ", device.uuid);
  const NvmlReturn rc = device.index.has_value() ? api->by_index(*device.index, &handle)
                                                 : api->by_uuid(device.uuid.c_str(), &handle);
  if (rc != kNvmlSuccess) {
    const std::string error = api->Error(rc);
    api->shutdown();
    dlclose(lib);
    return absl::FailedPreconditionError(absl::StrCat("NVML cannot find ", name, ": ", error));
  }
  return std::unique_ptr<NvmlDevice>(new NvmlDevice(lib, std::move(api), handle, name));
}

NvmlDevice::NvmlDevice(void* library, std::unique_ptr<Api> api, void* handle, std::string name)
    : library_(library), api_(std::move(api)), handle_(handle), name_(std::move(name)) {}

NvmlDevice::~NvmlDevice() {
  api_->shutdown();
  dlclose(library_);
}

absl::StatusOr<DeviceMemory> NvmlDevice::Memory() const {
  NvmlMemory memory{};
  if (NvmlReturn rc = api_->memory(handle_, &memory); rc != kNvmlSuccess) {
    return absl::UnavailableError(
        absl::StrCat("nvmlDeviceGetMemoryInfo on ", name_, ": ", api_->Error(rc)));
  }
  return DeviceMemory{static_cast<double>(memory.used), static_cast<double>(memory.total)};
}

DeviceMemoryReader NvmlDevice::Reader(std::shared_ptr<const NvmlDevice> device) {
  return [device = std::move(device)]() -> std::optional<DeviceMemory> {
    absl::StatusOr<DeviceMemory> memory = device->Memory();
    if (!memory.ok()) return std::nullopt;
    return *memory;
  };
}

}  // namespace deeplab
