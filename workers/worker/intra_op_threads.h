// Sharing LibTorch's intra-op threads between forward passes that run at once.
//
// On a CPU the worker runs `instances` forward passes at once (two by default), each
// parallelised over LibTorch's intra-op threads (OpenMP). With every pass using every
// thread, two passes at once put twice as many threads as cores to work, and an OpenMP team
// waits at each barrier for whichever member was descheduled. OpenMP keeps the team size
// per calling thread, so each forward thread can size its own: a pass that runs alone takes
// all the threads (a lone request's latency), passes that run at once share them out.
#ifndef DEEPLAB_WORKERS_WORKER_INTRA_OP_THREADS_H_
#define DEEPLAB_WORKERS_WORKER_INTRA_OP_THREADS_H_

namespace deeplab {

// The threads one forward pass takes when `busy` passes (this one included) want to run at
// once with `instances` forward threads: `total` shared out among them, at least one each.
int IntraOpShare(int total, int instances, int busy);

// Sets the intra-op threads of LibTorch ops (and oneDNN primitives) that the calling thread
// runs from now on; other threads keep theirs. False, changing nothing, where OpenMP's
// omp_set_num_threads cannot be found among the loaded libraries (LibTorch built without
// OpenMP).
bool SetIntraOpThreadsOfThisThread(int threads);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_WORKER_INTRA_OP_THREADS_H_
