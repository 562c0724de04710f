// Patch layout of tiled weight sets, shared by the worker (which cuts the patches) and the
// gateway (which counts them: a tiled image costs its patch count in a batch).
#ifndef DEEPLAB_COMMON_TILING_H_
#define DEEPLAB_COMMON_TILING_H_

#include <cstdint>
#include <vector>

namespace deeplab {

// Patch origins along one dimension of n pixels: every `stride` from 0, plus one flush
// with the end, so every pixel is covered. One origin (0) when n <= patch.
std::vector<int> TileOrigins(int n, int patch, int stride);

// Patches of a height x width image: the product of both dimensions' origin counts.
int64_t TileCount(int64_t height, int64_t width, int patch_height, int patch_width, int stride);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_TILING_H_
