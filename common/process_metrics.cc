#include "common/process_metrics.h"

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace deeplab {
namespace {

class ProcessCollector : public prometheus::Collectable {
 public:
  explicit ProcessCollector(DeviceMemoryReader device_memory)
      : device_memory_(std::move(device_memory)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> families;
    families.push_back(Gauge("deeplab_process_resident_memory_bytes",
                             "Resident memory of this process", ResidentBytes()));
    if (device_memory_) {
      if (const std::optional<DeviceMemory> memory = device_memory_()) {
        families.push_back(Gauge("deeplab_device_memory_used_bytes",
                                 "Memory in use on this process's GPU, by every process on it",
                                 memory->used_bytes));
        families.push_back(Gauge("deeplab_device_memory_total_bytes",
                                 "Memory of this process's GPU", memory->total_bytes));
      }
    }
    return families;
  }

 private:
  static prometheus::MetricFamily Gauge(const std::string& name, const std::string& help,
                                        double value) {
    prometheus::MetricFamily family;
    family.name = name;
    family.help = help;
    family.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric metric;
    metric.gauge.value = value;
    family.metric.push_back(metric);
    return family;
  }

  static double ResidentBytes() {
    std::ifstream statm("/proc/self/statm");
    long pages_total = 0, pages_resident = 0;
    statm >> pages_total >> pages_resident;
    return static_cast<double>(pages_resident) * sysconf(_SC_PAGESIZE);
  }

  DeviceMemoryReader device_memory_;
};

}  // namespace

std::shared_ptr<prometheus::Collectable> MakeProcessCollector(
    DeviceMemoryReader device_memory) {
  return std::make_shared<ProcessCollector>(std::move(device_memory));
}

}  // namespace deeplab
