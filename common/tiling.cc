#include "common/tiling.h"

namespace deeplab {

std::vector<int> TileOrigins(int n, int patch, int stride) {
  std::vector<int> origins = {0};
  if (n <= patch) return origins;
  for (int o = stride; o + patch < n; o += stride) origins.push_back(o);
  if (origins.back() + patch < n) origins.push_back(n - patch);
  return origins;
}

int64_t TileCount(int64_t height, int64_t width, int patch_height, int patch_width, int stride) {
  return static_cast<int64_t>(TileOrigins(static_cast<int>(height), patch_height, stride).size()) *
         static_cast<int64_t>(TileOrigins(static_cast<int>(width), patch_width, stride).size());
}

}  // namespace deeplab
