#ifndef DEEPLAB_COMMON_CPU_COUNT_H_
#define DEEPLAB_COMMON_CPU_COUNT_H_

// How many cores this process may use, for thread counts that default to "one per core".
// std::thread::hardware_concurrency() counts the machine's CPUs: in a container limited to
// 2 CPUs on a 64-core node, or under taskset, it still says 64, and 64 LibTorch threads
// sharing 2 CPUs of quota run slower than 2.

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace deeplab {

struct CpuCount {
  int usable = 1;                     // what thread counts default to: at least 1
  int affinity = 1;                   // CPUs in this process's affinity mask
  std::optional<double> quota;        // a cgroup CPU limit, in CPUs, where one is set
  std::string Describe() const;       // "2 (affinity 2, cgroup quota 1.5 CPUs)"
};

// The affinity mask's CPUs, capped by the cgroup CPU quota (v2 cpu.max, v1
// cpu.cfs_quota_us / cpu.cfs_period_us, the tightest of the process's cgroup and its
// ancestors) rounded up. Read once, then cached.
const CpuCount& UsableCores();

// The parts, for tests. A cgroup v2 cpu.max ("QUOTA PERIOD" or "max PERIOD"), in CPUs.
std::optional<double> ParseCgroupV2CpuMax(absl::string_view cpu_max);
// cgroup v1 cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us, in CPUs.
std::optional<double> ParseCgroupV1Quota(absl::string_view quota_us, absl::string_view period_us);
// min(affinity, ceil(quota)), at least 1.
int CoresFrom(int affinity, std::optional<double> quota);
// The tightest CPU limit of the cgroups that `proc_self_cgroup` (the text of
// /proc/self/cgroup) lists, with the cgroup file systems mounted under `mount_root`
// (/sys/fs/cgroup: v2 there, v1 in its cpu,cpuacct or cpu folder).
std::optional<double> QuotaFromProcCgroup(absl::string_view proc_self_cgroup,
                                          const std::string& mount_root);
// The tightest cpu limit under `root` (a cgroup mount, e.g. /sys/fs/cgroup) for the cgroup
// path `path` of /proc/self/cgroup, from it up to the mount root. v2 reads cpu.max; v1 reads
// cpu.cfs_quota_us and cpu.cfs_period_us.
std::optional<double> CgroupQuota(const std::string& root, const std::string& path, bool v2);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_CPU_COUNT_H_
