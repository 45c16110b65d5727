// The counting CPU allocator: exact bytes of tensor storage per scope, freed on any thread, kept
// apart per thread, and safe when storage outlives its counter.
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <c10/core/Allocator.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

#include "tpipe/memory.h"

namespace tpipe {
namespace {

at::Tensor doubles(std::int64_t n) { return at::empty({n}, at::kDouble); }

// (current, peak), to compare both at once.
using Bytes = std::pair<std::int64_t, std::int64_t>;
Bytes bytes(const MemoryCounter& c) { return {c.current(), c.peak()}; }

// First in the file, so that (unless shuffled) the tensor predates the installation.
TEST(MemoryCounter, InstallingTwiceKeepsEarlierTensorsWorking) {
  at::Tensor before = at::ones({1000}, at::kDouble);
  ASSERT_TRUE(install_counting_allocator());
  c10::Allocator* installed = c10::GetAllocator(c10::DeviceType::CPU);
  EXPECT_TRUE(install_counting_allocator());
  EXPECT_EQ(c10::GetAllocator(c10::DeviceType::CPU), installed);
  MemoryCounter counter;
  CountingScope scope(counter);
  EXPECT_DOUBLE_EQ(before.sum().item<double>(), 1000.0);  // the sum's result is counted, then freed
  before.reset();
  EXPECT_EQ(counter.current(), 0);
}

TEST(MemoryCounter, CountsExactBytesAndKeepsThePeak) {
  install_counting_allocator();
  MemoryCounter counter;
  EXPECT_EQ(bytes(counter), Bytes(0, 0));
  CountingScope scope(counter);
  at::Tensor a = doubles(1000);
  EXPECT_EQ(bytes(counter), Bytes(8000, 8000));
  at::Tensor b = doubles(2000);
  EXPECT_EQ(bytes(counter), Bytes(24000, 24000));
  a.reset();
  EXPECT_EQ(bytes(counter), Bytes(16000, 24000));
  counter.reset_peak();
  EXPECT_EQ(bytes(counter), Bytes(16000, 16000));
  b.reset();
  EXPECT_EQ(bytes(counter), Bytes(0, 16000));
}

TEST(MemoryCounter, CountsTheResultsOfOperators) {
  install_counting_allocator();
  const at::Tensor a = at::ones({50, 40}, at::kDouble), b = at::ones({40, 30}, at::kDouble);
  MemoryCounter counter;
  CountingScope scope(counter);
  at::Tensor c = a.mm(b);
  EXPECT_EQ(counter.current(), 50 * 30 * 8);
  at::Tensor view = c.view({30, 50});  // a view shares the storage: nothing new
  EXPECT_EQ(counter.current(), 50 * 30 * 8);
  at::Tensor d = c.add(c).to(at::kFloat);
  EXPECT_EQ(counter.current(), 50 * 30 * 8 + 50 * 30 * 4);
  EXPECT_GE(counter.peak(), 50 * 30 * 8 * 2 + 50 * 30 * 4);  // the add's result lived until .to
  for (at::Tensor* t : {&c, &view, &d}) t->reset();
  EXPECT_EQ(counter.current(), 0);
}

// LibTorch runs a CPU backward on the thread that calls it, so its gradients count there too.
TEST(MemoryCounter, CountsTheGradientsOfABackward) {
  install_counting_allocator();
  at::Tensor x = at::ones({1000}, at::kDouble).requires_grad_(true);
  MemoryCounter counter;
  CountingScope scope(counter);
  at::Tensor y = x.mul(x).sum();
  EXPECT_EQ(bytes(counter), Bytes(8, 8000 + 8));  // the loss; the product died as sum's input
  y.backward();
  EXPECT_EQ(counter.current(), 8 + 8000);  // and x's gradient
  ASSERT_TRUE(x.grad().defined());
  x.mutable_grad().reset();
  y.reset();
  EXPECT_EQ(counter.current(), 0);
}

TEST(MemoryCounter, IgnoresAllocationsOutsideScopes) {
  install_counting_allocator();
  MemoryCounter counter;
  { CountingScope scope(counter); }
  at::Tensor outside = doubles(1000);
  EXPECT_EQ(bytes(counter), Bytes(0, 0));
  CountingScope scope(counter);
  outside.reset();  // freed in a scope, but never counted: nothing to take back
  EXPECT_EQ(counter.current(), 0);
}

TEST(MemoryCounter, NestedScopesCountInTheInnermostAndRestoreTheOuter) {
  install_counting_allocator();
  MemoryCounter outer, inner;
  CountingScope outer_scope(outer);
  at::Tensor a = doubles(100), b;
  {
    CountingScope inner_scope(inner);
    b = doubles(200);
  }
  at::Tensor c = doubles(300);
  EXPECT_EQ(outer.current(), 800 + 2400);
  EXPECT_EQ(inner.current(), 1600);
  b.reset();  // returns to the counter it was counted in, whatever scope frees it
  EXPECT_EQ(inner.current(), 0);
  EXPECT_EQ(outer.current(), 800 + 2400);
}

TEST(MemoryCounter, StorageFreedOnAnotherThreadIsSubtracted) {
  install_counting_allocator();
  MemoryCounter counter;
  at::Tensor t = [&] {
    CountingScope scope(counter);
    return doubles(1000);
  }();
  EXPECT_EQ(counter.current(), 8000);
  std::thread([moved = std::move(t)]() mutable { moved.reset(); }).join();
  EXPECT_EQ(bytes(counter), Bytes(0, 8000));
}

TEST(MemoryCounter, StorageMayOutliveItsCounter) {
  install_counting_allocator();
  at::Tensor t;
  {
    MemoryCounter counter;
    CountingScope scope(counter);
    t = doubles(1000);
    EXPECT_EQ(counter.current(), 8000);
  }
  t.fill_(1.0);
  t.reset();  // the counter's state is still alive: no use after free
}

TEST(MemoryCounter, ZeroBytesAndTheAllocatorItself) {
  install_counting_allocator();
  MemoryCounter counter;
  CountingScope scope(counter);
  doubles(0).reset();
  EXPECT_EQ(counter.current(), 0);
  c10::Allocator* allocator = c10::GetAllocator(c10::DeviceType::CPU);
  allocator->allocate(0).clear();
  c10::DataPtr p = allocator->allocate(100);
  ASSERT_NE(p.get(), nullptr);
  EXPECT_EQ(p.device(), c10::Device(c10::DeviceType::CPU));
  static_cast<char*>(p.get())[99] = 1;
  EXPECT_EQ(counter.current(), 100);
  p.clear();
  EXPECT_EQ(counter.current(), 0);
}

// c10's raw interface (kernels' scratch buffers): a raw allocation is counted like any other and
// raw_deallocate gives it back, inside a scope or not, and 64-byte alignment is kept.
TEST(MemoryCounter, RawAllocationsAreCountedAndFreed) {
  ASSERT_TRUE(install_counting_allocator());
  c10::Allocator* allocator = c10::GetAllocator(c10::DeviceType::CPU);
  ASSERT_NE(allocator->raw_deleter(), nullptr);
  void* outside = allocator->raw_allocate(256);
  MemoryCounter counter;
  {
    CountingScope scope(counter);
    void* inside = allocator->raw_allocate(4096);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(inside) % 64, 0u);
    static_cast<char*>(inside)[4095] = 1;
    EXPECT_EQ(bytes(counter), Bytes(4096, 4096));
    allocator->raw_deallocate(outside);  // made outside the scope: not counted, still freed
    EXPECT_EQ(counter.current(), 4096);
    allocator->raw_deallocate(inside);
  }
  EXPECT_EQ(bytes(counter), Bytes(0, 4096));
}

TEST(MemoryCounter, ThreadsWithTheirOwnCountersCountApart) {
  install_counting_allocator();
  constexpr int kThreads = 4, kRounds = 200;
  std::vector<MemoryCounter> counters(kThreads);
  std::vector<int> wrong(kThreads, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&, i] {
      CountingScope scope(counters[i]);
      const std::int64_t n = 100 * (i + 1);
      for (int r = 0; r < kRounds; ++r) {
        std::vector<at::Tensor> held;
        for (int k = 0; k <= i; ++k) held.push_back(doubles(n));
        if (counters[i].current() != 8 * n * (i + 1)) ++wrong[i];
      }
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {  // exact: no thread's tensors reached another's counter
    EXPECT_EQ(wrong[i], 0) << "thread " << i;
    EXPECT_EQ(bytes(counters[i]), Bytes(0, 8 * 100 * (i + 1) * (i + 1))) << "thread " << i;
  }
}

TEST(MemoryCounter, ThreadsSharingACounterAddUp) {
  install_counting_allocator();
  constexpr int kThreads = 4;
  MemoryCounter counter;
  std::vector<at::Tensor> made(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&, i] {
      CountingScope scope(counter);
      for (int r = 0; r < 100; ++r) doubles(10).fill_(r);  // churn while the others allocate
      made[i] = doubles(1000);
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter.current(), kThreads * 8000);
  made.clear();
  EXPECT_EQ(counter.current(), 0);
}

}  // namespace
}  // namespace tpipe
