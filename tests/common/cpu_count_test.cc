#include "common/cpu_count.h"

#include <sched.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace deeplab {
namespace {

TEST(CpuCountTest, ParsesCgroupV2CpuMax) {
  EXPECT_EQ(ParseCgroupV2CpuMax("max 100000\n"), std::nullopt);
  EXPECT_DOUBLE_EQ(ParseCgroupV2CpuMax("150000 100000\n").value(), 1.5);
  EXPECT_DOUBLE_EQ(ParseCgroupV2CpuMax("50000 100000").value(), 0.5);
  EXPECT_DOUBLE_EQ(ParseCgroupV2CpuMax("400000 100000").value(), 4.0);
  EXPECT_EQ(ParseCgroupV2CpuMax(""), std::nullopt);
  EXPECT_EQ(ParseCgroupV2CpuMax("nonsense 100000"), std::nullopt);
  EXPECT_EQ(ParseCgroupV2CpuMax("0 100000"), std::nullopt);
  EXPECT_EQ(ParseCgroupV2CpuMax("100000 0"), std::nullopt);
}

TEST(CpuCountTest, ParsesCgroupV1Quota) {
  EXPECT_EQ(ParseCgroupV1Quota("-1\n", "100000\n"), std::nullopt);
  EXPECT_DOUBLE_EQ(ParseCgroupV1Quota("200000\n", "100000\n").value(), 2.0);
  EXPECT_DOUBLE_EQ(ParseCgroupV1Quota("25000", "100000").value(), 0.25);
  EXPECT_EQ(ParseCgroupV1Quota("x", "100000"), std::nullopt);
  EXPECT_EQ(ParseCgroupV1Quota("100000", "0"), std::nullopt);
}

TEST(CpuCountTest, QuotaCapsAffinityRoundedUpAndNeverBelowOne) {
  EXPECT_EQ(CoresFrom(8, std::nullopt), 8);
  EXPECT_EQ(CoresFrom(8, 1.5), 2);
  EXPECT_EQ(CoresFrom(8, 2.0), 2);
  EXPECT_EQ(CoresFrom(8, 0.5), 1);
  EXPECT_EQ(CoresFrom(2, 4.0), 2);  // a quota above the CPUs one may run on changes nothing
  EXPECT_EQ(CoresFrom(0, std::nullopt), 1);
}

void Write(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
}

// The tightest limit from the process's cgroup up to the mount root counts: a pod's limit
// sits on a parent of the container's cgroup.
TEST(CpuCountTest, TheTightestLimitOnTheWayUpCounts) {
  const std::string root = std::string(::testing::TempDir()) + "/cpu_count_v2";
  std::filesystem::remove_all(root);
  Write(root + "/kubepods/pod1/cpu.max", "200000 100000\n");
  Write(root + "/kubepods/pod1/container/cpu.max", "max 100000\n");
  Write(root + "/kubepods/cpu.max", "800000 100000\n");
  EXPECT_DOUBLE_EQ(CgroupQuota(root, "/kubepods/pod1/container", true).value(), 2.0);
  EXPECT_DOUBLE_EQ(CgroupQuota(root, "/kubepods/pod1/container/", true).value(), 2.0);
  EXPECT_DOUBLE_EQ(CgroupQuota(root, "/kubepods", true).value(), 8.0);
  // A path that is not under this mount (a container seeing its host's path) reaches the
  // mount root, which is the container's own cgroup there.
  Write(root + "/cpu.max", "150000 100000\n");
  EXPECT_DOUBLE_EQ(CgroupQuota(root, "/docker/abc", true).value(), 1.5);
  std::filesystem::remove_all(root);

  const std::string v1 = std::string(::testing::TempDir()) + "/cpu_count_v1";
  std::filesystem::remove_all(v1);
  Write(v1 + "/cpu.cfs_quota_us", "-1\n");
  Write(v1 + "/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(CgroupQuota(v1, "/", false), std::nullopt);
  Write(v1 + "/job/cpu.cfs_quota_us", "300000\n");
  Write(v1 + "/job/cpu.cfs_period_us", "100000\n");
  EXPECT_DOUBLE_EQ(CgroupQuota(v1, "/job", false).value(), 3.0);
  EXPECT_EQ(CgroupQuota(v1 + "/missing", "/job", false), std::nullopt);
  std::filesystem::remove_all(v1);
}

// /proc/self/cgroup as the three layouts write it: cgroup v2 alone, v1 (the cpu controller
// on its own line, mounted as cpu,cpuacct), and hybrid (both; v1 holds the limit).
TEST(CpuCountTest, ReadsTheCpuControllersLinesOfProcSelfCgroup) {
  const std::string root = std::string(::testing::TempDir()) + "/cpu_count_proc";
  std::filesystem::remove_all(root);
  Write(root + "/kubepods/pod1/cpu.max", "250000 100000\n");
  EXPECT_DOUBLE_EQ(QuotaFromProcCgroup("0::/kubepods/pod1/c1\n", root).value(), 2.5);
  Write(root + "/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "150000\n");
  Write(root + "/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
  const std::string v1 =
      "12:memory:/docker/abc\n"  // another controller's limit means nothing here
      "4:cpu,cpuacct:/docker/abc\n"
      "1:name=systemd:/docker/abc\n";
  EXPECT_DOUBLE_EQ(QuotaFromProcCgroup(v1, root).value(), 1.5);
  EXPECT_DOUBLE_EQ(QuotaFromProcCgroup(v1 + "0::/\n", root).value(), 1.5);  // hybrid
  Write(root + "/memory/docker/abc/cpu.max", "10000 100000\n");
  EXPECT_DOUBLE_EQ(QuotaFromProcCgroup(v1, root).value(), 1.5);
  EXPECT_EQ(QuotaFromProcCgroup("4:cpuacct:/docker/abc\n", root), std::nullopt);
  EXPECT_EQ(QuotaFromProcCgroup("not a cgroup line\n\n", root), std::nullopt);
  EXPECT_EQ(QuotaFromProcCgroup("", root), std::nullopt);
  std::filesystem::remove_all(root);
}

TEST(CpuCountTest, ThisProcessCountsItsAffinityMask) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  const CpuCount& count = UsableCores();
  EXPECT_EQ(count.affinity, CPU_COUNT(&set));
  EXPECT_GE(count.usable, 1);
  EXPECT_LE(count.usable, count.affinity);
  EXPECT_EQ(count.usable, CoresFrom(count.affinity, count.quota));
  EXPECT_NE(count.Describe().find("affinity"), std::string::npos) << count.Describe();
}

}  // namespace
}  // namespace deeplab
