// A scoped lock of an absl::Mutex that ThreadSanitizer can see. Internal to the scheduler
// library.
//
// The Abseil we build against (Debian's libabsl) is compiled without -fsanitize=thread, so
// TSan never sees absl::Mutex lock or unlock and would report every access to guarded state
// from two threads as a race. In TSan builds this lock also reports the lock as an acquire
// and the unlock as a release of the mutex's address; elsewhere it is exactly
// absl::MutexLock. With an instrumented Abseil the extra edges are redundant and harmless.
#ifndef DEEPLAB_SCHEDULER_ANNOTATED_MUTEX_LOCK_H_
#define DEEPLAB_SCHEDULER_ANNOTATED_MUTEX_LOCK_H_

#include "absl/base/config.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#ifdef ABSL_HAVE_THREAD_SANITIZER
#include <sanitizer/tsan_interface.h>
#endif

namespace deeplab::scheduler {

class ABSL_SCOPED_LOCKABLE AnnotatedMutexLock {
 public:
  explicit AnnotatedMutexLock(absl::Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
#ifdef ABSL_HAVE_THREAD_SANITIZER
    __tsan_acquire(mu_);
#endif
  }
  ~AnnotatedMutexLock() ABSL_UNLOCK_FUNCTION() {
#ifdef ABSL_HAVE_THREAD_SANITIZER
    __tsan_release(mu_);
#endif
    mu_->Unlock();
  }

  AnnotatedMutexLock(const AnnotatedMutexLock&) = delete;
  AnnotatedMutexLock& operator=(const AnnotatedMutexLock&) = delete;

 private:
  absl::Mutex* const mu_;
};

}  // namespace deeplab::scheduler

#endif  // DEEPLAB_SCHEDULER_ANNOTATED_MUTEX_LOCK_H_
