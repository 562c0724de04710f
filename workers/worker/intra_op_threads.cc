#include "workers/worker/intra_op_threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>

namespace deeplab {

int IntraOpShare(int total, int instances, int busy) {
  const int sharing = std::clamp(busy, 1, std::max(1, instances));
  return std::max(1, total / sharing);
}

bool SetIntraOpThreadsOfThisThread(int threads) {
  // Looked up among the loaded libraries, not linked: the OpenMP runtime must be the one
  // LibTorch uses (pip's LibTorch carries its own copy of libgomp under another name).
  using SetNumThreads = void (*)(int);
  static const auto set_num_threads =
      reinterpret_cast<SetNumThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set_num_threads == nullptr || threads < 1) return false;
  // LibTorch sizes a thread's team from the process-wide setting the first time that thread
  // asks; have it do so now, so that it does not undo this later.
  (void)at::get_num_threads();
  set_num_threads(threads);
  return at::get_num_threads() == threads;
}

}  // namespace deeplab
