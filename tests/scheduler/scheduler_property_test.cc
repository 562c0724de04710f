// Randomized property test of the batching scheduler on simulated time.
//
// A reference model of the caller (the gateway) drives the scheduler with random enqueues,
// cancels, worker changes, batch successes and failures and clock moves, keeps its own
// account of every task, and checks every callback against the specification in
// scheduler.h: each task ends exactly once, never goes out after its deadline, batches
// respect their bound and are the front of their queue in dispatch order, slots are never
// overbooked, and the least-loaded worker and the oldest head-of-line are chosen.
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"

namespace deeplab::scheduler {
namespace {

constexpr int kSteps = 5000;
constexpr int kMaxAttempts = 3;

class Harness {
 public:
  explicit Harness(uint64_t seed) : rng_(seed) {
    SchedulerOptions options;
    options.max_attempts = kMaxAttempts;
    auto scheduler = Scheduler::Create(
        options, &clock_, [this](Batch batch) { OnDispatch(std::move(batch)); },
        [this](const Task& task, absl::Status status) { OnReject(task, std::move(status)); });
    EXPECT_TRUE(scheduler.ok()) << scheduler.status();
    scheduler_ = std::move(*scheduler);

    // Weight sets that differ in every option, so that each rule is exercised.
    QueueOptions a;
    a.max_batch_size = 4;
    a.max_queue_delay = absl::Milliseconds(20);
    a.max_queue_size = 40;
    a.default_timeout = absl::Seconds(2);
    a.priority_levels = 3;
    a.priority_aging = absl::Milliseconds(200);
    QueueOptions b;
    b.max_batch_size = 8;
    b.max_queue_delay = absl::ZeroDuration();
    b.max_queue_size = 20;
    b.default_timeout = absl::Seconds(1);
    b.priority_levels = 1;
    QueueOptions c;
    c.max_batch_size = 2;
    c.max_queue_delay = absl::Milliseconds(100);
    c.max_queue_size = 5;
    c.default_timeout = absl::Seconds(5);
    c.priority_levels = 16;
    c.priority_aging = absl::Milliseconds(50);
    queue_options_ = {{"a", a}, {"b", b}, {"c", c}};
    for (const auto& [model, queue_options] : queue_options_) {
      EXPECT_TRUE(scheduler_->SetQueue(model, queue_options).ok());
      queued_[model];
    }
    SetWorker("w0", {"a", "b"}, 2);
    SetWorker("w1", {"c"}, 1);
  }

  void Step() {
    const int r = Uniform(0, 99);
    if (r < 30) {
      EnqueueRandomTask();
    } else if (r < 32) {
      EnqueueDuplicate();
    } else if (r < 38) {
      CancelRandomTask();
    } else if (r < 53) {
      FinishRandomBatch();
    } else if (r < 57) {
      SetRandomWorker();
    } else if (r < 59) {
      RemoveRandomWorker();
    } else if (r < 60) {
      ChangeRandomQueue();
    } else if (r < 78) {
      AdvanceClock();
    } else {
      Poll();
    }
    CheckIntrospection();
  }

  // Keeps a worker for every weight set, lets time pass and finishes every batch until
  // nothing is left.
  void Drain() {
    SetWorker("final", {"a", "b", "c"}, 4);
    for (int i = 0; i < 100000 && (!in_flight_.empty() || QueuedCount() > 0); ++i) {
      while (!in_flight_.empty()) FinishBatch(0, /*succeed=*/true);
      Poll();
      const absl::Time wakeup = scheduler_->NextWakeup();
      if (wakeup == absl::InfiniteFuture()) {
        clock_.Advance(absl::Milliseconds(100));
      } else {
        clock_.Set(std::max(clock_.Now(), wakeup));
      }
    }
    EXPECT_TRUE(in_flight_.empty());
    EXPECT_EQ(QueuedCount(), 0);
    for (const auto& [id, record] : records_) {
      EXPECT_EQ(record.state, State::kEnded) << "task " << id << " never ended";
    }
  }

  std::string Summary() const {
    return absl::StrCat("tasks ", records_.size(), ", completed ", completed_, ", batches ",
                        batches_, ", requeued ", requeued_, ", expired ", expired_,
                        ", unavailable ", unavailable_, ", cancelled ", cancelled_,
                        ", refused full ", refused_full_);
  }
  int completed() const { return completed_; }
  int expired() const { return expired_; }
  int unavailable() const { return unavailable_; }
  int cancelled() const { return cancelled_; }
  int refused_full() const { return refused_full_; }
  int requeued() const { return requeued_; }

 private:
  enum class State { kQueued, kInFlight, kRequeueing, kEnded };
  struct Record {
    Task task;  // as the scheduler must report it
    State state;
  };
  struct WorkerRecord {
    std::vector<std::string> models;
    int slots = 0;
    int busy = 0;
    int free_slots() const { return std::max(0, slots - busy); }
  };
  using Order = std::tuple<int, absl::Time, uint64_t>;

  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  int QueuedCount() const {
    int count = 0;
    for (const auto& [model, ids] : queued_) count += static_cast<int>(ids.size());
    return count;
  }

  // The dispatch order of scheduler.h, computed independently: (effective priority,
  // enqueue_time, id), where a requeued task counts as the most urgent.
  Order DispatchOrder(const Task& task, absl::Time now) const {
    int effective = task.attempts > 0 ? 0 : task.priority;
    const absl::Duration waited = now - task.enqueue_time;
    if (effective > 0 && waited > absl::ZeroDuration()) {
      absl::Duration remainder;
      const int64_t gained =
          absl::IDivDuration(waited, queue_options_.at(task.model).priority_aging, &remainder);
      effective = gained >= effective ? 0 : effective - static_cast<int>(gained);
    }
    return {effective, task.enqueue_time, task.id};
  }

  std::vector<uint64_t> QueueInDispatchOrder(const std::string& model, absl::Time now) const {
    std::vector<uint64_t> ids(queued_.at(model).begin(), queued_.at(model).end());
    std::sort(ids.begin(), ids.end(), [&](uint64_t x, uint64_t y) {
      return DispatchOrder(records_.at(x).task, now) < DispatchOrder(records_.at(y).task, now);
    });
    return ids;
  }

  bool Dispatchable(const std::string& model, absl::Time now) const {
    auto it = queued_.find(model);
    if (it == queued_.end() || it->second.empty()) return false;
    const QueueOptions& options = queue_options_.at(model);
    int64_t cost = 0;
    absl::Time oldest = absl::InfiniteFuture();
    for (uint64_t id : it->second) {
      cost += records_.at(id).task.cost;
      oldest = std::min(oldest, records_.at(id).task.enqueue_time);
    }
    return cost >= options.max_batch_size || options.max_queue_delay == absl::ZeroDuration() ||
           now - oldest >= options.max_queue_delay;
  }

  // The (worker, model) the next free slot must go to, per scheduler.h; empty when none.
  std::pair<std::string, std::string> ExpectedChoice(absl::Time now) const {
    std::pair<std::string, std::string> choice;
    int choice_free = 0;
    for (const auto& [name, worker] : workers_) {  // by name
      if (worker.free_slots() <= choice_free) continue;
      std::string best_model;
      std::pair<absl::Time, uint64_t> best_head;
      for (const std::string& model : worker.models) {
        if (!Dispatchable(model, now)) continue;
        const Task& head = records_.at(QueueInDispatchOrder(model, now).front()).task;
        const std::pair<absl::Time, uint64_t> key(head.enqueue_time, head.id);
        if (best_model.empty() || key < best_head) {
          best_model = model;
          best_head = key;
        }
      }
      if (best_model.empty()) continue;
      choice = {name, best_model};
      choice_free = worker.free_slots();
    }
    return choice;
  }

  void OnDispatch(Batch batch) {
    const absl::Time now = clock_.Now();
    ++batches_;
    ASSERT_FALSE(batch.tasks.empty());
    // Callbacks come after the pass, in order, so the model is where the scheduler was
    // when it formed this batch.
    EXPECT_EQ(ExpectedChoice(now), std::make_pair(batch.worker, batch.model));
    auto worker = workers_.find(batch.worker);
    ASSERT_NE(worker, workers_.end()) << "dispatched to unknown worker " << batch.worker;
    EXPECT_LT(worker->second.busy, worker->second.slots) << "slots overbooked";
    EXPECT_NE(std::find(worker->second.models.begin(), worker->second.models.end(), batch.model),
              worker->second.models.end());

    const QueueOptions& options = queue_options_.at(batch.model);
    EXPECT_TRUE(batch.cost() <= options.max_batch_size || batch.tasks.size() == 1)
        << "batch cost " << batch.cost() << " over " << options.max_batch_size;
    // The longest prefix of the queue in dispatch order that fits.
    std::vector<uint64_t> expected;
    int cost = 0;
    for (uint64_t id : QueueInDispatchOrder(batch.model, now)) {
      const int task_cost = records_.at(id).task.cost;
      if (!expected.empty() && cost + task_cost > options.max_batch_size) break;
      expected.push_back(id);
      cost += task_cost;
      if (cost >= options.max_batch_size) break;
    }
    std::vector<uint64_t> actual;
    for (const Task& task : batch.tasks) actual.push_back(task.id);
    EXPECT_EQ(actual, expected);

    for (const Task& task : batch.tasks) {
      auto record = records_.find(task.id);
      ASSERT_NE(record, records_.end()) << "unknown task " << task.id;
      Record& r = record->second;
      EXPECT_EQ(r.state, State::kQueued) << "task " << task.id << " dispatched while not queued";
      EXPECT_LT(now, task.deadline) << "task " << task.id << " dispatched after its deadline";
      EXPECT_EQ(task.deadline, r.task.deadline);
      EXPECT_EQ(task.enqueue_time, r.task.enqueue_time);
      EXPECT_EQ(task.attempts, r.task.attempts);
      EXPECT_EQ(task.model, batch.model);
      EXPECT_EQ(task.cost, r.task.cost);
      r.state = State::kInFlight;
      queued_[r.task.model].erase(task.id);
    }
    ++worker->second.busy;
    in_flight_.push_back(std::move(batch));
  }

  void OnReject(const Task& task, absl::Status status) {
    const absl::Time now = clock_.Now();
    auto record = records_.find(task.id);
    ASSERT_NE(record, records_.end()) << "unknown task " << task.id;
    Record& r = record->second;
    switch (status.code()) {
      case absl::StatusCode::kDeadlineExceeded:
        EXPECT_TRUE(r.state == State::kQueued || r.state == State::kRequeueing);
        EXPECT_GE(now, r.task.deadline) << "task " << task.id << " expired early";
        ++expired_;
        break;
      case absl::StatusCode::kUnavailable:
        EXPECT_EQ(r.state, State::kRequeueing);
        EXPECT_EQ(task.attempts, kMaxAttempts);
        ++unavailable_;
        break;
      default:
        ADD_FAILURE() << "task " << task.id << " rejected with " << status;
    }
    queued_[r.task.model].erase(task.id);
    r.state = State::kEnded;
  }

  void EnqueueRandomTask() {
    const absl::Time now = clock_.Now();
    Task task;
    task.id = next_id_++;
    const bool known = Uniform(0, 19) != 0;
    task.model = known ? std::string(1, static_cast<char>('a' + Uniform(0, 2))) : "unknown";
    const QueueOptions options = known ? queue_options_.at(task.model) : QueueOptions();
    task.cost = Uniform(0, 4) != 0 ? 1 : Uniform(1, options.max_batch_size + 2);
    const bool priority_ok = Uniform(0, 19) != 0;
    task.priority = priority_ok ? Uniform(0, options.priority_levels - 1)
                                : (Uniform(0, 1) ? -1 : options.priority_levels);
    const int deadline_kind = Uniform(0, 19);
    if (deadline_kind < 10) {
      task.deadline = absl::InfiniteFuture();
    } else if (deadline_kind < 19) {
      task.deadline = now + absl::Milliseconds(Uniform(1, 3000));
    } else {
      task.deadline = now - absl::Milliseconds(Uniform(0, 1000));  // already passed
    }

    Task expected = task;
    expected.enqueue_time = now;
    expected.attempts = 0;
    expected.deadline =
        task.deadline == absl::InfiniteFuture() ? now + options.default_timeout : task.deadline;
    absl::StatusCode expected_code = absl::StatusCode::kOk;
    if (!known) {
      expected_code = absl::StatusCode::kNotFound;
    } else if (!priority_ok) {
      expected_code = absl::StatusCode::kInvalidArgument;
    } else if (expected.deadline > now &&
               static_cast<int>(queued_[task.model].size()) >= options.max_queue_size) {
      expected_code = absl::StatusCode::kResourceExhausted;
    }
    if (expected_code == absl::StatusCode::kOk) {
      // Registered first: a task already past its deadline is rejected during the call.
      records_[task.id] = {expected, State::kQueued};
      queued_[task.model].insert(task.id);
    }
    const absl::Status status = scheduler_->Enqueue(task);
    EXPECT_EQ(status.code(), expected_code) << status;
    if (expected_code == absl::StatusCode::kResourceExhausted) ++refused_full_;
    if (expected_code == absl::StatusCode::kOk && expected.deadline <= now) {
      EXPECT_EQ(records_[task.id].state, State::kEnded) << "expired task was queued";
    }
  }

  void EnqueueDuplicate() {
    for (const auto& [model, ids] : queued_) {
      if (ids.empty()) continue;
      Task task = records_.at(*ids.begin()).task;
      task.attempts = 0;
      task.priority = 0;
      EXPECT_EQ(scheduler_->Enqueue(task).code(), absl::StatusCode::kInvalidArgument);
      return;
    }
  }

  void CancelRandomTask() {
    if (next_id_ == 1) return;
    const uint64_t id = Uniform(1, static_cast<int>(next_id_ - 1));
    auto record = records_.find(id);
    const bool queued = record != records_.end() && record->second.state == State::kQueued;
    EXPECT_EQ(scheduler_->Cancel(id), queued) << "task " << id;
    if (queued) {
      record->second.state = State::kEnded;
      queued_[record->second.task.model].erase(id);
      ++cancelled_;
    }
  }

  void FinishRandomBatch() {
    if (in_flight_.empty()) return;
    FinishBatch(Uniform(0, static_cast<int>(in_flight_.size()) - 1), Uniform(0, 9) < 7);
  }

  void FinishBatch(size_t index, bool succeed) {
    Batch batch = std::move(in_flight_[index]);
    in_flight_.erase(in_flight_.begin() + index);
    WorkerRecord& worker = workers_.at(batch.worker);
    --worker.busy;
    if (succeed) {
      for (const Task& task : batch.tasks) {
        Record& record = records_.at(task.id);
        EXPECT_EQ(record.state, State::kInFlight);
        record.state = State::kEnded;
        ++completed_;
      }
      scheduler_->ReleaseSlot(batch.worker);
    } else if (Uniform(0, 1)) {
      scheduler_->ReleaseSlot(batch.worker);
      Requeue(std::move(batch.tasks));
    } else {
      Requeue(std::move(batch.tasks));
      scheduler_->ReleaseSlot(batch.worker);
    }
  }

  void Requeue(std::vector<Task> tasks) {
    const absl::Time now = clock_.Now();
    std::vector<uint64_t> must_end;
    for (const Task& task : tasks) {
      Record& record = records_.at(task.id);
      EXPECT_EQ(record.state, State::kInFlight);
      record.task.attempts = task.attempts + 1;
      if (record.task.attempts >= kMaxAttempts || record.task.deadline <= now) {
        record.state = State::kRequeueing;
        must_end.push_back(task.id);
      } else {
        record.state = State::kQueued;
        queued_[task.model].insert(task.id);
        ++requeued_;
      }
    }
    scheduler_->Requeue(std::move(tasks));
    for (uint64_t id : must_end) {
      EXPECT_EQ(records_.at(id).state, State::kEnded) << "task " << id << " not rejected";
    }
  }

  void SetWorker(const std::string& name, std::vector<std::string> models, int slots) {
    WorkerRecord& worker = workers_[name];  // busy slots stay counted
    worker.models = models;
    worker.slots = slots;
    scheduler_->SetWorker(name, models, slots);
  }

  void SetRandomWorker() {
    std::vector<std::string> models;
    for (const char* model : {"a", "b", "c", "unknown"}) {
      if (Uniform(0, 1)) models.push_back(model);
    }
    SetWorker(absl::StrCat("w", Uniform(0, 4)), models, Uniform(0, 3));
  }

  void RemoveRandomWorker() {
    if (workers_.empty()) return;
    auto it = workers_.begin();
    std::advance(it, Uniform(0, static_cast<int>(workers_.size()) - 1));
    const std::string name = it->first;
    workers_.erase(it);
    scheduler_->RemoveWorker(name);
    // The worker died: the gateway sends its batches back, and has no slot to release.
    std::vector<Batch> orphans;
    for (auto batch = in_flight_.begin(); batch != in_flight_.end();) {
      if (batch->worker == name) {
        orphans.push_back(std::move(*batch));
        batch = in_flight_.erase(batch);
      } else {
        ++batch;
      }
    }
    for (Batch& batch : orphans) Requeue(std::move(batch.tasks));
  }

  void ChangeRandomQueue() {
    const std::string model(1, static_cast<char>('a' + Uniform(0, 2)));
    QueueOptions& options = queue_options_.at(model);
    options.max_batch_size = Uniform(1, 8);
    options.max_queue_delay = absl::Milliseconds(Uniform(0, 2) * 25);
    EXPECT_TRUE(scheduler_->SetQueue(model, options).ok());
  }

  void AdvanceClock() {
    const absl::Time wakeup = scheduler_->NextWakeup();
    if (Uniform(0, 3) == 0 && wakeup != absl::InfiniteFuture() && wakeup > clock_.Now()) {
      clock_.Set(wakeup);  // exactly at the boundary
    } else {
      clock_.Advance(absl::Milliseconds(Uniform(0, 150)));
    }
  }

  void Poll() {
    scheduler_->Poll();
    // Whatever was due went out: the next wakeup is in the future, so callers never spin.
    EXPECT_GT(scheduler_->NextWakeup(), clock_.Now());
  }

  void CheckIntrospection() {
    for (const auto& [model, ids] : queued_) {
      int cost = 0;
      for (uint64_t id : ids) cost += records_.at(id).task.cost;
      EXPECT_EQ(scheduler_->QueueLength(model), static_cast<int>(ids.size())) << model;
      EXPECT_EQ(scheduler_->QueuedCost(model), cost) << model;
    }
    for (const auto& [name, worker] : workers_) {
      EXPECT_EQ(scheduler_->FreeSlots(name), worker.free_slots()) << name;
    }
  }

  std::mt19937_64 rng_;
  FakeClock clock_;
  std::unique_ptr<Scheduler> scheduler_;
  std::map<std::string, QueueOptions> queue_options_;
  std::map<uint64_t, Record> records_;
  std::map<std::string, std::set<uint64_t>> queued_;
  std::map<std::string, WorkerRecord> workers_;
  std::vector<Batch> in_flight_;
  uint64_t next_id_ = 1;
  int batches_ = 0;
  int completed_ = 0;
  int requeued_ = 0;
  int expired_ = 0;
  int unavailable_ = 0;
  int cancelled_ = 0;
  int refused_full_ = 0;
};

class SchedulerPropertyTest : public ::testing::TestWithParam<uint64_t> {};

TEST_P(SchedulerPropertyTest, EveryTaskEndsExactlyOnceWithinTheRules) {
  Harness harness(GetParam());
  for (int step = 0; step < kSteps; ++step) {
    SCOPED_TRACE(absl::StrCat("seed ", GetParam(), " step ", step));
    harness.Step();
    if (::testing::Test::HasFailure()) break;  // the first failure tells the story
  }
  harness.Drain();
  // A run that never reached a rule proves nothing about it.
  EXPECT_GT(harness.completed(), 0) << harness.Summary();
  EXPECT_GT(harness.expired(), 0) << harness.Summary();
  EXPECT_GT(harness.unavailable(), 0) << harness.Summary();
  EXPECT_GT(harness.cancelled(), 0) << harness.Summary();
  EXPECT_GT(harness.refused_full(), 0) << harness.Summary();
  EXPECT_GT(harness.requeued(), 0) << harness.Summary();
  RecordProperty("summary", harness.Summary());
  std::cout << harness.Summary() << "\n";
}

INSTANTIATE_TEST_SUITE_P(Seeds, SchedulerPropertyTest, ::testing::Values(1, 2, 3, 20240601));

}  // namespace
}  // namespace deeplab::scheduler
