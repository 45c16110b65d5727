// The counting CPU allocator (see memory.h). It sits in c10's allocator table in front of the
// allocator that was there and only adds a context to the DataPtrs of scoped threads; the memory
// itself always comes from, and goes back to, the wrapped allocator.
#include "tpipe/memory.h"

#include <c10/core/Allocator.h>
#include <c10/core/DeviceType.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <mutex>
#include <utility>

#include "tpipe/error.h"

namespace tpipe {

struct MemoryCounter::State {
  std::atomic<std::int64_t> current{0}, peak{0};

  void add(std::int64_t bytes) {
    const std::int64_t now = current.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    raise_peak(now);
  }
  void sub(std::int64_t bytes) { current.fetch_sub(bytes, std::memory_order_relaxed); }
  void raise_peak(std::int64_t now) {
    std::int64_t seen = peak.load(std::memory_order_relaxed);
    while (now > seen && !peak.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
    }
  }
};

namespace detail {
struct CounterAccess {
  static const std::shared_ptr<MemoryCounter::State>& state(const MemoryCounter& c) { return c.state_; }
};
}  // namespace detail

MemoryCounter::MemoryCounter() : state_(std::make_shared<State>()) {}
MemoryCounter::~MemoryCounter() = default;

std::int64_t MemoryCounter::current() const { return state_->current.load(std::memory_order_relaxed); }
std::int64_t MemoryCounter::peak() const { return state_->peak.load(std::memory_order_relaxed); }

void MemoryCounter::reset_peak() {
  state_->peak.store(current(), std::memory_order_relaxed);
  // An allocation on another thread between the load and the store may have raised current
  // above what was stored; raising again keeps peak >= current.
  state_->raise_peak(current());
}

void MemoryCounter::add(std::int64_t bytes) { state_->add(bytes); }
void MemoryCounter::sub(std::int64_t bytes) { state_->sub(bytes); }

namespace {

// The counter of the calling thread's innermost CountingScope, or null outside any scope.
thread_local MemoryCounter* t_counter = nullptr;

// What a counted DataPtr carries instead of the wrapped allocator's context: that allocator's own
// DataPtr (so that freeing it runs the right deleter) and where to take the bytes back from.
struct Counted {
  c10::DataPtr inner;
  std::int64_t bytes;
  std::shared_ptr<MemoryCounter::State> state;
};

void free_counted(void* context) {
  auto* counted = static_cast<Counted*>(context);
  auto state = std::move(counted->state);
  const std::int64_t bytes = counted->bytes;
  delete counted;  // frees the storage through the wrapped allocator's deleter
  state->sub(bytes);
}

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t n) const override {
    MemoryCounter* counter = t_counter;
    c10::DataPtr inner = inner_->allocate(n);
    if (counter == nullptr || n == 0) return inner;  // nothing to count: c10's DataPtr as it was
    void* data = inner.get();
    const c10::Device device = inner.device();
    const auto& state = detail::CounterAccess::state(*counter);
    auto* counted = new Counted{std::move(inner), static_cast<std::int64_t>(n), state};
    state->add(counted->bytes);
    return c10::DataPtr(data, counted, &free_counted, device);
  }

  // A counted DataPtr's context is not its data pointer, so the raw interface cannot be offered.
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

 private:
  c10::Allocator* inner_;
};

}  // namespace

void install_counting_allocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    c10::Allocator* inner = c10::GetAllocator(c10::DeviceType::CPU);
    // c10's table keeps a pointer and never frees it, so the wrapper lives for the process.
    static CountingAllocator wrapper(inner);
    // Highest priority: c10 ignores a registration below the one in place, and its default CPU
    // allocator is registered at 0 by a static initializer (others may have used more).
    c10::SetAllocator(c10::DeviceType::CPU, &wrapper, std::numeric_limits<std::uint8_t>::max());
    if (c10::GetAllocator(c10::DeviceType::CPU) != &wrapper)
      throw Error("install_counting_allocator: c10 did not take the counting CPU allocator");
  });
}

CountingScope::CountingScope(MemoryCounter& counter) : previous_(t_counter) { t_counter = &counter; }
CountingScope::~CountingScope() { t_counter = previous_; }

}  // namespace tpipe
