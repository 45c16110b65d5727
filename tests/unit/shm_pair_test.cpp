// The shared-memory channel between two ranks of one host: bytes in order, streaming through a
// small ring, and every way a wait ends without a hang.
#include "comm/shm_pair.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <numeric>
#include <thread>
#include <vector>

namespace tpipe::detail {
namespace {

using namespace std::chrono_literals;

std::string unique_name(const char* what) {
  return "/tpipe-test-" + std::to_string(getpid()) + "-" + what;
}

WaitLimit within(std::chrono::milliseconds t) { return {std::chrono::steady_clock::now() + t, {}}; }

ShmLost::Why why_read_fails(ShmPair& p, const WaitLimit& limit) {
  char c;
  try {
    p.read(&c, 1, limit);
  } catch (const ShmLost& e) {
    return e.why;
  }
  ADD_FAILURE() << "the read did not fail";
  return ShmLost::Why::Stopping;
}

TEST(ShmPair, BytesArriveInOrderBothWaysAndStreamThroughASmallRing) {
  auto a = ShmPair::create(unique_name("order"), 4096);
  auto b = ShmPair::open(unique_name("order"));
  EXPECT_EQ(a->capacity(), 4096u);
  EXPECT_EQ(b->capacity(), 4096u);
  EXPECT_EQ(a->room(), 4096u);
  // 1 MiB each way through 4 KiB rings: both writers must wait for room many times.
  std::vector<std::uint32_t> sent(1 << 18), back(1 << 18);
  std::iota(sent.begin(), sent.end(), 7u);
  std::iota(back.begin(), back.end(), 1000000u);
  std::thread writer([&] { a->write(sent.data(), sent.size() * 4, within(10s)); });
  std::thread replier([&] { b->write(back.data(), back.size() * 4, within(10s)); });
  std::vector<std::uint32_t> got(sent.size()), got_back(back.size());
  // Reads of odd sizes, so that they straddle the ring's end.
  for (std::size_t at = 0; at < got.size() * 4;) {
    const std::size_t k = std::min<std::size_t>(4099, got.size() * 4 - at);
    b->read(reinterpret_cast<char*>(got.data()) + at, k, within(10s));
    at += k;
  }
  a->read(got_back.data(), got_back.size() * 4, within(10s));
  writer.join();
  replier.join();
  EXPECT_EQ(got, sent);
  EXPECT_EQ(got_back, back);
  EXPECT_EQ(a->room(), 4096u);
  const std::uint64_t x = 42;
  a->write(&x, 8, within(1s));
  EXPECT_EQ(a->room(), 4096u - 8);
}

TEST(ShmPair, WhatWasWrittenBeforeClosingIsStillReadThenTheReadFails) {
  auto a = ShmPair::create(unique_name("closed"), 4096);
  auto b = ShmPair::open(unique_name("closed"));
  const std::uint64_t x = 0x1122334455667788;
  a->write(&x, 8, within(1s));
  a.reset();  // the writer's Communicator went away
  std::uint64_t y = 0;
  b->read(&y, 8, within(1s));
  EXPECT_EQ(y, x);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(why_read_fails(*b, within(10s)), ShmLost::Why::PeerClosed);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

TEST(ShmPair, AReaderSleepingWhenThePeerClosesWakesAtOnce) {
  auto a = ShmPair::create(unique_name("wake"), 4096);
  auto b = ShmPair::open(unique_name("wake"));
  std::thread closer([&] {
    std::this_thread::sleep_for(100ms);
    b->close();
  });
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(why_read_fails(*a, within(10s)), ShmLost::Why::PeerClosed);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  closer.join();
  // A writer toward a closed peer fails too (nobody will read).
  const char c = 1;
  EXPECT_THROW(a->write(&c, 1, within(1s)), ShmLost);
}

TEST(ShmPair, AWaitEndsAtItsDeadlineOrWhenTheCallerStops) {
  auto a = ShmPair::create(unique_name("limits"), 4096);
  auto b = ShmPair::open(unique_name("limits"));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(why_read_fails(*b, within(200ms)), ShmLost::Why::TimedOut);
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 2s);
  std::atomic<bool> stop{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);
    stop = true;  // read by the wait between slices
  });
  t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(why_read_fails(*b, {std::chrono::steady_clock::now() + 10s, [&] { return stop.load(); }}),
            ShmLost::Why::Stopping);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  stopper.join();
  // A full ring: the writer waits for room, and gives up at its deadline.
  std::vector<char> big(4096 + 1, 'x');
  try {
    a->write(big.data(), big.size(), within(200ms));
    ADD_FAILURE() << "the write did not fail";
  } catch (const ShmLost& e) {
    EXPECT_EQ(e.why, ShmLost::Why::TimedOut);
  }
}

// A reader that polls (CommOptions::spin_wait) gets its bytes, goes to sleep when its polling
// time is up and is still woken by the writer, and ends on close, deadline and stop as a
// sleeping one does.
TEST(ShmPair, APollingReaderGetsItsBytesAndEndsAsASleepingOneDoes) {
  auto a = ShmPair::create(unique_name("poll"), 4096);
  auto b = ShmPair::open(unique_name("poll"));
  auto polling = [](std::chrono::milliseconds t, std::chrono::milliseconds spin, std::function<bool()> stop = {}) {
    const auto now = std::chrono::steady_clock::now();
    return WaitLimit{now + t, std::move(stop), now + spin};
  };
  for (const std::chrono::milliseconds spin : {10000ms, 100ms}) {  // polls all along; polls, then sleeps before the bytes come
    std::thread writer([&] {
      std::this_thread::sleep_for(300ms);
      const std::uint64_t x = 0xabcdef;
      a->write(&x, 8, within(1s));
    });
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t y = 0;
    b->read(&y, 8, polling(10s, spin));
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(y, 0xabcdefu);
    EXPECT_GE(waited, 300ms);
    EXPECT_LT(waited, 2s);
    writer.join();
  }
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(why_read_fails(*b, polling(200ms, 10s)), ShmLost::Why::TimedOut);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 200ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  std::atomic<bool> stop{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);
    stop = true;
  });
  t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(why_read_fails(*b, polling(10s, 10s, [&] { return stop.load(); })), ShmLost::Why::Stopping);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  stopper.join();
  std::thread closer([&] {
    std::this_thread::sleep_for(100ms);
    a->close();
  });
  t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(why_read_fails(*b, polling(10s, 10s)), ShmLost::Why::PeerClosed);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  closer.join();
}

TEST(ShmPair, APeerProcessThatDiesWithoutClosingIsNoticed) {
  const std::string name = unique_name("died");  // before the fork: the name holds the parent's pid
  auto a = ShmPair::create(name, 4096);
  const pid_t child = fork();
  if (child == 0) {
    try {
      auto b = ShmPair::open(name);
      const std::uint32_t x = 99;
      b->write(&x, 4, within(1s));
      _exit(0);  // as if killed: no destructor, the channel is never closed
    } catch (...) {
      _exit(1);
    }
  }
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::uint32_t x = 0;
  a->read(&x, 4, within(5s));
  EXPECT_EQ(x, 99u);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(why_read_fails(*a, within(10s)), ShmLost::Why::PeerDied);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST(ShmPair, APeerThatDiedButIsNotYetReapedIsNoticed) {
  const std::string name = unique_name("zombie");
  auto a = ShmPair::create(name, 4096);
  const pid_t child = fork();
  if (child == 0) {
    try {
      auto b = ShmPair::open(name);
      _exit(0);  // never closed, and its parent does not reap it until the read below has failed
    } catch (...) {
      _exit(1);
    }
  }
  ASSERT_GT(child, 0);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(why_read_fails(*a, within(10s)), ShmLost::Why::PeerDied);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(ShmPair, TheNameIsGoneOnceUnlinkedAndAForeignSegmentIsRefused) {
  {
    auto a = ShmPair::create(unique_name("name"), 4096);
    EXPECT_THROW(ShmPair::create(unique_name("name"), 4096), std::runtime_error);  // taken
    auto b = ShmPair::open(unique_name("name"));
    a->unlink();
    EXPECT_THROW(ShmPair::open(unique_name("name")), std::runtime_error);
    const std::uint16_t x = 5;
    a->write(&x, 2, within(1s));  // both mappings outlive the name
    std::uint16_t y = 0;
    b->read(&y, 2, within(1s));
    EXPECT_EQ(y, 5);
  }
  const std::string foreign = unique_name("foreign");
  const int fd = shm_open(foreign.c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 1 << 16), 0);
  close(fd);
  EXPECT_THROW(ShmPair::open(foreign), std::runtime_error);
  shm_unlink(foreign.c_str());
  EXPECT_FALSE(shm_identity().empty());
  EXPECT_EQ(shm_identity(), shm_identity());
}

}  // namespace
}  // namespace tpipe::detail
