// Device memory of an NVIDIA GPU, read through NVML (libnvidia-ml.so.1, which ships with
// the driver and which the NVIDIA container toolkit mounts into GPU containers). The library
// is loaded at run time, so nothing here needs CUDA to build, and a worker without it still
// starts: the caller turns the metric off and says why.
//
// NVML sees the whole device: `used` counts every process on the GPU, not only this one.
// In Kubernetes each worker pod is given its own GPU, so the two are the same there.
#ifndef DEEPLAB_COMMON_NVML_H_
#define DEEPLAB_COMMON_NVML_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/process_metrics.h"

namespace deeplab {

// Which NVML device a CUDA device index is. NVML ignores CUDA_VISIBLE_DEVICES and counts
// every GPU the process can see, so cuda:K is the K-th entry of CUDA_VISIBLE_DEVICES when it
// is set (a "GPU-..." or "MIG-..." UUID, or an index), and NVML index K otherwise. An index
// entry is taken as NVML's index, which is CUDA's when CUDA_DEVICE_ORDER=PCI_BUS_ID (and on
// machines whose GPUs are all alike).
struct NvmlDeviceRef {
  std::optional<unsigned> index;  // set, or else
  std::string uuid;
};

// `cuda_visible_devices` is the variable's value, or nullptr when unset. INVALID_ARGUMENT
// when K is negative or past the list's end, or the entry is neither UUID nor index.
absl::StatusOr<NvmlDeviceRef> ResolveNvmlDevice(int cuda_index,
                                                const char* cuda_visible_devices);

class NvmlDevice {
 public:
  // Loads `library` (a name for the loader's search path, or a path), initializes NVML and
  // finds the device. FAILED_PRECONDITION naming the library, symbol or NVML error when any
  // step fails.
  static absl::StatusOr<std::unique_ptr<NvmlDevice>> Open(
      const NvmlDeviceRef& device, const std::string& library = "libnvidia-ml.so.1");
  ~NvmlDevice();  // shuts NVML down and unloads the library
  NvmlDevice(const NvmlDevice&) = delete;
  NvmlDevice& operator=(const NvmlDevice&) = delete;

  // Memory in use and in total, read now. Thread-safe (NVML is).
  absl::StatusOr<DeviceMemory> Memory() const;

  // "GPU 0" or "GPU GPU-8f2a...": for log lines.
  const std::string& name() const { return name_; }

  // For MakeProcessCollector: reads `device` at each scrape (nullopt when a read fails), and
  // keeps it open while the collector, or a scrape in flight, needs it.
  static DeviceMemoryReader Reader(std::shared_ptr<const NvmlDevice> device);

 private:
  struct Api;
  NvmlDevice(void* library, std::unique_ptr<Api> api, void* handle, std::string name);

  void* library_;
  std::unique_ptr<Api> api_;
  void* handle_;
  std::string name_;
};

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_NVML_H_
