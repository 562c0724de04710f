#include "common/cpu_count.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace deeplab {
namespace {

std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

int AffinityCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::optional<double> Tighter(std::optional<double> a, std::optional<double> b) {
  if (!a.has_value()) return b;
  if (!b.has_value()) return a;
  return std::min(*a, *b);
}

CpuCount Measure() {
  CpuCount count;
  count.affinity = AffinityCpus();
  if (std::optional<std::string> cgroups = ReadSmallFile("/proc/self/cgroup")) {
    count.quota = QuotaFromProcCgroup(*cgroups, "/sys/fs/cgroup");
  }
  count.usable = CoresFrom(count.affinity, count.quota);
  return count;
}

}  // namespace

std::string CpuCount::Describe() const {
  return absl::StrCat(usable, " (affinity ", affinity,
                      quota.has_value() ? absl::StrCat(", cgroup quota ", *quota, " CPUs")
                                        : std::string(", no cgroup quota"),
                      ")");
}

const CpuCount& UsableCores() {
  static const CpuCount* const count = new CpuCount(Measure());
  return *count;
}

std::optional<double> ParseCgroupV2CpuMax(absl::string_view cpu_max) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::StripAsciiWhitespace(cpu_max), ' ', absl::SkipEmpty());
  if (parts.empty() || parts[0] == "max") return std::nullopt;
  double quota = 0;
  double period = 100000;
  if (!absl::SimpleAtod(parts[0], &quota) ||
      (parts.size() > 1 && !absl::SimpleAtod(parts[1], &period))) {
    return std::nullopt;
  }
  if (quota <= 0 || period <= 0) return std::nullopt;
  return quota / period;
}

std::optional<double> ParseCgroupV1Quota(absl::string_view quota_us, absl::string_view period_us) {
  double quota = 0;
  double period = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(quota_us), &quota) ||
      !absl::SimpleAtod(absl::StripAsciiWhitespace(period_us), &period)) {
    return std::nullopt;
  }
  if (quota <= 0 || period <= 0) return std::nullopt;  // -1: no limit
  return quota / period;
}

int CoresFrom(int affinity, std::optional<double> quota) {
  int cores = std::max(1, affinity);
  if (quota.has_value() && *quota > 0) {
    // Rounded up: 1.5 CPUs of quota keep 2 threads busy part of the time, which beats
    // leaving half a CPU unused.
    const double limit = std::ceil(*quota - 1e-9);
    if (limit < cores) cores = static_cast<int>(limit);
  }
  return std::max(1, cores);
}

std::optional<double> QuotaFromProcCgroup(absl::string_view proc_self_cgroup,
                                          const std::string& mount_root) {
  std::optional<double> quota;
  // "0::/path" (v2) or "N:cpu,cpuacct:/path" (v1).
  for (absl::string_view line : absl::StrSplit(proc_self_cgroup, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (parts.size() != 3) continue;
    const std::string path(parts[2]);
    if (parts[0] == "0" && parts[1].empty()) {
      quota = Tighter(quota, CgroupQuota(mount_root, path, true));
      continue;
    }
    for (absl::string_view controller : absl::StrSplit(parts[1], ',')) {
      if (controller != "cpu") continue;
      for (const char* mount : {"/cpu,cpuacct", "/cpu"}) {
        quota = Tighter(quota, CgroupQuota(mount_root + mount, path, false));
      }
    }
  }
  return quota;
}

std::optional<double> CgroupQuota(const std::string& root, const std::string& path, bool v2) {
  std::optional<double> tightest;
  std::string dir = path;
  while (!dir.empty() && dir.back() == '/') dir.pop_back();
  for (;;) {
    const std::string base = root + dir;
    if (v2) {
      if (std::optional<std::string> max = ReadSmallFile(base + "/cpu.max")) {
        tightest = Tighter(tightest, ParseCgroupV2CpuMax(*max));
      }
    } else {
      std::optional<std::string> quota = ReadSmallFile(base + "/cpu.cfs_quota_us");
      std::optional<std::string> period = ReadSmallFile(base + "/cpu.cfs_period_us");
      if (quota.has_value() && period.has_value()) {
        tightest = Tighter(tightest, ParseCgroupV1Quota(*quota, *period));
      }
    }
    if (dir.empty()) break;
    const size_t slash = dir.rfind('/');
    dir = slash == std::string::npos ? std::string() : dir.substr(0, slash);
  }
  return tightest;
}

}  // namespace deeplab
