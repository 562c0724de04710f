// Unit tests of the batching scheduler on simulated time: every instant is exact.
#include "scheduler/scheduler.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/clock.h"

namespace deeplab::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

struct Rejection {
  Task task;
  absl::Status status;
};

QueueOptions Options(int max_batch_size, absl::Duration max_queue_delay) {
  QueueOptions options;
  options.max_batch_size = max_batch_size;
  options.max_queue_delay = max_queue_delay;
  return options;
}

Task MakeTask(uint64_t id, const std::string& model = "a", int cost = 1, int priority = 0,
              absl::Time deadline = absl::InfiniteFuture()) {
  Task task;
  task.id = id;
  task.model = model;
  task.cost = cost;
  task.priority = priority;
  task.deadline = deadline;
  return task;
}

std::vector<uint64_t> Ids(const Batch& batch) {
  std::vector<uint64_t> ids;
  for (const Task& task : batch.tasks) ids.push_back(task.id);
  return ids;
}

class SchedulerTest : public ::testing::Test {
 protected:
  SchedulerTest() { Recreate(SchedulerOptions()); }

  void Recreate(SchedulerOptions options) {
    auto scheduler = Scheduler::Create(
        options, &clock_,
        // The hooks get their own copies: a hook that polls again appends to the vectors.
        [this](Batch batch) {
          batches_.push_back(batch);
          if (on_dispatch_) on_dispatch_(batch);
        },
        [this](const Task& task, absl::Status status) {
          rejections_.push_back({task, status});
          if (on_reject_) on_reject_({task, status});
        });
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    scheduler_ = std::move(*scheduler);
  }

  void Enqueue(uint64_t id, const std::string& model = "a", int cost = 1, int priority = 0,
               absl::Time deadline = absl::InfiniteFuture()) {
    const absl::Status status = scheduler_->Enqueue(MakeTask(id, model, cost, priority, deadline));
    ASSERT_TRUE(status.ok()) << status;
  }

  // Polls, then returns and forgets the batches dispatched by that Poll.
  std::vector<Batch> Poll() {
    scheduler_->Poll();
    return TakeBatches();
  }

  std::vector<Batch> TakeBatches() { return std::exchange(batches_, {}); }

  // Ids of the single batch that the next Poll must dispatch; frees the slot again.
  std::vector<uint64_t> PollOne() {
    std::vector<Batch> batches = Poll();
    EXPECT_EQ(batches.size(), 1u);
    if (batches.size() != 1) return {};
    scheduler_->ReleaseSlot(batches[0].worker);
    return Ids(batches[0]);
  }

  FakeClock clock_;
  const absl::Time t0_ = clock_.Now();
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<Batch> batches_;
  std::vector<Rejection> rejections_;
  std::function<void(const Batch&)> on_dispatch_;
  std::function<void(const Rejection&)> on_reject_;
};

// --- Options ---

TEST(QueueOptionsTest, DefaultsAreValid) { EXPECT_TRUE(QueueOptions().Validate().ok()); }

TEST(QueueOptionsTest, BoundaryValuesAreValid) {
  QueueOptions options;
  options.max_batch_size = 1;
  options.max_queue_delay = absl::ZeroDuration();
  options.max_queue_size = 1;
  options.default_timeout = absl::InfiniteDuration();
  options.priority_levels = 16;
  options.priority_aging = absl::Nanoseconds(1);
  EXPECT_TRUE(options.Validate().ok()) << options.Validate();
  options.priority_levels = 1;
  EXPECT_TRUE(options.Validate().ok()) << options.Validate();
}

TEST(QueueOptionsTest, EachOutOfRangeFieldIsNamed) {
  struct Case {
    std::string field;
    std::function<void(QueueOptions&)> spoil;
  };
  const std::vector<Case> cases = {
      {"max_batch_size", [](QueueOptions& o) { o.max_batch_size = 0; }},
      {"max_batch_size", [](QueueOptions& o) { o.max_batch_size = -3; }},
      {"max_queue_delay", [](QueueOptions& o) { o.max_queue_delay = absl::Milliseconds(-1); }},
      {"max_queue_delay", [](QueueOptions& o) { o.max_queue_delay = absl::InfiniteDuration(); }},
      {"max_queue_size", [](QueueOptions& o) { o.max_queue_size = 0; }},
      {"default_timeout", [](QueueOptions& o) { o.default_timeout = absl::ZeroDuration(); }},
      {"default_timeout", [](QueueOptions& o) { o.default_timeout = absl::Seconds(-1); }},
      {"priority_levels", [](QueueOptions& o) { o.priority_levels = 0; }},
      {"priority_levels", [](QueueOptions& o) { o.priority_levels = 17; }},
      {"priority_aging", [](QueueOptions& o) { o.priority_aging = absl::ZeroDuration(); }},
      {"priority_aging", [](QueueOptions& o) { o.priority_aging = absl::InfiniteDuration(); }},
  };
  for (const Case& c : cases) {
    QueueOptions options;
    c.spoil(options);
    const absl::Status status = options.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(status.message(), HasSubstr(c.field));
  }
}

TEST(SchedulerOptionsTest, MaxAttemptsMustBePositive) {
  SchedulerOptions options;
  EXPECT_TRUE(options.Validate().ok());
  options.max_attempts = 1;
  EXPECT_TRUE(options.Validate().ok());
  options.max_attempts = 0;
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(options.Validate().message(), HasSubstr("max_attempts"));
}

TEST(SchedulerCreateTest, RejectsBadArguments) {
  FakeClock clock;
  auto dispatch = [](Batch) {};
  auto reject = [](const Task&, absl::Status) {};
  EXPECT_TRUE(Scheduler::Create(SchedulerOptions(), &clock, dispatch, reject).ok());

  SchedulerOptions bad;
  bad.max_attempts = 0;
  EXPECT_EQ(Scheduler::Create(bad, &clock, dispatch, reject).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Scheduler::Create(SchedulerOptions(), nullptr, dispatch, reject).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Scheduler::Create(SchedulerOptions(), &clock, nullptr, reject).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Scheduler::Create(SchedulerOptions(), &clock, dispatch, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SchedulerTest, SetQueueRejectsInvalidOptionsAndEmptyName) {
  QueueOptions bad;
  bad.priority_levels = 0;
  const absl::Status status = scheduler_->SetQueue("a", bad);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("priority_levels"));
  EXPECT_THAT(status.message(), HasSubstr("'a'"));
  EXPECT_EQ(scheduler_->SetQueue("", QueueOptions()).code(), absl::StatusCode::kInvalidArgument);
  // Neither created a queue.
  EXPECT_EQ(scheduler_->Enqueue(MakeTask(1)).code(), absl::StatusCode::kNotFound);
}

// --- Enqueue ---

TEST_F(SchedulerTest, EnqueueForAnUnknownWeightSetIsNotFound) {
  const absl::Status status = scheduler_->Enqueue(MakeTask(1, "nope"));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("'nope'"));
}

TEST_F(SchedulerTest, EnqueueRejectsBadCostPriorityAndDuplicateIds) {
  QueueOptions options;
  options.priority_levels = 3;
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  Enqueue(7);

  absl::Status status = scheduler_->Enqueue(MakeTask(1, "a", /*cost=*/0));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("cost"));
  EXPECT_EQ(scheduler_->Enqueue(MakeTask(1, "a", /*cost=*/-2)).code(),
            absl::StatusCode::kInvalidArgument);
  status = scheduler_->Enqueue(MakeTask(1, "a", 1, /*priority=*/3));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("priority"));
  EXPECT_EQ(scheduler_->Enqueue(MakeTask(1, "a", 1, /*priority=*/-1)).code(),
            absl::StatusCode::kInvalidArgument);
  status = scheduler_->Enqueue(MakeTask(7));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("7"));

  EXPECT_EQ(scheduler_->QueueLength("a"), 1);
  EXPECT_THAT(rejections_, IsEmpty());
  EXPECT_TRUE(scheduler_->Enqueue(MakeTask(1, "a", 1, /*priority=*/2)).ok());
}

TEST_F(SchedulerTest, EnqueueSetsEnqueueTimeAttemptsAndDeadline) {
  QueueOptions options;
  options.default_timeout = absl::Seconds(5);
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  scheduler_->SetWorker("w", {"a"}, 2);
  clock_.Advance(absl::Seconds(1));
  Task stale = MakeTask(1);
  stale.attempts = 9;
  stale.enqueue_time = absl::UnixEpoch();
  ASSERT_TRUE(scheduler_->Enqueue(stale).ok());
  Enqueue(2, "a", 1, 0, t0_ + absl::Seconds(3));

  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  ASSERT_THAT(Ids(batches[0]), ElementsAre(1, 2));
  const Task& defaulted = batches[0].tasks[0];
  EXPECT_EQ(defaulted.enqueue_time, t0_ + absl::Seconds(1));
  EXPECT_EQ(defaulted.attempts, 0);
  // The default timeout is resolved, so that the caller can propagate it to the worker.
  EXPECT_EQ(defaulted.deadline, t0_ + absl::Seconds(6));
  EXPECT_EQ(batches[0].tasks[1].deadline, t0_ + absl::Seconds(3));
  EXPECT_EQ(batches[0].worker, "w");
  EXPECT_EQ(batches[0].model, "a");
}

TEST_F(SchedulerTest, FullQueueIsResourceExhaustedUntilThereIsRoom) {
  QueueOptions options = Options(8, absl::Seconds(1));
  options.max_queue_size = 2;
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  Enqueue(1);
  Enqueue(2);
  const absl::Status status = scheduler_->Enqueue(MakeTask(3));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(), "queue for weight set 'a' is full (2 waiting); retry later");
  EXPECT_EQ(scheduler_->QueueLength("a"), 2);
  EXPECT_THAT(rejections_, IsEmpty());

  // Cancelling makes room, and so does dispatching.
  ASSERT_TRUE(scheduler_->Cancel(2));
  Enqueue(3);
  scheduler_->SetWorker("w", {"a"}, 1);
  clock_.Advance(absl::Seconds(1));
  ASSERT_EQ(Poll().size(), 1u);
  EXPECT_EQ(scheduler_->QueueLength("a"), 0);
  Enqueue(4);
  Enqueue(5);
}

TEST_F(SchedulerTest, TaskPastItsDeadlineOnArrivalIsRejectedAtOnce) {
  ASSERT_TRUE(scheduler_->SetQueue("a", QueueOptions()).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  clock_.Advance(absl::Seconds(1));
  // Not an error of the call: the reject callback answers it, during Enqueue.
  ASSERT_TRUE(scheduler_->Enqueue(MakeTask(1, "a", 1, 0, t0_)).ok());
  ASSERT_EQ(rejections_.size(), 1u);
  EXPECT_EQ(rejections_[0].task.id, 1u);
  EXPECT_EQ(rejections_[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(scheduler_->QueueLength("a"), 0);
  EXPECT_THAT(Poll(), IsEmpty());
}

// --- Batch formation ---

TEST_F(SchedulerTest, BatchIsBoundedInCostUnits) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(8, absl::ZeroDuration())).ok());
  Enqueue(1, "a", /*cost=*/3);
  Enqueue(2, "a", /*cost=*/3);
  Enqueue(3, "a", /*cost=*/3);
  Enqueue(4, "a", /*cost=*/1);
  EXPECT_EQ(scheduler_->QueuedCost("a"), 10);
  scheduler_->SetWorker("w", {"a"}, 3);

  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(1, 2));
  EXPECT_EQ(batches[0].cost(), 6);
  EXPECT_THAT(Ids(batches[1]), ElementsAre(3, 4));
  EXPECT_EQ(batches[1].cost(), 4);
  EXPECT_EQ(scheduler_->QueuedCost("a"), 0);
  EXPECT_EQ(scheduler_->FreeSlots("w"), 1);
}

TEST_F(SchedulerTest, OldestWaitIsTheLongestWaitingTaskOfTheModel) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(8, absl::Seconds(10))).ok());
  ASSERT_TRUE(scheduler_->SetQueue("b", Options(8, absl::Seconds(10))).ok());
  EXPECT_EQ(scheduler_->OldestWait("a"), absl::ZeroDuration());
  EXPECT_EQ(scheduler_->OldestWait("no-such-model"), absl::ZeroDuration());
  Enqueue(1, "a", 1, /*priority=*/2);
  clock_.Advance(absl::Seconds(2));
  Enqueue(2, "a", 1, /*priority=*/0);  // another line: still task 1 is the oldest
  Enqueue(3, "b");
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(scheduler_->OldestWait("a"), absl::Seconds(3));
  EXPECT_EQ(scheduler_->OldestWait("b"), absl::Seconds(1));
  ASSERT_TRUE(scheduler_->Cancel(1));
  EXPECT_EQ(scheduler_->OldestWait("a"), absl::Seconds(1));
  ASSERT_TRUE(scheduler_->Cancel(2));
  EXPECT_EQ(scheduler_->OldestWait("a"), absl::ZeroDuration());
}

TEST_F(SchedulerTest, TaskCostlierThanMaxBatchSizeGoesAloneAndInOrder) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(4, absl::ZeroDuration())).ok());
  Enqueue(1, "a", 1);
  Enqueue(2, "a", 10);
  Enqueue(3, "a", 1);
  scheduler_->SetWorker("w", {"a"}, 3);

  // Task 3 would fit beside task 1, but a batch never skips ahead of a task that does not fit.
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(1));
  EXPECT_THAT(Ids(batches[1]), ElementsAre(2));
  EXPECT_EQ(batches[1].cost(), 10);
  EXPECT_THAT(Ids(batches[2]), ElementsAre(3));
}

TEST_F(SchedulerTest, PartialBatchWaitsExactlyMaxQueueDelay) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(4, absl::Milliseconds(10))).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  Enqueue(1);
  clock_.Advance(absl::Milliseconds(3));
  Enqueue(2);
  EXPECT_THAT(Poll(), IsEmpty());
  EXPECT_EQ(scheduler_->NextWakeup(), t0_ + absl::Milliseconds(10));

  clock_.Set(t0_ + absl::Milliseconds(10) - absl::Nanoseconds(1));
  EXPECT_THAT(Poll(), IsEmpty());
  clock_.Set(t0_ + absl::Milliseconds(10));
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(1, 2));
}

TEST_F(SchedulerTest, ZeroDelayDispatchesAtOnce) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(4, absl::ZeroDuration())).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  Enqueue(1);
  EXPECT_LE(scheduler_->NextWakeup(), clock_.Now());
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(1));
}

TEST_F(SchedulerTest, FullBatchGoesBeforeTheDelay) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(4, absl::Seconds(1))).ok());
  scheduler_->SetWorker("w", {"a"}, 2);
  for (uint64_t id = 1; id <= 5; ++id) Enqueue(id);
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(1, 2, 3, 4));
  // The fifth is a partial batch again: it waits out the delay although a slot is free.
  EXPECT_EQ(scheduler_->NextWakeup(), t0_ + absl::Seconds(1));
  clock_.Advance(absl::Seconds(1));
  batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(5));
}

TEST_F(SchedulerTest, SetQueueUpdatesOptionsAndQueuedTasksKeepTheirPlace) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(8, absl::Seconds(10))).ok());
  scheduler_->SetWorker("w", {"a"}, 2);
  Enqueue(1);
  Enqueue(2);
  Enqueue(3);
  EXPECT_THAT(Poll(), IsEmpty());
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(2, absl::ZeroDuration())).ok());
  EXPECT_EQ(scheduler_->QueueLength("a"), 3);
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(1, 2));
  EXPECT_THAT(Ids(batches[1]), ElementsAre(3));
}

// --- NextWakeup ---

TEST_F(SchedulerTest, NextWakeupFollowsDelaysAndDeadlines) {
  EXPECT_EQ(scheduler_->NextWakeup(), absl::InfiniteFuture());
  QueueOptions options = Options(4, absl::Milliseconds(100));
  options.default_timeout = absl::Seconds(30);
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  EXPECT_EQ(scheduler_->NextWakeup(), absl::InfiniteFuture());

  // No worker: only the default deadline is timed work.
  Enqueue(1);
  EXPECT_EQ(scheduler_->NextWakeup(), t0_ + absl::Seconds(30));
  // A worker that could take the batch: the queue delay.
  scheduler_->SetWorker("w", {"a"}, 1);
  EXPECT_EQ(scheduler_->NextWakeup(), t0_ + absl::Milliseconds(100));
  // An earlier explicit deadline.
  Enqueue(2, "a", 1, 0, t0_ + absl::Milliseconds(40));
  EXPECT_EQ(scheduler_->NextWakeup(), t0_ + absl::Milliseconds(40));

  clock_.Advance(absl::Milliseconds(40));
  EXPECT_THAT(Poll(), IsEmpty());
  ASSERT_EQ(rejections_.size(), 1u);
  EXPECT_EQ(scheduler_->NextWakeup(), t0_ + absl::Milliseconds(100));
  clock_.Advance(absl::Milliseconds(60));
  EXPECT_EQ(Poll().size(), 1u);
  EXPECT_EQ(scheduler_->NextWakeup(), absl::InfiniteFuture());
}

TEST_F(SchedulerTest, NextWakeupIgnoresDelaysWhileNoHostingWorkerIsFree) {
  QueueOptions options = Options(1, absl::ZeroDuration());
  options.default_timeout = absl::Seconds(30);
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  ASSERT_TRUE(scheduler_->SetQueue("b", options).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  scheduler_->SetWorker("v", {"b"}, 1);
  Enqueue(1);
  ASSERT_EQ(Poll().size(), 1u);
  // Due at once but its only worker is busy: a wakeup in the past would make callers spin.
  clock_.Advance(absl::Seconds(1));
  Enqueue(2);
  EXPECT_EQ(scheduler_->NextWakeup(), t0_ + absl::Seconds(31));
  EXPECT_THAT(Poll(), IsEmpty());
  // Freeing the slot makes the batch due now.
  scheduler_->ReleaseSlot("w");
  EXPECT_LE(scheduler_->NextWakeup(), clock_.Now());
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(2));
}

// --- Priorities ---

TEST_F(SchedulerTest, MoreUrgentPriorityFirstThenArrivalOrder) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(8, absl::ZeroDuration())).ok());
  Enqueue(1, "a", 1, /*priority=*/2);
  Enqueue(2, "a", 1, /*priority=*/0);
  Enqueue(3, "a", 1, /*priority=*/1);
  Enqueue(4, "a", 1, /*priority=*/0);
  Enqueue(5, "a", 1, /*priority=*/2);
  scheduler_->SetWorker("w", {"a"}, 1);
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(2, 4, 3, 1, 5));
}

TEST_F(SchedulerTest, WaitingImprovesEffectivePriorityOneLevelPerAging) {
  QueueOptions options = Options(1, absl::ZeroDuration());
  options.priority_aging = absl::Seconds(1);
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  Enqueue(1, "a", 1, /*priority=*/2);
  clock_.Advance(absl::Seconds(1));
  // Task 1 now has effective priority 1: it ties with task 2 and is older.
  Enqueue(2, "a", 1, /*priority=*/1);
  Enqueue(3, "a", 1, /*priority=*/0);
  EXPECT_THAT(PollOne(), ElementsAre(3));
  EXPECT_THAT(PollOne(), ElementsAre(1));
  EXPECT_THAT(PollOne(), ElementsAre(2));

  // After twice the aging a priority-2 task beats a fresh priority-0 one.
  Enqueue(4, "a", 1, /*priority=*/2);
  clock_.Advance(absl::Seconds(2) - absl::Nanoseconds(1));
  Enqueue(5, "a", 1, /*priority=*/0);
  clock_.Advance(absl::Nanoseconds(1));
  Enqueue(6, "a", 1, /*priority=*/0);
  EXPECT_THAT(PollOne(), ElementsAre(4));
  EXPECT_THAT(PollOne(), ElementsAre(5));
  EXPECT_THAT(PollOne(), ElementsAre(6));
}

TEST_F(SchedulerTest, LowPriorityIsNotStarvedByAStreamOfUrgentTasks) {
  QueueOptions options = Options(1, absl::ZeroDuration());
  options.priority_levels = 3;
  options.priority_aging = absl::Seconds(1);
  options.max_queue_size = 10000;
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  constexpr uint64_t kLow = 1;
  Enqueue(kLow, "a", 1, /*priority=*/2);
  uint64_t next_id = 2;
  absl::Time low_dispatched = absl::InfiniteFuture();
  // Urgent tasks arrive twice as fast as the worker serves them: without aging the
  // priority-2 task would wait forever.
  for (int step = 0; step < 40; ++step) {
    Enqueue(next_id++, "a", 1, 0);
    Enqueue(next_id++, "a", 1, 0);
    for (uint64_t id : PollOne()) {
      if (id == kLow) low_dispatched = clock_.Now();
    }
    clock_.Advance(absl::Milliseconds(250));
  }
  // At 2 * priority_aging it is as urgent as the stream, and older than all of it.
  EXPECT_EQ(low_dispatched, t0_ + absl::Seconds(2));
}

// --- Deadlines ---

TEST_F(SchedulerTest, ExpiredTasksAreAnsweredDeadlineExceededAndNeverDispatched) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(4, absl::Milliseconds(100))).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  Enqueue(1, "a", 1, 0, t0_ + absl::Milliseconds(50));
  Enqueue(2);
  clock_.Advance(absl::Milliseconds(50) - absl::Nanoseconds(1));
  EXPECT_THAT(Poll(), IsEmpty());
  EXPECT_THAT(rejections_, IsEmpty());

  clock_.Set(t0_ + absl::Milliseconds(50));
  EXPECT_THAT(Poll(), IsEmpty());
  ASSERT_EQ(rejections_.size(), 1u);
  EXPECT_EQ(rejections_[0].task.id, 1u);
  EXPECT_EQ(rejections_[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(rejections_[0].status.message(), HasSubstr("50ms"));
  EXPECT_THAT(rejections_[0].status.message(), HasSubstr("'a'"));
  EXPECT_EQ(scheduler_->QueueLength("a"), 1);

  clock_.Set(t0_ + absl::Milliseconds(100));
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(2));
}

TEST_F(SchedulerTest, DefaultTimeoutAppliesToTasksWithoutDeadline) {
  QueueOptions options;
  options.default_timeout = absl::Seconds(2);
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  Enqueue(1);
  clock_.Advance(absl::Seconds(2) - absl::Nanoseconds(1));
  scheduler_->Poll();
  EXPECT_THAT(rejections_, IsEmpty());
  clock_.Advance(absl::Nanoseconds(1));
  scheduler_->Poll();
  ASSERT_EQ(rejections_.size(), 1u);
  EXPECT_EQ(rejections_[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(rejections_[0].status.message(), HasSubstr("2s"));
}

TEST_F(SchedulerTest, TasksExpireWhileNoWorkerIsFree) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(1, absl::ZeroDuration())).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  Enqueue(1);
  ASSERT_EQ(Poll().size(), 1u);
  Enqueue(2, "a", 1, 0, t0_ + absl::Seconds(1));
  Enqueue(3, "a", 1, 0, t0_ + absl::Seconds(5));
  EXPECT_EQ(scheduler_->NextWakeup(), t0_ + absl::Seconds(1));
  clock_.Advance(absl::Seconds(1));
  EXPECT_THAT(Poll(), IsEmpty());
  ASSERT_EQ(rejections_.size(), 1u);
  EXPECT_EQ(rejections_[0].task.id, 2u);

  scheduler_->ReleaseSlot("w");
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(3));
}

TEST_F(SchedulerTest, ExpiryComesBeforeDispatchInOnePoll) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(4, absl::Seconds(1))).ok());
  Enqueue(1, "a", 1, 0, t0_ + absl::Seconds(1));
  Enqueue(2);
  clock_.Advance(absl::Seconds(1));
  scheduler_->SetWorker("w", {"a"}, 1);
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(rejections_.size(), 1u);
  EXPECT_EQ(rejections_[0].task.id, 1u);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(2));
}

// --- Cancellation ---

TEST_F(SchedulerTest, CancelRemovesOnlyQueuedTasks) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(4, absl::Seconds(1))).ok());
  Enqueue(1, "a", 2);
  Enqueue(2, "a", 1);
  EXPECT_TRUE(scheduler_->Cancel(1));
  EXPECT_FALSE(scheduler_->Cancel(1));
  EXPECT_FALSE(scheduler_->Cancel(99));
  EXPECT_EQ(scheduler_->QueueLength("a"), 1);
  EXPECT_EQ(scheduler_->QueuedCost("a"), 1);

  scheduler_->SetWorker("w", {"a"}, 1);
  clock_.Advance(absl::Seconds(1));
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(2));
  EXPECT_FALSE(scheduler_->Cancel(2));  // dispatched: the caller owns it now
  // The caller answers cancelled tasks; the scheduler does not.
  EXPECT_THAT(rejections_, IsEmpty());
  // The id of a cancelled task is free again.
  Enqueue(1);
}

// --- Fairness between weight sets ---

TEST_F(SchedulerTest, WeightSetsSharingAWorkerAlternateByOldestHead) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(1, absl::ZeroDuration())).ok());
  ASSERT_TRUE(scheduler_->SetQueue("b", Options(1, absl::ZeroDuration())).ok());
  for (uint64_t i = 0; i < 3; ++i) {
    Enqueue(10 + i, "a");
    clock_.Advance(absl::Milliseconds(1));
    Enqueue(20 + i, "b");
    clock_.Advance(absl::Milliseconds(1));
  }
  scheduler_->SetWorker("w", {"a", "b"}, 1);
  std::vector<uint64_t> order;
  for (int i = 0; i < 6; ++i) {
    for (uint64_t id : PollOne()) order.push_back(id);
  }
  EXPECT_THAT(order, ElementsAre(10, 20, 11, 21, 12, 22));
}

TEST_F(SchedulerTest, NeitherWeightSetStarvesUnderSteadyLoad) {
  QueueOptions options = Options(1, absl::ZeroDuration());
  options.max_queue_size = 1000;
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  ASSERT_TRUE(scheduler_->SetQueue("b", options).ok());
  scheduler_->SetWorker("w", {"b", "a"}, 1);
  uint64_t next_id = 1;
  int served_a = 0;
  int served_b = 0;
  absl::Time last_enqueue_time = absl::InfinitePast();
  // "a" brings twice as much work as "b", and together more than the worker can serve.
  for (int step = 0; step < 60; ++step) {
    Enqueue(next_id++, "a");
    Enqueue(next_id++, "a");
    Enqueue(next_id++, "b");
    std::vector<Batch> batches = Poll();
    ASSERT_EQ(batches.size(), 1u);
    // Oldest head first is first come, first served across the weight sets.
    EXPECT_GE(batches[0].tasks[0].enqueue_time, last_enqueue_time);
    last_enqueue_time = batches[0].tasks[0].enqueue_time;
    (batches[0].model == "a" ? served_a : served_b)++;
    scheduler_->ReleaseSlot("w");
    clock_.Advance(absl::Milliseconds(10));
  }
  EXPECT_EQ(served_a + served_b, 60);
  EXPECT_GE(served_b, 19);
  EXPECT_GE(served_a, 39);
}

TEST_F(SchedulerTest, OldQueueWithFreshUrgentHeadYieldsToOlderHead) {
  // The head of line is the task that would go next, so fairness compares what each queue
  // would actually send.
  QueueOptions options = Options(1, absl::ZeroDuration());
  options.priority_aging = absl::Seconds(100);
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  ASSERT_TRUE(scheduler_->SetQueue("b", options).ok());
  Enqueue(1, "a", 1, /*priority=*/2);
  clock_.Advance(absl::Milliseconds(1));
  Enqueue(2, "b", 1, /*priority=*/0);
  clock_.Advance(absl::Milliseconds(1));
  Enqueue(3, "a", 1, /*priority=*/0);
  scheduler_->SetWorker("w", {"a", "b"}, 1);
  EXPECT_THAT(PollOne(), ElementsAre(2));
  EXPECT_THAT(PollOne(), ElementsAre(3));
  EXPECT_THAT(PollOne(), ElementsAre(1));
}

// --- Workers ---

TEST_F(SchedulerTest, LeastLoadedWorkerFirstThenByName) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(1, absl::ZeroDuration())).ok());
  scheduler_->SetWorker("w2", {"a"}, 4);
  scheduler_->SetWorker("w1", {"a"}, 2);
  scheduler_->SetWorker("w3", {"a"}, 4);
  for (uint64_t id = 1; id <= 6; ++id) Enqueue(id);
  std::vector<std::string> workers;
  for (const Batch& batch : Poll()) workers.push_back(batch.worker);
  EXPECT_THAT(workers, ElementsAre("w2", "w3", "w2", "w3", "w1", "w2"));
  EXPECT_EQ(scheduler_->FreeSlots("w1"), 1);
  EXPECT_EQ(scheduler_->FreeSlots("w2"), 1);
  EXPECT_EQ(scheduler_->FreeSlots("w3"), 2);
}

TEST_F(SchedulerTest, WorkerGetsOnlyWeightSetsItHosts) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(1, absl::ZeroDuration())).ok());
  ASSERT_TRUE(scheduler_->SetQueue("b", Options(1, absl::ZeroDuration())).ok());
  scheduler_->SetWorker("w", {"b", "unknown"}, 2);
  Enqueue(1, "a");
  EXPECT_THAT(Poll(), IsEmpty());
  EXPECT_EQ(scheduler_->FreeSlots("w"), 2);
  Enqueue(2, "b");
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].model, "b");
  EXPECT_EQ(scheduler_->QueueLength("a"), 1);
}

TEST_F(SchedulerTest, WorkerWithoutADispatchableQueueKeepsItsSlots) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(4, absl::Seconds(1))).ok());
  ASSERT_TRUE(scheduler_->SetQueue("b", Options(4, absl::ZeroDuration())).ok());
  scheduler_->SetWorker("big", {"a"}, 3);
  scheduler_->SetWorker("small", {"b"}, 1);
  Enqueue(1, "a");
  Enqueue(2, "b");
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].worker, "small");
  EXPECT_EQ(scheduler_->FreeSlots("big"), 3);
  clock_.Advance(absl::Seconds(1));
  batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].worker, "big");
  EXPECT_THAT(Ids(batches[0]), ElementsAre(1));
}

TEST_F(SchedulerTest, SetWorkerReplacesModelsAndSlotsButKeepsBusySlots) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(1, absl::ZeroDuration())).ok());
  ASSERT_TRUE(scheduler_->SetQueue("b", Options(1, absl::ZeroDuration())).ok());
  EXPECT_EQ(scheduler_->FreeSlots("w"), 0);
  scheduler_->SetWorker("w", {"a"}, 2);
  Enqueue(1, "a");
  ASSERT_EQ(Poll().size(), 1u);
  EXPECT_EQ(scheduler_->FreeSlots("w"), 1);

  scheduler_->SetWorker("w", {"b"}, 3);
  EXPECT_EQ(scheduler_->FreeSlots("w"), 2);
  Enqueue(2, "a");
  EXPECT_THAT(Poll(), IsEmpty());
  Enqueue(3, "b");
  ASSERT_EQ(Poll().size(), 1u);

  // Fewer slots than busy ones: full until enough batches finish.
  scheduler_->SetWorker("w", {"a", "b"}, 1);
  EXPECT_EQ(scheduler_->FreeSlots("w"), 0);
  EXPECT_THAT(Poll(), IsEmpty());
  scheduler_->ReleaseSlot("w");
  EXPECT_EQ(scheduler_->FreeSlots("w"), 0);
  scheduler_->ReleaseSlot("w");
  EXPECT_EQ(scheduler_->FreeSlots("w"), 1);
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(2));
}

TEST_F(SchedulerTest, RemovedWorkerGetsNothingAndItsSlotsAreForgotten) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(1, absl::ZeroDuration())).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  Enqueue(1);
  ASSERT_EQ(Poll().size(), 1u);
  scheduler_->RemoveWorker("w");
  EXPECT_EQ(scheduler_->FreeSlots("w"), 0);
  Enqueue(2);
  EXPECT_THAT(Poll(), IsEmpty());
  // A batch that finishes after its worker left releases nothing.
  scheduler_->ReleaseSlot("w");
  scheduler_->RemoveWorker("never-there");
  EXPECT_THAT(Poll(), IsEmpty());

  scheduler_->SetWorker("w", {"a"}, 1);
  EXPECT_EQ(scheduler_->FreeSlots("w"), 1);
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(2));
}

TEST_F(SchedulerTest, ReleaseSlotNeverGoesAboveTheSlotCount) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(1, absl::ZeroDuration())).ok());
  scheduler_->SetWorker("w", {"a"}, 2);
  scheduler_->ReleaseSlot("w");
  EXPECT_EQ(scheduler_->FreeSlots("w"), 2);
  scheduler_->SetWorker("w", {"a"}, -1);
  EXPECT_EQ(scheduler_->FreeSlots("w"), 0);
}

// --- Requeue ---

TEST_F(SchedulerTest, RequeuedTasksGoBackToTheFrontOfTheQueue) {
  QueueOptions options = Options(2, absl::ZeroDuration());
  options.priority_aging = absl::Seconds(100);
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  Enqueue(1, "a", 1, /*priority=*/2);
  Enqueue(2, "a", 1, /*priority=*/1);
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  ASSERT_THAT(Ids(batches[0]), ElementsAre(2, 1));

  // Newer tasks arrive while the batch runs, one of them more urgent than both.
  clock_.Advance(absl::Seconds(1));
  Enqueue(3, "a", 1, /*priority=*/0);
  Enqueue(4, "a", 1, /*priority=*/1);
  scheduler_->Requeue(batches[0].tasks);
  scheduler_->ReleaseSlot("w");
  EXPECT_EQ(scheduler_->QueueLength("a"), 4);
  EXPECT_THAT(rejections_, IsEmpty());

  batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(1, 2));
  for (const Task& task : batches[0].tasks) {
    EXPECT_EQ(task.attempts, 1);
    EXPECT_EQ(task.enqueue_time, t0_);
  }
  scheduler_->ReleaseSlot("w");
  batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(Ids(batches[0]), ElementsAre(3, 4));
}

TEST_F(SchedulerTest, RequeueRejectsWithUnavailableAtMaxAttempts) {
  SchedulerOptions scheduler_options;
  scheduler_options.max_attempts = 2;
  Recreate(scheduler_options);
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(1, absl::ZeroDuration())).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  Enqueue(1);
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  scheduler_->Requeue(batches[0].tasks);
  scheduler_->ReleaseSlot("w");
  EXPECT_THAT(rejections_, IsEmpty());

  batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].tasks[0].attempts, 1);
  scheduler_->Requeue(batches[0].tasks);
  ASSERT_EQ(rejections_.size(), 1u);
  EXPECT_EQ(rejections_[0].task.id, 1u);
  EXPECT_EQ(rejections_[0].task.attempts, 2);
  EXPECT_EQ(rejections_[0].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(rejections_[0].status.message(), HasSubstr("max_attempts"));
  EXPECT_EQ(scheduler_->QueueLength("a"), 0);
}

TEST_F(SchedulerTest, SingleAttemptMeansNoRetry) {
  SchedulerOptions scheduler_options;
  scheduler_options.max_attempts = 1;
  Recreate(scheduler_options);
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(1, absl::ZeroDuration())).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  Enqueue(1);
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  scheduler_->Requeue(batches[0].tasks);
  ASSERT_EQ(rejections_.size(), 1u);
  EXPECT_EQ(rejections_[0].status.code(), absl::StatusCode::kUnavailable);
}

TEST_F(SchedulerTest, RequeuedTaskKeepsItsDeadline) {
  QueueOptions options = Options(1, absl::ZeroDuration());
  options.default_timeout = absl::Seconds(1);
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  Enqueue(1);
  Enqueue(2);
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  clock_.Advance(absl::Milliseconds(900));
  scheduler_->Requeue(batches[0].tasks);  // worker still busy: no slot released
  EXPECT_EQ(scheduler_->NextWakeup(), t0_ + absl::Seconds(1));
  clock_.Advance(absl::Milliseconds(100));
  scheduler_->Poll();
  ASSERT_EQ(rejections_.size(), 2u);
  EXPECT_EQ(rejections_[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(rejections_[1].status.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(SchedulerTest, RequeueOfAnExpiredTaskRejectsItAtOnce) {
  QueueOptions options = Options(1, absl::ZeroDuration());
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  Enqueue(1, "a", 1, 0, t0_ + absl::Seconds(1));
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  clock_.Advance(absl::Seconds(2));
  scheduler_->Requeue(batches[0].tasks);
  ASSERT_EQ(rejections_.size(), 1u);
  EXPECT_EQ(rejections_[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(scheduler_->QueueLength("a"), 0);
}

TEST_F(SchedulerTest, RequeueIgnoresTheQueueSizeLimit) {
  QueueOptions options = Options(1, absl::ZeroDuration());
  options.max_queue_size = 1;
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  Enqueue(1);
  std::vector<Batch> batches = Poll();
  ASSERT_EQ(batches.size(), 1u);
  Enqueue(2);
  scheduler_->Requeue(batches[0].tasks);
  EXPECT_THAT(rejections_, IsEmpty());
  EXPECT_EQ(scheduler_->QueueLength("a"), 2);
}

TEST_F(SchedulerTest, RequeueOfTasksItNeverHadIsRejected) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(1, absl::Seconds(1))).ok());
  Enqueue(1);
  Task unknown_model = MakeTask(5, "nope");
  unknown_model.enqueue_time = clock_.Now();
  Task duplicate = MakeTask(1);
  duplicate.enqueue_time = clock_.Now();
  scheduler_->Requeue({unknown_model, duplicate});
  ASSERT_EQ(rejections_.size(), 2u);
  EXPECT_EQ(rejections_[0].status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rejections_[1].status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler_->QueueLength("a"), 1);
}

// --- Callbacks ---

TEST_F(SchedulerTest, CallbacksMayCallBackIntoTheScheduler) {
  ASSERT_TRUE(scheduler_->SetQueue("a", Options(1, absl::ZeroDuration())).ok());
  scheduler_->SetWorker("w", {"a"}, 1);
  int dispatched = 0;
  on_dispatch_ = [&](const Batch& batch) {
    ++dispatched;
    // What a gateway does when a batch finishes synchronously: free the slot, feed more
    // work, and poll again.
    EXPECT_EQ(scheduler_->FreeSlots(batch.worker), 0);
    scheduler_->ReleaseSlot(batch.worker);
    EXPECT_EQ(scheduler_->QueueLength("a"), 0);
    if (batch.tasks[0].id < 3) {
      ASSERT_TRUE(scheduler_->Enqueue(MakeTask(batch.tasks[0].id + 1)).ok());
      scheduler_->Poll();
    }
  };
  on_reject_ = [&](const Rejection& rejection) {
    EXPECT_FALSE(scheduler_->Cancel(rejection.task.id));
    ASSERT_TRUE(scheduler_->Enqueue(MakeTask(100)).ok());
    scheduler_->Requeue({});
    EXPECT_GE(scheduler_->NextWakeup(), clock_.Now());
  };
  Enqueue(1);
  scheduler_->Poll();
  EXPECT_EQ(dispatched, 3);

  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(scheduler_->Enqueue(MakeTask(50, "a", 1, 0, t0_)).ok());  // rejected at once
  ASSERT_EQ(rejections_.size(), 1u);
  EXPECT_EQ(scheduler_->QueueLength("a"), 1);
  scheduler_->Poll();
  EXPECT_EQ(dispatched, 4);
}

// --- Introspection and scale ---

TEST_F(SchedulerTest, IntrospectionOfUnknownNamesIsZero) {
  EXPECT_EQ(scheduler_->QueueLength("x"), 0);
  EXPECT_EQ(scheduler_->QueuedCost("x"), 0);
  EXPECT_EQ(scheduler_->FreeSlots("x"), 0);
}

TEST_F(SchedulerTest, ThousandsOfQueuedTasksDrainInPriorityOrder) {
  QueueOptions options = Options(8, absl::ZeroDuration());
  options.max_queue_size = 20000;
  ASSERT_TRUE(scheduler_->SetQueue("a", options).ok());
  std::mt19937 rng(7);
  constexpr int kTasks = 20000;
  for (int i = 0; i < kTasks; ++i) {
    Enqueue(i, "a", 1, static_cast<int>(rng() % 3));
  }
  scheduler_->SetWorker("w", {"a"}, 4);
  std::vector<Task> order;
  for (int round = 0; round < kTasks && static_cast<int>(order.size()) < kTasks; ++round) {
    for (const Batch& batch : Poll()) {
      EXPECT_EQ(batch.cost(), 8);
      order.insert(order.end(), batch.tasks.begin(), batch.tasks.end());
      scheduler_->ReleaseSlot("w");
    }
  }
  ASSERT_EQ(order.size(), static_cast<size_t>(kTasks));
  for (size_t i = 1; i < order.size(); ++i) {
    ASSERT_LT(std::make_pair(order[i - 1].priority, order[i - 1].id),
              std::make_pair(order[i].priority, order[i].id));
  }
}

}  // namespace
}  // namespace deeplab::scheduler
