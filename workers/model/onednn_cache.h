// The size of oneDNN's primitive cache, where LibTorch's CPU convolutions keep what they have
// built.
//
// oneDNN builds a primitive (JIT-compiled code) per convolution and reorder shape, and so per
// batch size, and keeps the most recent ones in one least-recently-used cache per process:
// 1024 by default. A worker's batches take every size from 1 to the weight set's
// max_batch_size. The demo set needs about 70 primitives per batch size, so sizes 1 to 32
// need about 2,300, and at mixed load the cache keeps evicting and rebuilding them (0.2 to
// 0.5 ms each on a 2-core VM; docs/BENCHMARKS.md, "oneDNN's primitive cache").
#ifndef DEEPLAB_WORKERS_MODEL_ONEDNN_CACHE_H_
#define DEEPLAB_WORKERS_MODEL_ONEDNN_CACHE_H_

#include <optional>

namespace deeplab {

// The worker's default: room for every batch size of a few weight sets. A primitive of the
// demo set takes about 12 KiB, so a full cache of these would hold about 190 MiB; it holds
// only the shapes a worker actually meets.
inline constexpr int kDefaultPrimitiveCacheCapacity = 16384;

// Asks oneDNN to keep `capacity` primitives (0 turns the cache off). oneDNN reads its
// capacity once, from the environment (ONEDNN_PRIMITIVE_CACHE_CAPACITY, or the older
// DNNL_PRIMITIVE_CACHE_CAPACITY), when the process first uses the cache: call this before
// the first convolution. A capacity already in the environment is left as it is, and the
// result is false; true when this call set it.
bool RequestPrimitiveCacheCapacity(int capacity);

// The capacity oneDNN is using, where LibTorch's oneDNN exports it (Debian's LibTorch links
// the shared libdnnl); nullopt where it does not (pip's LibTorch hides oneDNN's symbols).
// Fixes the capacity if nothing has yet.
std::optional<int> PrimitiveCacheCapacity();

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_MODEL_ONEDNN_CACHE_H_
