// A heap stretch advised for huge pages (see huge_heap.h).
#include "tpipe/util/huge_heap.h"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <cstdlib>

namespace tpipe {

void reserve_huge_heap(std::size_t bytes) {
  constexpr std::uintptr_t kHuge = 2u << 20;
  if (bytes < kHuge) return;
  // Allocations up to 32 MiB come from the heap, which the next allocation grows by `bytes` of
  // padding; the padding, untouched so far, is then advised for huge pages. The heap is never
  // trimmed: a trim would hand the advised stretch back, and growing again by brk gives 4 KiB pages.
  if (bytes > static_cast<std::size_t>(INT_MAX)) bytes = INT_MAX;
  if (mallopt(M_MMAP_THRESHOLD, 32 << 20) != 1 || mallopt(M_TRIM_THRESHOLD, INT_MAX) != 1 ||
      mallopt(M_TOP_PAD, static_cast<int>(bytes)) != 1)
    return;
  void* volatile grow = std::malloc(1 << 20);  // more than the heap has free: it grows
  std::free(grow);
  mallopt(M_TOP_PAD, 128 << 10);  // glibc's default again: later growth is ordinary
  const auto top = reinterpret_cast<std::uintptr_t>(sbrk(0));
  const std::uintptr_t begin = (top - bytes + kHuge - 1) / kHuge * kHuge;
  if (top > begin) madvise(reinterpret_cast<void*>(begin), top - begin, MADV_HUGEPAGE);
}

}  // namespace tpipe
