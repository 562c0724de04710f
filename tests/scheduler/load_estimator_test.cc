// Unit tests of the autoscaling estimate, on simulated time.
#include "scheduler/load_estimator.h"

#include <cmath>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/clock.h"

namespace deeplab::scheduler {
namespace {

using ::testing::DoubleNear;
using ::testing::HasSubstr;

class LoadEstimatorTest : public ::testing::Test {
 protected:
  void Make(LoadEstimatorOptions options = {}) {
    auto created = LoadEstimator::Create(options, &clock_);
    ASSERT_TRUE(created.ok()) << created.status();
    estimator_ = std::move(*created);
  }

  // `per_second` arrivals of cost 1 per second, evenly spaced, for `duration`.
  void Arrive(const std::string& model, int per_second, absl::Duration duration) {
    const absl::Duration gap = absl::Seconds(1) / per_second;
    for (absl::Duration t; t < duration; t += gap) {
      clock_.Advance(gap);
      estimator_->RecordArrival(model, 1);
    }
  }

  // Workers needed for these loads, as the gateway works it out.
  int Needed(const std::vector<ModelLoad>& loads, double slots_per_worker) const {
    return estimator_->WorkersNeeded(estimator_->WorkerDemand(loads, slots_per_worker));
  }

  FakeClock clock_;
  std::unique_ptr<LoadEstimator> estimator_;
};

TEST(LoadEstimatorOptionsTest, OutOfRangeValuesNameTheirField) {
  FakeClock clock;
  EXPECT_TRUE(LoadEstimatorOptions().Validate().ok());
  LoadEstimatorOptions o;
  o.window = absl::Milliseconds(500);
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("window"));
  o = {};
  o.queue_target = absl::ZeroDuration();
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("queue target"));
  for (double u : {0.0, -0.5, 1.5, std::nan("")}) {
    o = {};
    o.utilization = u;
    EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("utilization")) << u;
  }
  o = {};
  o.min_workers = -1;
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("min_workers"));
  EXPECT_FALSE(LoadEstimator::Create(o, &clock).ok());
  EXPECT_FALSE(LoadEstimator::Create({}, nullptr).ok());
}

TEST_F(LoadEstimatorTest, SteadyArrivalsGiveTheirRate) {
  Make();
  Arrive("a", 10, absl::Minutes(5));  // 10 windows: the start-up has decayed away
  EXPECT_THAT(estimator_->Load("a", 0).arrival_rate, DoubleNear(10, 0.3));
  // A weight set whose traffic starts later ramps up over a few windows, like any moving
  // average; its queue (the backlog term) is what reacts at once.
  Arrive("b", 2, absl::Seconds(30));
  EXPECT_THAT(estimator_->Load("b", 0).arrival_rate, DoubleNear(2 * (1 - std::exp(-1)), 0.1));
  Arrive("b", 2, absl::Minutes(5));
  EXPECT_THAT(estimator_->Load("b", 0).arrival_rate, DoubleNear(2, 0.1));
  EXPECT_LT(estimator_->Load("a", 0).arrival_rate, 0.01);
  EXPECT_EQ(estimator_->Load("never-seen", 0).arrival_rate, 0);
}

TEST_F(LoadEstimatorTest, AYoungGatewayIsNotFooledByItsShortHistory) {
  Make();
  Arrive("a", 10, absl::Seconds(3));
  // A plain decaying count would read 30 / 30 s = 1/s here.
  EXPECT_THAT(estimator_->Load("a", 0).arrival_rate, DoubleNear(10, 1));
}

TEST_F(LoadEstimatorTest, RateDecaysWithTheWindowAfterArrivalsStop) {
  Make();
  Arrive("a", 10, absl::Minutes(5));
  const double before = estimator_->Load("a", 0).arrival_rate;
  clock_.Advance(absl::Seconds(30) * std::log(2.0));
  EXPECT_THAT(estimator_->Load("a", 0).arrival_rate, DoubleNear(before / 2, 0.05));
  clock_.Advance(absl::Minutes(10));
  EXPECT_LT(estimator_->Load("a", 0).arrival_rate, 0.01);
}

TEST_F(LoadEstimatorTest, WorkPerUnitFollowsTheBatchesThatRan) {
  Make();
  EXPECT_EQ(estimator_->Load("a", 0).seconds_per_unit, 0);
  estimator_->RecordBatch("a", 4, absl::Milliseconds(200));
  EXPECT_DOUBLE_EQ(estimator_->Load("a", 0).seconds_per_unit, 0.05);
  // Smaller batches cost more per unit: 0.3 s for 5 units at the same instant.
  estimator_->RecordBatch("a", 1, absl::Milliseconds(100));
  EXPECT_DOUBLE_EQ(estimator_->Load("a", 0).seconds_per_unit, 0.06);
  // Old batches fade: after many windows only the recent ones count.
  clock_.Advance(absl::Minutes(10));
  estimator_->RecordBatch("a", 2, absl::Milliseconds(500));
  EXPECT_THAT(estimator_->Load("a", 0).seconds_per_unit, DoubleNear(0.25, 1e-3));
  // Nonsense is ignored rather than poisoning the average.
  estimator_->RecordBatch("a", 0, absl::Seconds(100));
  estimator_->RecordBatch("a", 3, absl::Seconds(-1));
  EXPECT_THAT(estimator_->Load("a", 0).seconds_per_unit, DoubleNear(0.25, 1e-3));
}

TEST_F(LoadEstimatorTest, SlotDemandIsArrivalsTimesWorkPlusTheBacklogToDrain) {
  Make();  // queue target 1 s
  Arrive("a", 20, absl::Minutes(5));
  for (int i = 0; i < 10; ++i) estimator_->RecordBatch("a", 4, absl::Milliseconds(400));
  const ModelLoad idle_queue = estimator_->Load("a", 0);
  EXPECT_THAT(idle_queue.slot_demand, DoubleNear(2.0, 0.06));  // 20/s x 0.1 s
  const ModelLoad backlog = estimator_->Load("a", 12);
  EXPECT_THAT(backlog.slot_demand - idle_queue.slot_demand, DoubleNear(1.2, 1e-9));

  LoadEstimatorOptions relaxed;
  relaxed.queue_target = absl::Seconds(4);
  Make(relaxed);
  estimator_->RecordBatch("a", 4, absl::Milliseconds(400));
  EXPECT_THAT(estimator_->Load("a", 12).slot_demand, DoubleNear(0.3, 1e-9));
}

TEST_F(LoadEstimatorTest, WorkersNeededDividesDemandByPlannedSlotsPerWorker) {
  Make();  // utilization 0.8
  auto demand = [](std::vector<double> slots) {
    std::vector<ModelLoad> loads;
    for (double s : slots) loads.push_back({0, 0, s});
    return loads;
  };
  EXPECT_EQ(Needed({}, 3), 1);                      // idle: min_workers
  EXPECT_EQ(Needed(demand({2.0}), 3), 1);           // 2 / 2.4
  EXPECT_EQ(Needed(demand({2.0, 2.0}), 3), 2);      // 4 / 2.4
  EXPECT_EQ(Needed(demand({4.8}), 3), 2);           // exactly 2, not 3
  EXPECT_EQ(Needed(demand({4.8000001}), 3), 3);
  EXPECT_EQ(Needed(demand({10}), 1), 13);           // 10 / 0.8
  EXPECT_EQ(Needed(demand({10}), 0), 13);           // unknown slots: 1
  EXPECT_EQ(Needed(demand({1e30}), 3), 1000000);    // capped, defined

  // The fraction behind it: no floor and no rounding, so gateways' demands can be summed.
  EXPECT_EQ(estimator_->WorkerDemand({}, 3), 0);
  EXPECT_THAT(estimator_->WorkerDemand(demand({2.0}), 3), DoubleNear(2.0 / 2.4, 1e-12));
  EXPECT_THAT(estimator_->WorkerDemand(demand({2.0, 2.0}), 3), DoubleNear(4.0 / 2.4, 1e-12));
  EXPECT_THAT(estimator_->WorkerDemand(demand({10}), 0), DoubleNear(12.5, 1e-12));
  EXPECT_EQ(estimator_->WorkerDemand(demand({1e30}), 3), 1e6);
  // Two gateways whose loads need one slot each: alone, each asks for a worker (sum 2);
  // their demands sum to 2 / 2.4 = 0.83, which the autoscaler rounds up once: 1.
  EXPECT_EQ(2 * Needed(demand({1.0}), 3), 2);
  EXPECT_EQ(std::ceil(2 * estimator_->WorkerDemand(demand({1.0}), 3)), 1);

  LoadEstimatorOptions zero;
  zero.min_workers = 0;
  Make(zero);
  EXPECT_EQ(Needed({}, 3), 0);
  EXPECT_EQ(Needed(demand({0.1}), 3), 1);
}

// A weight set that has never run a batch has no measured cost: its arrivals add nothing,
// and min_workers is what brings up a first worker.
TEST_F(LoadEstimatorTest, UnmeasuredWeightSetAddsNoDemand) {
  Make();
  Arrive("cold", 50, absl::Seconds(10));
  const ModelLoad load = estimator_->Load("cold", 100);
  EXPECT_GT(load.arrival_rate, 0);
  EXPECT_EQ(load.slot_demand, 0);
  EXPECT_EQ(Needed({load}, 3), 1);
  EXPECT_EQ(estimator_->WorkerDemand({load}, 3), 0);
}

// For ThreadSanitizer (scripts/test.sh): the gateway records from gRPC threads while its
// loop reads.
TEST_F(LoadEstimatorTest, ConcurrentRecordsAndReadsAreSafe) {
  Make();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < 500; ++i) {
        const std::string model = t % 2 ? "a" : "b";
        estimator_->RecordArrival(model, 1);
        estimator_->RecordBatch(model, 2, absl::Milliseconds(10));
        (void)estimator_->Load(model, i);
        if (t == 0) clock_.Advance(absl::Milliseconds(1));
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(estimator_->Load("a", 0).seconds_per_unit, DoubleNear(0.005, 1e-9));
}

}  // namespace
}  // namespace deeplab::scheduler
