#include "scheduler/scheduler.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "scheduler/annotated_mutex_lock.h"

namespace deeplab::scheduler {
namespace {

// Bounded so that a queue can keep one ordered line per level and find its next task by
// comparing at most this many line heads, however long the queue is.
constexpr int kMaxPriorityLevels = 16;

// Order of the tasks within one line: (enqueue_time, id). Within a line every task has the
// same base priority, so an older task never has a worse effective priority than a newer
// one, and this fixed order agrees with the dispatch order (effective priority,
// enqueue_time, id) at every instant: no re-sorting as tasks age.
using LineKey = std::pair<absl::Time, uint64_t>;

// A requeued task was already at the front of its queue once, and clients of a failed batch
// have waited through a whole dispatch: it goes to the most urgent line so that it runs
// before anything enqueued after it, whatever that task's priority.
int LineOf(const Task& task) { return task.attempts > 0 ? 0 : task.priority; }

int EffectivePriority(int line, absl::Time enqueue_time, absl::Time now,
                      absl::Duration priority_aging) {
  if (line == 0) return 0;
  const absl::Duration waited = now - enqueue_time;
  // A clock set backwards (FakeClock::Set) must not make a task less urgent than it was
  // enqueued.
  if (waited <= absl::ZeroDuration()) return line;
  absl::Duration remainder;
  const int64_t levels_gained = absl::IDivDuration(waited, priority_aging, &remainder);
  return levels_gained >= line ? 0 : line - static_cast<int>(levels_gained);
}

absl::Time ResolveDeadline(const Task& task, const QueueOptions& options) {
  if (task.deadline != absl::InfiniteFuture()) return task.deadline;
  return task.enqueue_time + options.default_timeout;
}

absl::Status DeadlineExceeded(const Task& task, absl::Time now) {
  return absl::DeadlineExceededError(absl::StrCat(
      "deadline exceeded after waiting ", absl::FormatDuration(now - task.enqueue_time),
      " in the queue for weight set '", task.model, "'"));
}

// Thread-safe: one mutex guards all state, and callbacks run after it is released. Does not
// own the clock. Every queued task is indexed three ways (by id, in its priority line, by
// deadline), so that Enqueue, Cancel, expiry and taking the next task cost O(log n) and a
// Poll never walks a whole queue.
class SchedulerImpl final : public Scheduler {
 public:
  SchedulerImpl(SchedulerOptions options, Clock* clock, DispatchFn dispatch, RejectFn reject)
      : options_(std::move(options)),
        clock_(clock),
        dispatch_(std::move(dispatch)),
        reject_(std::move(reject)) {}

  absl::Status SetQueue(const std::string& model, const QueueOptions& options) override;
  absl::Status Enqueue(Task task) override;
  bool Cancel(uint64_t task_id) override;
  void Requeue(std::vector<Task> tasks) override;
  void SetWorker(const std::string& worker, const std::vector<std::string>& models,
                 int slots) override;
  void RemoveWorker(const std::string& worker) override;
  void ReleaseSlot(const std::string& worker) override;
  void Poll() override;
  absl::Time NextWakeup() const override;
  int QueueLength(const std::string& model) const override;
  int QueuedCost(const std::string& model) const override;
  absl::Duration OldestWait(const std::string& model) const override;
  int FreeSlots(const std::string& worker) const override;

 private:
  struct Queue {
    QueueOptions options;
    // One line per base priority (requeued tasks in line 0, see LineOf).
    std::array<absl::btree_set<LineKey>, kMaxPriorityLevels> lines;
    int length = 0;
    int64_t cost = 0;  // 64 bits: a sum of caller-chosen int costs
  };

  struct Worker {
    std::vector<std::string> models;
    int slots = 0;
    // May exceed slots after SetWorker lowers them; such a worker is simply full.
    int busy = 0;
    int free_slots() const { return std::max(0, slots - busy); }
  };

  struct Rejection {
    Task task;
    absl::Status status;
  };

  // Callbacks collected under the lock and run after it is released, so that they may call
  // back into the scheduler.
  struct Outbox {
    std::vector<Rejection> rejections;
    std::vector<Batch> batches;
  };

  void Deliver(Outbox outbox) ABSL_LOCKS_EXCLUDED(mu_);

  void InsertLocked(Queue& queue, Task task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The task must be queued.
  Task RemoveLocked(uint64_t task_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Index of the line whose head is next in dispatch order; -1 when the queue is empty.
  static int NextLine(const Queue& queue, absl::Time now);
  static absl::Time OldestEnqueueTime(const Queue& queue);
  // When the queue may form a partial batch: at its oldest task's enqueue time when it need
  // not wait (full, or no delay), else when that task has waited max_queue_delay.
  static absl::Time DispatchableAt(const Queue& queue);
  // Among the weight sets the worker hosts with a dispatchable queue, the one whose
  // head-of-line task (the next it would send) is oldest; {nullptr, nullptr} when none.
  std::pair<const std::string*, Queue*> PickQueueLocked(const Worker& worker, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Batch TakeBatchLocked(Queue& queue, const std::string& model, const std::string& worker,
                        absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireLocked(absl::Time now, Outbox& outbox) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DispatchLocked(absl::Time now, Outbox& outbox) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SchedulerOptions options_;
  Clock* const clock_;
  const DispatchFn dispatch_;
  const RejectFn reject_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Queue> queues_ ABSL_GUARDED_BY(mu_);
  // Every queued task, by id (for Cancel and duplicate detection).
  absl::flat_hash_map<uint64_t, Task> tasks_ ABSL_GUARDED_BY(mu_);
  // (deadline, id) of every queued task: expiry and NextWakeup look only at the front.
  absl::btree_set<std::pair<absl::Time, uint64_t>> deadlines_ ABSL_GUARDED_BY(mu_);
  // Ordered by name: ties between equally loaded workers go to the first name.
  std::map<std::string, Worker> workers_ ABSL_GUARDED_BY(mu_);
};

void SchedulerImpl::Deliver(Outbox outbox) {
  for (Rejection& rejection : outbox.rejections) {
    reject_(rejection.task, std::move(rejection.status));
  }
  for (Batch& batch : outbox.batches) dispatch_(std::move(batch));
}

void SchedulerImpl::InsertLocked(Queue& queue, Task task) {
  const uint64_t id = task.id;
  queue.lines[LineOf(task)].insert({task.enqueue_time, id});
  deadlines_.insert({task.deadline, id});
  ++queue.length;
  queue.cost += task.cost;
  tasks_.emplace(id, std::move(task));
}

Task SchedulerImpl::RemoveLocked(uint64_t task_id) {
  auto it = tasks_.find(task_id);
  Task task = std::move(it->second);
  tasks_.erase(it);
  Queue& queue = queues_.find(task.model)->second;
  queue.lines[LineOf(task)].erase({task.enqueue_time, task_id});
  deadlines_.erase({task.deadline, task_id});
  --queue.length;
  queue.cost -= task.cost;
  return task;
}

int SchedulerImpl::NextLine(const Queue& queue, absl::Time now) {
  int best = -1;
  std::tuple<int, absl::Time, uint64_t> best_order;
  for (int line = 0; line < kMaxPriorityLevels; ++line) {
    if (queue.lines[line].empty()) continue;
    const LineKey& head = *queue.lines[line].begin();
    const std::tuple<int, absl::Time, uint64_t> order(
        EffectivePriority(line, head.first, now, queue.options.priority_aging), head.first,
        head.second);
    if (best < 0 || order < best_order) {
      best = line;
      best_order = order;
    }
  }
  return best;
}

absl::Time SchedulerImpl::OldestEnqueueTime(const Queue& queue) {
  absl::Time oldest = absl::InfiniteFuture();
  for (const auto& line : queue.lines) {
    if (!line.empty()) oldest = std::min(oldest, line.begin()->first);
  }
  return oldest;
}

absl::Time SchedulerImpl::DispatchableAt(const Queue& queue) {
  if (queue.length == 0) return absl::InfiniteFuture();
  const absl::Time oldest = OldestEnqueueTime(queue);
  if (queue.cost >= queue.options.max_batch_size ||
      queue.options.max_queue_delay == absl::ZeroDuration()) {
    return oldest;
  }
  return oldest + queue.options.max_queue_delay;
}

std::pair<const std::string*, SchedulerImpl::Queue*> SchedulerImpl::PickQueueLocked(
    const Worker& worker, absl::Time now) {
  const std::string* best_model = nullptr;
  Queue* best_queue = nullptr;
  LineKey best_head;
  for (const std::string& model : worker.models) {
    auto it = queues_.find(model);
    if (it == queues_.end()) continue;
    Queue& queue = it->second;
    if (DispatchableAt(queue) > now) continue;
    const LineKey& head = *queue.lines[NextLine(queue, now)].begin();
    if (best_queue == nullptr || head < best_head) {
      best_model = &it->first;
      best_queue = &queue;
      best_head = head;
    }
  }
  return {best_model, best_queue};
}

Batch SchedulerImpl::TakeBatchLocked(Queue& queue, const std::string& model,
                                     const std::string& worker, absl::Time now) {
  Batch batch;
  batch.worker = worker;
  batch.model = model;
  const int64_t max_cost = queue.options.max_batch_size;
  int64_t cost = 0;
  while (cost < max_cost) {
    const int line = NextLine(queue, now);
    if (line < 0) break;
    const uint64_t id = queue.lines[line].begin()->second;
    const int task_cost = tasks_.find(id)->second.cost;
    // Strictly in order: skipping a task that does not fit for smaller ones behind it would
    // let a stream of small tasks hold a large one back indefinitely. The first task always
    // goes, so one costing more than max_batch_size goes alone.
    if (!batch.tasks.empty() && cost + task_cost > max_cost) break;
    cost += task_cost;
    batch.tasks.push_back(RemoveLocked(id));
  }
  return batch;
}

void SchedulerImpl::ExpireLocked(absl::Time now, Outbox& outbox) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    Task task = RemoveLocked(deadlines_.begin()->second);
    absl::Status status = DeadlineExceeded(task, now);
    outbox.rejections.push_back({std::move(task), std::move(status)});
  }
}

void SchedulerImpl::DispatchLocked(absl::Time now, Outbox& outbox) {
  // One batch per iteration, so that every free slot is offered in least-loaded order and the
  // queue it drew from is re-examined before the next slot chooses.
  while (true) {
    const std::string* worker_name = nullptr;
    Worker* worker = nullptr;
    const std::string* model = nullptr;
    Queue* queue = nullptr;
    for (auto& [name, candidate] : workers_) {
      const int free_slots = candidate.free_slots();
      if (free_slots == 0) continue;
      // Earlier names win ties, and a worker with fewer free slots cannot win: skip the
      // queue scan for it.
      if (worker != nullptr && free_slots <= worker->free_slots()) continue;
      auto [candidate_model, candidate_queue] = PickQueueLocked(candidate, now);
      // A worker with no dispatchable queue keeps its slot for later.
      if (candidate_queue == nullptr) continue;
      worker_name = &name;
      worker = &candidate;
      model = candidate_model;
      queue = candidate_queue;
    }
    if (worker == nullptr) return;
    outbox.batches.push_back(TakeBatchLocked(*queue, *model, *worker_name, now));
    ++worker->busy;
  }
}

absl::Status SchedulerImpl::SetQueue(const std::string& model, const QueueOptions& options) {
  if (model.empty()) return absl::InvalidArgumentError("weight set name must not be empty");
  if (absl::Status status = options.Validate(); !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("weight set '", model, "': ", status.message()));
  }
  AnnotatedMutexLock lock(&mu_);
  // Queued tasks keep their line and their deadline: only later decisions see the new
  // options.
  queues_[model].options = options;
  return absl::OkStatus();
}

absl::Status SchedulerImpl::Enqueue(Task task) {
  Outbox outbox;
  {
    AnnotatedMutexLock lock(&mu_);
    auto it = queues_.find(task.model);
    if (it == queues_.end()) {
      return absl::NotFoundError(
          absl::StrCat("unknown weight set '", task.model, "': no queue is configured for it"));
    }
    Queue& queue = it->second;
    if (task.cost < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("task ", task.id, ": cost must be at least 1, got ", task.cost));
    }
    if (task.priority < 0 || task.priority >= queue.options.priority_levels) {
      return absl::InvalidArgumentError(absl::StrCat(
          "priority ", task.priority, " is out of range for weight set '",
          task.model, "' (0 .. ", queue.options.priority_levels - 1, ", 0 the most urgent)"));
    }
    if (tasks_.contains(task.id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "task id ", task.id, " is already queued; ids must be unique among live tasks"));
    }
    const absl::Time now = clock_->Now();
    task.enqueue_time = now;
    task.attempts = 0;
    // Filled in so that the dispatched task carries the deadline to propagate to the worker,
    // and so that a requeued task keeps it instead of getting a fresh default.
    task.deadline = ResolveDeadline(task, queue.options);
    if (task.deadline <= now) {
      // Not an error of the call: the task ends here, like any other expired task. Checked
      // before the size limit since it takes no room.
      absl::Status status = DeadlineExceeded(task, now);
      outbox.rejections.push_back({std::move(task), std::move(status)});
    } else if (queue.length >= queue.options.max_queue_size) {
      return absl::ResourceExhaustedError(absl::StrCat("queue for weight set '", task.model,
                                                       "' is full (", queue.length,
                                                       " waiting); retry later"));
    } else {
      InsertLocked(queue, std::move(task));
    }
  }
  Deliver(std::move(outbox));
  return absl::OkStatus();
}

bool SchedulerImpl::Cancel(uint64_t task_id) {
  AnnotatedMutexLock lock(&mu_);
  if (!tasks_.contains(task_id)) return false;
  RemoveLocked(task_id);
  return true;
}

void SchedulerImpl::Requeue(std::vector<Task> tasks) {
  Outbox outbox;
  {
    AnnotatedMutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (Task& task : tasks) {
      ++task.attempts;
      auto it = queues_.find(task.model);
      absl::Status status;
      if (task.attempts >= options_.max_attempts) {
        status = absl::UnavailableError(absl::StrCat(
            "task ", task.id, " for weight set '", task.model, "' was in ", task.attempts,
            " failed batches (max_attempts ", options_.max_attempts, "); not retried"));
      } else if (it == queues_.end()) {
        // Queues are never removed, so the caller made this task up.
        status = absl::InvalidArgumentError(absl::StrCat(
            "requeued task ", task.id, " names weight set '", task.model, "', which has no queue"));
      } else if (tasks_.contains(task.id)) {
        status = absl::InvalidArgumentError(
            absl::StrCat("requeued task id ", task.id,
                         " is already queued; ids must be unique among live tasks"));
      } else {
        task.deadline = ResolveDeadline(task, it->second.options);
        if (task.deadline <= now) {
          status = DeadlineExceeded(task, now);
        } else {
          // No max_queue_size check: the task was admitted once, and refusing it now would
          // turn a worker failure into an overload error.
          InsertLocked(it->second, std::move(task));
          continue;
        }
      }
      outbox.rejections.push_back({std::move(task), std::move(status)});
    }
  }
  Deliver(std::move(outbox));
}

void SchedulerImpl::SetWorker(const std::string& worker, const std::vector<std::string>& models,
                              int slots) {
  AnnotatedMutexLock lock(&mu_);
  Worker& entry = workers_[worker];
  entry.models = models;
  entry.slots = std::max(0, slots);
}

void SchedulerImpl::RemoveWorker(const std::string& worker) {
  AnnotatedMutexLock lock(&mu_);
  workers_.erase(worker);
}

void SchedulerImpl::ReleaseSlot(const std::string& worker) {
  AnnotatedMutexLock lock(&mu_);
  auto it = workers_.find(worker);
  // A batch may finish after its worker was removed: nothing to release then.
  if (it == workers_.end() || it->second.busy == 0) return;
  --it->second.busy;
}

void SchedulerImpl::Poll() {
  Outbox outbox;
  {
    AnnotatedMutexLock lock(&mu_);
    // One reading of the clock for the whole pass: a task that survives expiry is not past
    // its deadline when it is dispatched in the same pass.
    const absl::Time now = clock_->Now();
    ExpireLocked(now, outbox);
    DispatchLocked(now, outbox);
  }
  Deliver(std::move(outbox));
}

absl::Time SchedulerImpl::NextWakeup() const {
  AnnotatedMutexLock lock(&mu_);
  absl::Time wakeup = deadlines_.empty() ? absl::InfiniteFuture() : deadlines_.begin()->first;
  // A queue delay is timed work only where a worker could take the batch; a queue waiting for
  // a slot is woken by ReleaseSlot or SetWorker instead. Otherwise a queue that is due but
  // has no free worker would make the caller spin on a wakeup in the past.
  for (const auto& [name, worker] : workers_) {
    if (worker.free_slots() == 0) continue;
    for (const std::string& model : worker.models) {
      auto it = queues_.find(model);
      if (it != queues_.end()) wakeup = std::min(wakeup, DispatchableAt(it->second));
    }
  }
  return wakeup;
}

int SchedulerImpl::QueueLength(const std::string& model) const {
  AnnotatedMutexLock lock(&mu_);
  auto it = queues_.find(model);
  return it == queues_.end() ? 0 : it->second.length;
}

int SchedulerImpl::QueuedCost(const std::string& model) const {
  AnnotatedMutexLock lock(&mu_);
  auto it = queues_.find(model);
  if (it == queues_.end()) return 0;
  return static_cast<int>(std::min<int64_t>(it->second.cost, std::numeric_limits<int>::max()));
}

absl::Duration SchedulerImpl::OldestWait(const std::string& model) const {
  AnnotatedMutexLock lock(&mu_);
  auto it = queues_.find(model);
  if (it == queues_.end() || it->second.length == 0) return absl::ZeroDuration();
  return std::max(absl::ZeroDuration(), clock_->Now() - OldestEnqueueTime(it->second));
}

int SchedulerImpl::FreeSlots(const std::string& worker) const {
  AnnotatedMutexLock lock(&mu_);
  auto it = workers_.find(worker);
  return it == workers_.end() ? 0 : it->second.free_slots();
}

}  // namespace

absl::Status QueueOptions::Validate() const {
  if (max_batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_size must be at least 1 (cost units), got ", max_batch_size));
  }
  if (max_queue_delay < absl::ZeroDuration() || max_queue_delay == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_queue_delay must be finite and at least 0 (0 dispatches at once), got ",
                     absl::FormatDuration(max_queue_delay)));
  }
  if (max_queue_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_queue_size must be at least 1, got ", max_queue_size));
  }
  if (default_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_timeout must be positive (InfiniteDuration for none), got ",
                     absl::FormatDuration(default_timeout)));
  }
  if (priority_levels < 1 || priority_levels > kMaxPriorityLevels) {
    return absl::InvalidArgumentError(absl::StrCat("priority_levels must be in [1, ",
                                                   kMaxPriorityLevels, "], got ", priority_levels));
  }
  // Infinite aging would let a stream of urgent tasks starve the others.
  if (priority_aging <= absl::ZeroDuration() || priority_aging == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "priority_aging must be positive and finite, got ", absl::FormatDuration(priority_aging)));
  }
  return absl::OkStatus();
}

absl::Status SchedulerOptions::Validate() const {
  if (max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_attempts must be at least 1, got ", max_attempts));
  }
  return absl::OkStatus();
}

int Batch::cost() const {
  int total = 0;
  for (const Task& task : tasks) total += task.cost;
  return total;
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(SchedulerOptions options, Clock* clock,
                                                             DispatchFn dispatch, RejectFn reject) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  if (clock == nullptr) return absl::InvalidArgumentError("clock must not be null");
  if (!dispatch) return absl::InvalidArgumentError("dispatch callback must be set");
  if (!reject) return absl::InvalidArgumentError("reject callback must be set");
  return std::unique_ptr<Scheduler>(
      new SchedulerImpl(std::move(options), clock, std::move(dispatch), std::move(reject)));
}

}  // namespace deeplab::scheduler
