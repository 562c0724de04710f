// The scheduler under real threads, for ThreadSanitizer (scripts/test.sh runs this binary in a
// -DDEEPLAB_SANITIZE=thread build). Without TSan it still checks that every task ends
// exactly once when producers, a poller, a completer and membership changes race.
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"

namespace deeplab::scheduler {
namespace {

TEST(SchedulerThreadTest, ProducersPollerCompleterAndMembershipRace) {
  constexpr int kProducers = 4;
  constexpr int kTasksPerProducer = 1000;
  constexpr int kTasks = kProducers * kTasksPerProducer;

  FakeClock clock;
  std::vector<std::atomic<int>> ends(kTasks);
  std::atomic<int> ended{0};
  std::atomic<int> completed{0};
  auto end_task = [&](uint64_t id) {
    ends[id].fetch_add(1);
    ended.fetch_add(1);
  };
  // Stops every loop if a task is lost, so that a bug fails the test instead of hanging it.
  const absl::Time give_up = absl::Now() + absl::Seconds(120);
  auto running = [&] { return ended.load() < kTasks && absl::Now() < give_up; };

  // std::mutex, not absl::Mutex: TSan sees it without help (see annotated_mutex_lock.h).
  std::mutex mu;
  std::deque<Batch> running_batches;  // guarded by mu
  SchedulerOptions options;
  options.max_attempts = 3;
  auto created = Scheduler::Create(
      options, &clock,
      [&](Batch batch) {
        std::lock_guard<std::mutex> lock(mu);
        running_batches.push_back(std::move(batch));
      },
      [&](const Task& task, absl::Status) { end_task(task.id); });
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Scheduler> scheduler = std::move(*created);

  QueueOptions queue;
  queue.max_batch_size = 4;
  queue.max_queue_delay = absl::Microseconds(50);
  queue.max_queue_size = 64;
  queue.default_timeout = absl::Seconds(60);
  ASSERT_TRUE(scheduler->SetQueue("a", queue).ok());
  ASSERT_TRUE(scheduler->SetQueue("b", queue).ok());
  scheduler->SetWorker("w0", {"a", "b"}, 2);
  scheduler->SetWorker("w1", {"a"}, 1);

  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < kTasksPerProducer; ++i) {
        Task task;
        task.id = static_cast<uint64_t>(p * kTasksPerProducer + i);
        task.model = i % 2 == 0 ? "a" : "b";
        task.cost = 1 + i % 3;
        task.priority = i % 3;
        // Some tasks expire in the queue, concurrently with dispatch.
        if (i % 5 == 0) task.deadline = clock.Now() + absl::Microseconds(200);
        while (true) {
          const absl::Status status = scheduler->Enqueue(task);
          if (status.ok()) break;
          if (status.code() != absl::StatusCode::kResourceExhausted || !running()) {
            ADD_FAILURE() << status;
            end_task(task.id);
            break;
          }
          std::this_thread::yield();
        }
        if (i % 11 == 0 && scheduler->Cancel(task.id)) end_task(task.id);
      }
    });
  }
  threads.emplace_back([&] {  // poller
    while (running()) {
      scheduler->Poll();
      clock.Advance(absl::Microseconds(10));
      EXPECT_GE(scheduler->NextWakeup(), absl::InfinitePast());
    }
  });
  threads.emplace_back([&] {  // completer: one batch in seven fails and goes back
    int finished = 0;
    while (running()) {
      std::optional<Batch> next;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!running_batches.empty()) {
          next = std::move(running_batches.front());
          running_batches.pop_front();
        }
      }
      if (!next.has_value()) {
        std::this_thread::yield();
        continue;
      }
      Batch& batch = *next;
      if (++finished % 7 == 0) {
        scheduler->Requeue(batch.tasks);
      } else {
        for (const Task& task : batch.tasks) {
          end_task(task.id);
          completed.fetch_add(1);
        }
      }
      scheduler->ReleaseSlot(batch.worker);
    }
  });
  threads.emplace_back([&] {  // membership and metrics
    int round = 0;
    while (running()) {
      if (++round % 2 == 0) {
        scheduler->SetWorker("w2", {"b"}, 1 + round % 3);
      } else {
        scheduler->RemoveWorker("w2");
      }
      EXPECT_GE(scheduler->QueueLength("a") + scheduler->QueueLength("b"), 0);
      EXPECT_GE(scheduler->QueuedCost("a"), 0);
      EXPECT_GE(scheduler->FreeSlots("w0"), 0);
      std::this_thread::yield();
    }
  });
  for (std::thread& thread : threads) thread.join();

  ASSERT_EQ(ended.load(), kTasks) << "tasks lost";
  for (int id = 0; id < kTasks; ++id) EXPECT_EQ(ends[id].load(), 1) << "task " << id;
  EXPECT_GT(completed.load(), 0);
  EXPECT_EQ(scheduler->QueueLength("a") + scheduler->QueueLength("b"), 0);
}

}  // namespace
}  // namespace deeplab::scheduler
