#include "workers/model/onednn_cache.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>

namespace deeplab {

bool RequestPrimitiveCacheCapacity(int capacity) {
  if (std::getenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY") != nullptr ||
      std::getenv("DNNL_PRIMITIVE_CACHE_CAPACITY") != nullptr) {
    return false;
  }
  return setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", std::to_string(capacity).c_str(), 0) == 0;
}

std::optional<int> PrimitiveCacheCapacity() {
  // dnnl_status_t dnnl_get_primitive_cache_capacity(int *capacity), from oneDNN's C API
  // (dnnl.h, not installed with LibTorch); dnnl_success is 0.
  using Getter = int (*)(int*);
  auto getter = reinterpret_cast<Getter>(dlsym(RTLD_DEFAULT, "dnnl_get_primitive_cache_capacity"));
  int capacity = 0;
  if (getter == nullptr || getter(&capacity) != 0) return std::nullopt;
  return capacity;
}

}  // namespace deeplab
