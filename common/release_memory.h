// Hands memory the process has freed back to the operating system. After one huge image
// (tens of megapixels: decoded pixels, scores restored to the original size, PNGs), the
// allocator keeps the freed pages for reuse, and the worker's resident memory stayed at the
// peak of the largest image it had ever seen. tcmalloc (the workers link it) releases its
// free pages; with glibc's malloc, malloc_trim does.
#ifndef DEEPLAB_COMMON_RELEASE_MEMORY_H_
#define DEEPLAB_COMMON_RELEASE_MEMORY_H_

namespace deeplab {

void ReleaseFreeMemory();

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_RELEASE_MEMORY_H_
