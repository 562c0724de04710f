// Time source of the scheduler, injectable so tests run on simulated time.
#ifndef DEEPLAB_SCHEDULER_CLOCK_H_
#define DEEPLAB_SCHEDULER_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace deeplab::scheduler {

// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

class RealClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  // A process-wide instance (never destroyed).
  static RealClock* Get();
};

// Simulated time: starts at a fixed instant and moves only when told. Thread-safe.
class FakeClock : public Clock {
 public:
  FakeClock() = default;
  absl::Time Now() const override;
  void Advance(absl::Duration d);
  void Set(absl::Time t);

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_) = absl::FromUnixSeconds(1'700'000'000);
};

}  // namespace deeplab::scheduler

#endif  // DEEPLAB_SCHEDULER_CLOCK_H_
