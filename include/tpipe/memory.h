// Measured memory per rank: the bytes of CPU tensor storage a thread allocates, counted by an
// allocator that wraps c10's. The engine runs each rank's work inside a CountingScope over that
// rank's MemoryCounter, so ranks that are threads of one process are still measured apart.
//
// What is counted: the storage of CPU tensors created through c10's CPU allocator (at::empty and
// everything built on it), from allocation until the storage is freed, on whichever thread frees
// it. What is not: memory that libraries take for themselves (BLAS and oneDNN scratch buffers,
// the autograd graph's nodes, the allocator's own bookkeeping), and storage made on a thread
// outside any scope, even when a scoped thread later resizes it.
//
// This header stays free of LibTorch so that torch-free code can read counters.
#pragma once

#include <cstdint>
#include <memory>

namespace tpipe {

namespace detail {
struct CounterAccess;  // lets the allocator share a counter's state with the storage it counts
}

// Bytes of CPU tensor storage, counted by the allocator below for the threads that use it.
//
// Lifetime: the numbers live in a state shared with every storage the counter counted, so the
// counter may be destroyed while such storage is alive (freeing it later is safe and changes
// nothing visible). A CountingScope must not outlive its counter.
class MemoryCounter {
 public:
  MemoryCounter();
  ~MemoryCounter();
  MemoryCounter(const MemoryCounter&) = delete;  // scopes point at it; a copy would share or split
  MemoryCounter& operator=(const MemoryCounter&) = delete;

  std::int64_t current() const;  // bytes allocated and not yet freed
  std::int64_t peak() const;     // most bytes at once since construction or the last reset_peak
  void reset_peak();             // peak = current

  // Used by the allocator; public so that other measured memory can be charged by hand too.
  void add(std::int64_t bytes);
  void sub(std::int64_t bytes);

  struct State;  // the numbers (atomics), defined with the allocator

 private:
  friend struct detail::CounterAccess;
  std::shared_ptr<State> state_;
};

// Installs (once per process; later calls return the first answer) an allocator for CPU tensors
// that wraps the one c10 had registered for the CPU (normally c10's default allocator) and counts,
// for each allocation made on a thread inside a CountingScope, its bytes in that scope's counter
// until the storage is freed (on any thread). Each allocation costs 64 bytes more (a header that
// says what to give back). Thread-safe; call it before threads that allocate start (the engine
// calls it; with ranks as threads, call it before starting them): an allocation racing the
// installation may go uncounted. Returns false, counting nothing, when the allocator in place
// cannot be wrapped (it lacks c10's raw interface) or c10 did not take the wrapper.
bool install_counting_allocator();

// What the calling thread counts into (its innermost scope's counter, or nothing), to hand to a
// thread that works on its behalf (a communication thread allocating a receive buffer). It keeps
// the numbers alive, so it may outlive the counter.
class CountingContext {
 public:
  static CountingContext current();

 private:
  friend class CountingScope;
  std::shared_ptr<MemoryCounter::State> state_;
};

// While alive, the CPU tensor allocations of the calling thread are counted in `counter` (or the
// context's). Scopes nest (the inner one counts; the outer one is restored at destruction).
// Counting needs install_counting_allocator(); without it a scope counts nothing.
class CountingScope {
 public:
  explicit CountingScope(MemoryCounter& counter);
  explicit CountingScope(const CountingContext& context);
  ~CountingScope();
  CountingScope(const CountingScope&) = delete;
  CountingScope& operator=(const CountingScope&) = delete;

 private:
  std::shared_ptr<MemoryCounter::State> previous_;
};

}  // namespace tpipe
