#include "scheduler/clock.h"

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace deeplab::scheduler {
namespace {

TEST(FakeClockTest, MovesOnlyWhenTold) {
  FakeClock clock;
  const absl::Time start = clock.Now();
  EXPECT_EQ(clock.Now(), start);
  clock.Advance(absl::Milliseconds(1500));
  EXPECT_EQ(clock.Now(), start + absl::Milliseconds(1500));
  clock.Advance(absl::ZeroDuration());
  EXPECT_EQ(clock.Now(), start + absl::Milliseconds(1500));
}

TEST(FakeClockTest, SetJumpsAnywhere) {
  FakeClock clock;
  const absl::Time t = absl::FromUnixSeconds(42);
  clock.Set(t);
  EXPECT_EQ(clock.Now(), t);
}

TEST(FakeClockTest, TwoFakeClocksStartAtTheSameInstant) {
  // Tests compare times across fixtures; a fixed start keeps failures reproducible.
  FakeClock a;
  FakeClock b;
  EXPECT_EQ(a.Now(), b.Now());
}

TEST(ClockTest, RealClockIsOneInstanceAndFollowsTheSystemClock) {
  RealClock* clock = RealClock::Get();
  ASSERT_NE(clock, nullptr);
  EXPECT_EQ(clock, RealClock::Get());
  const absl::Time before = absl::Now();
  const absl::Time now = clock->Now();
  EXPECT_GE(now, before);
  EXPECT_LE(now, absl::Now());
}

}  // namespace
}  // namespace deeplab::scheduler
