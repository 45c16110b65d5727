// Fresh memory at the scale of a large plan (hundreds of MiB of actions) costs mostly its page
// faults, and on virtual machines a 4 KiB page fault is slow: 1024 stages x 8192 micro-batches
// of 1F1B took 1.2 s to generate on 4 KiB pages and 0.1 s on 2 MiB ones. This asks glibc's malloc
// to serve the next `bytes` of small and medium allocations from one stretch of its heap advised
// for transparent huge pages (Linux's "madvise" mode, the common default).
//
// It changes process-wide malloc settings (the mmap threshold, raised to 32 MiB so that
// per-rank lists come from that heap, stays raised; the heap is no longer trimmed, so freed memory
// goes back to the system only at exit), so only programs call it, before planning:
// `tpipe simulate` and the planning bench. A hint: where it cannot be applied, nothing changes.
#pragma once

#include <cstddef>

namespace tpipe {

void reserve_huge_heap(std::size_t bytes);

}  // namespace tpipe
