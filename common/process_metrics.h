// Process metrics, shared by the gateway and the worker, read at scrape time:
// deeplab_process_resident_memory_bytes and, where a device memory reader is given (CUDA),
// deeplab_device_memory_used_bytes and deeplab_device_memory_total_bytes. Register the
// result with the Exposer and keep it alive: the exposer holds collectables weakly.
#ifndef DEEPLAB_COMMON_PROCESS_METRICS_H_
#define DEEPLAB_COMMON_PROCESS_METRICS_H_

#include <prometheus/collectable.h>

#include <functional>
#include <memory>
#include <optional>

namespace deeplab {

struct DeviceMemory {
  double used_bytes = 0;
  double total_bytes = 0;
};

// Called at each scrape; nullopt (a failed read) leaves the device families out of that
// scrape rather than exporting a made-up value.
using DeviceMemoryReader = std::function<std::optional<DeviceMemory>()>;

std::shared_ptr<prometheus::Collectable> MakeProcessCollector(
    DeviceMemoryReader device_memory = nullptr);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_PROCESS_METRICS_H_
