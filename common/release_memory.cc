#include "common/release_memory.h"

#include <malloc.h>

// gperftools' C API; present only when tcmalloc is linked (weak: null otherwise).
extern "C" void MallocExtension_ReleaseFreeMemory() __attribute__((weak));

namespace deeplab {

void ReleaseFreeMemory() {
  if (MallocExtension_ReleaseFreeMemory != nullptr) {
    MallocExtension_ReleaseFreeMemory();
  } else {
    malloc_trim(0);
  }
}

}  // namespace deeplab
