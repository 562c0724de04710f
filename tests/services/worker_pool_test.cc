// --workers parsing and DNS resolution of the worker pool.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "services/gateway/worker_pool.h"

namespace deeplab {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

TEST(WorkerTargetsTest, ListsAndDnsNames) {
  auto list = ParseWorkerTargets("127.0.0.1:8001, 10.0.0.2:8002");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->addresses, (std::vector<std::string>{"127.0.0.1:8001", "10.0.0.2:8002"}));
  EXPECT_TRUE(list->dns_name.empty());

  auto dns = ParseWorkerTargets("dns:///deeplab-workers.default.svc.cluster.local:8001");
  ASSERT_TRUE(dns.ok()) << dns.status();
  EXPECT_EQ(dns->dns_name, "deeplab-workers.default.svc.cluster.local");
  EXPECT_EQ(dns->dns_port, 8001);
  EXPECT_TRUE(dns->addresses.empty());
}

TEST(WorkerTargetsTest, BadSpecsSayWhatIsExpected) {
  for (const char* bad : {"", "localhost", "host:port", "host:0", "host:70000", "dns:///name",
                          ":8001", "a:1,b"}) {
    auto parsed = ParseWorkerTargets(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(std::string(ParseWorkerTargets("").status().message()), HasSubstr("dns:///"));
  EXPECT_THAT(std::string(ParseWorkerTargets("box").status().message()), HasSubstr("host:port"));
}

TEST(ResolveDnsTest, LocalhostResolvesToLoopback) {
  auto addresses = ResolveDns("localhost", 8001);
  ASSERT_TRUE(addresses.ok()) << addresses.status();
  EXPECT_THAT(*addresses, Contains("127.0.0.1:8001"));
  auto missing = ResolveDns("no-such-host.invalid", 8001);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace deeplab
