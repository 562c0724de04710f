// A fixed-size pool of threads running queued closures in FIFO order.
//
// Thread-safe. The destructor runs every closure already queued, then joins; closures must
// not call Schedule on a pool that is being destroyed.
#ifndef DEEPLAB_COMMON_THREAD_POOL_H_
#define DEEPLAB_COMMON_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace deeplab {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Schedule(std::function<void()> task);
  int size() const { return static_cast<int>(threads_.size()); }

 private:
  void Run();

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_THREAD_POOL_H_
