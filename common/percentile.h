// Nearest-rank percentiles, shared by the tools that report latencies (deeplab, deeplab-bench).
#ifndef DEEPLAB_COMMON_PERCENTILE_H_
#define DEEPLAB_COMMON_PERCENTILE_H_

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace deeplab {

// Index, in ascending order, of the nearest-rank `percent` (0..100) percentile of `count`
// values: the smallest value with at least percent% of the values at or below it. count > 0.
inline size_t NearestRankIndex(size_t count, double percent) {
  const double rank = std::ceil(percent * static_cast<double>(count) / 100.0);
  return std::clamp<size_t>(static_cast<size_t>(std::max(1.0, rank)), 1, count) - 1;
}

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_PERCENTILE_H_
