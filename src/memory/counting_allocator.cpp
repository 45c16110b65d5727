// The counting CPU allocator (see memory.h). It sits in c10's allocator table in front of the
// allocator that was there; the memory always comes from, and goes back to, that one.
#include "tpipe/memory.h"

#include <c10/core/Allocator.h>
#include <c10/core/DeviceType.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <new>
#include <utility>


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

// The numbers of the calling thread's innermost CountingScope, or null outside any scope.
thread_local std::shared_ptr<MemoryCounter::State> t_state;

// Every allocation, counted or not, gets a header in front of its data: the bytes and the
// counter's state to give them back to. The data pointer is then the DataPtr's context, as c10's
// raw interface (raw_allocate / raw_deallocate, which some kernels use for scratch buffers)
// requires, and one deleter frees everything this allocator made.
constexpr std::size_t kHeader = 64;  // keeps the data as aligned as c10's allocations (64 bytes)
constexpr std::uint64_t kMagic = 0x746e637065706974ull;

struct Header {
  std::uint64_t magic;
  std::int64_t bytes;
  std::shared_ptr<MemoryCounter::State> state;  // null: not counted
};
static_assert(sizeof(Header) <= kHeader, "the header must fit in front of the data");

c10::DeleterFnPtr inner_raw_free = nullptr;  // the wrapped allocator's, set once at installation

void free_counted(void* data) {
  if (data == nullptr) return;
  char* base = static_cast<char*>(data) - kHeader;
  auto* h = reinterpret_cast<Header*>(base);
  // A raw pointer the wrapped allocator gave out before the installation has no header.
  if (h->magic != kMagic) return inner_raw_free(data);
  h->magic = 0;
  if (h->state) h->state->sub(h->bytes);
  h->~Header();
  inner_raw_free(base);
}

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t n) const override {
    char* base = static_cast<char*>(inner_->raw_allocate(n + kHeader));
    std::shared_ptr<MemoryCounter::State> state;
    if (n > 0) state = t_state;
    if (state) state->add(static_cast<std::int64_t>(n));
    new (base) Header{kMagic, static_cast<std::int64_t>(n), std::move(state)};
    void* data = base + kHeader;
    return c10::DataPtr(data, data, &free_counted, c10::Device(c10::DeviceType::CPU));
  }

  c10::DeleterFnPtr raw_deleter() const override { return &free_counted; }

 private:
  c10::Allocator* inner_;
};

}  // namespace

bool install_counting_allocator() {
  static const bool installed = [] {
    c10::Allocator* inner = c10::GetAllocator(c10::DeviceType::CPU);
    // The headers need the wrapped allocator's raw interface (c10's default one has it).
    if (inner == nullptr || inner->raw_deleter() == nullptr) return false;
    inner_raw_free = inner->raw_deleter();
    // c10's table keeps a pointer and never frees it, so the wrapper lives for the process.
    static CountingAllocator wrapper(inner);
    // Highest priority: c10 ignores a registration below the one in place, and its default CPU
    // allocator is registered at 0 by a static initializer (others may have used more).
    c10::SetAllocator(c10::DeviceType::CPU, &wrapper, std::numeric_limits<std::uint8_t>::max());
    return c10::GetAllocator(c10::DeviceType::CPU) == &wrapper;
  }();
  return installed;
}

CountingContext CountingContext::current() {
  CountingContext c;
  c.state_ = t_state;
  return c;
}

CountingScope::CountingScope(MemoryCounter& counter) : previous_(t_state) {
  t_state = detail::CounterAccess::state(counter);
}
CountingScope::CountingScope(const CountingContext& context) : previous_(t_state) { t_state = context.state_; }
CountingScope::~CountingScope() { t_state = std::move(previous_); }

}  // namespace tpipe
