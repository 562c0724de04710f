// Process metrics, shared by the gateway and the worker, read at scrape time:
// deeplab_process_resident_memory_bytes and, where `device_memory` is given (CUDA),
// deeplab_device_memory_used_bytes. Register the result with the Exposer and keep it alive:
// the exposer holds collectables weakly.
#ifndef DEEPLAB_COMMON_PROCESS_METRICS_H_
#define DEEPLAB_COMMON_PROCESS_METRICS_H_

#include <prometheus/collectable.h>

#include <functional>
#include <memory>

namespace deeplab {

std::shared_ptr<prometheus::Collectable> MakeProcessCollector(
    std::function<double()> device_memory = nullptr);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_PROCESS_METRICS_H_
