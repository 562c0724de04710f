// The dynamic batching scheduler of the gateway (DESIGN.md section 4).
//
// It never sees a payload: a task is an id with a weight set, a cost, a priority and a
// deadline; what a batch means is the caller's business (TF Serving's batching library
// style). The caller describes the workers (which weight sets each hosts, how many batch
// slots it has) and drives the scheduler with Poll(), which:
//   1. answers every queued task whose deadline has passed with DEADLINE_EXCEEDED (such a
//      task is never dispatched);
//   2. while some worker has a free slot, forms batches for it and hands them to the
//      dispatch callback. For each free slot (workers with the most free slots first, then
//      by name: least loaded first), among the weight sets the worker hosts that have a
//      dispatchable queue, it picks the one whose head-of-line task has waited longest
//      (fairness between weight sets sharing workers: no starvation). A queue is
//      dispatchable when its queued cost reaches max_batch_size, or its oldest task has
//      waited max_queue_delay, or max_queue_delay is zero. The batch takes tasks in
//      effective-priority order, then arrival order, while the total cost stays within
//      max_batch_size (a single task costing more than max_batch_size goes alone).
// Priority: 0 is the most urgent. A task's effective priority improves by one level per
// priority_aging of waiting, so low-priority work is delayed, never starved.
//
// Callbacks run on the thread that called Poll (or Enqueue/Requeue, for immediate
// rejections), never while the scheduler's lock is held, so they may call back into the
// scheduler. Every task ends exactly once: dispatched in a batch (the caller then owns its
// outcome), or rejected through the reject callback, or removed by Cancel (true returned;
// the caller answers it).
//
// Thread-safe.
#ifndef DEEPLAB_SCHEDULER_SCHEDULER_H_
#define DEEPLAB_SCHEDULER_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"

namespace deeplab::scheduler {

// Batching options of one weight set. Units are in the field names.
struct QueueOptions {
  // Largest batch in cost units. The worker's forward pass grows with it; 8 fits a CPU.
  int max_batch_size = 8;
  // How long a partial batch may wait for more tasks. 0: dispatch at once.
  absl::Duration max_queue_delay = absl::ZeroDuration();
  // Tasks waiting beyond this are refused at Enqueue with RESOURCE_EXHAUSTED: bounded
  // memory and early refusal under overload.
  int max_queue_size = 256;
  // Deadline for tasks enqueued without one.
  absl::Duration default_timeout = absl::Seconds(60);
  // Number of priority levels; priorities are 0 .. priority_levels - 1.
  int priority_levels = 3;
  // Waiting this long raises a task's effective priority by one level.
  absl::Duration priority_aging = absl::Seconds(1);

  // INVALID_ARGUMENT naming the field when a value is out of range.
  absl::Status Validate() const;
};

struct Task {
  uint64_t id = 0;           // unique among live tasks; chosen by the caller
  std::string model;         // weight set
  int cost = 1;              // cost units: 1, or a tiled image's patch count
  int priority = 0;          // 0 most urgent
  absl::Time deadline = absl::InfiniteFuture();  // InfiniteFuture: the queue's default timeout
  // Set by the scheduler: when the task was first enqueued, and how many batches it was in
  // that failed (see Requeue).
  absl::Time enqueue_time;
  int attempts = 0;
};

struct Batch {
  std::string worker;
  std::string model;
  std::vector<Task> tasks;
  int cost() const;
};

struct SchedulerOptions {
  // A task whose batch failed this many times is rejected with UNAVAILABLE instead of being
  // requeued: a poisonous request must not take down every worker in turn.
  int max_attempts = 3;

  absl::Status Validate() const;
};

class Scheduler {
 public:
  using DispatchFn = std::function<void(Batch)>;
  using RejectFn = std::function<void(const Task&, absl::Status)>;

  // INVALID_ARGUMENT for bad options or missing callbacks; clock must outlive the scheduler.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(SchedulerOptions options,
                                                           Clock* clock, DispatchFn dispatch,
                                                           RejectFn reject);
  virtual ~Scheduler() = default;

  // Adds a weight set, or updates its options (tasks already queued keep their place).
  virtual absl::Status SetQueue(const std::string& model, const QueueOptions& options) = 0;

  // Queues a task. NOT_FOUND: no queue for the model (SetQueue first); RESOURCE_EXHAUSTED:
  // the queue is full; INVALID_ARGUMENT: bad cost or priority, or a duplicate id. On error
  // the task is not queued and no callback runs for it.
  virtual absl::Status Enqueue(Task task) = 0;

  // Removes a queued task; false if it is not queued (already dispatched or ended).
  virtual bool Cancel(uint64_t task_id) = 0;

  // A dispatched batch failed before running (its worker died or answered UNAVAILABLE):
  // its tasks go back to the front of their queue, keeping their enqueue time, with
  // attempts + 1; tasks at max_attempts are rejected with UNAVAILABLE instead.
  virtual void Requeue(std::vector<Task> tasks) = 0;

  // Worker membership and capacity. SetWorker adds a worker or replaces what is known of it
  // (weight sets it can serve now, and its batch slots); busy slots stay counted until
  // released. RemoveWorker forgets it (its busy slots are gone with it).
  virtual void SetWorker(const std::string& worker, const std::vector<std::string>& models,
                         int slots) = 0;
  virtual void RemoveWorker(const std::string& worker) = 0;
  // A dispatched batch on this worker finished (either way): its slot is free again.
  virtual void ReleaseSlot(const std::string& worker) = 0;

  // Expires deadlines and dispatches what can go now (see the file comment).
  virtual void Poll() = 0;
  // When Poll next has timed work to do (a queue delay or a deadline running out);
  // InfiniteFuture when nothing is waiting on time. Enqueue, ReleaseSlot, SetWorker and
  // Requeue may make work possible sooner: call Poll after them.
  virtual absl::Time NextWakeup() const = 0;

  // Introspection for metrics and tests.
  virtual int QueueLength(const std::string& model) const = 0;
  virtual int QueuedCost(const std::string& model) const = 0;
  // How long the longest-waiting queued task of the model has waited; zero when none waits.
  virtual absl::Duration OldestWait(const std::string& model) const = 0;
  virtual int FreeSlots(const std::string& worker) const = 0;
};

}  // namespace deeplab::scheduler

#endif  // DEEPLAB_SCHEDULER_SCHEDULER_H_
