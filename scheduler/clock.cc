#include "scheduler/clock.h"

#include "scheduler/annotated_mutex_lock.h"

namespace deeplab::scheduler {

RealClock* RealClock::Get() {
  // Leaked on purpose: schedulers on other threads may still read it during static
  // destruction.
  static RealClock* const clock = new RealClock();
  return clock;
}

absl::Time FakeClock::Now() const {
  AnnotatedMutexLock lock(&mu_);
  return now_;
}

void FakeClock::Advance(absl::Duration d) {
  AnnotatedMutexLock lock(&mu_);
  now_ += d;
}

void FakeClock::Set(absl::Time t) {
  AnnotatedMutexLock lock(&mu_);
  now_ = t;
}

}  // namespace deeplab::scheduler
