// Messages between ranks of one host go through shared memory: they pair up, messages arrive
// intact and in any order of receives, a message larger than the ring streams through without
// blocking its sender, and a peer that leaves or goes silent is an error, never a hang.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <thread>

#include "ranks.h"
#include "tpipe/comm/communicator.h"

namespace tpipe::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

CommOptions small_ring(bool shared_memory = true) {
  CommOptions o;
  o.timeout = 20s;
  o.shared_memory = shared_memory;
  o.shm_ring_bytes = 64 << 10;
  return o;
}

// Payload k of a run: several tensors of varied dtypes and shapes, one undefined, one of ~1 MiB.
Payload message(int k, int from) {
  const auto seed = static_cast<double>(1000 * from + k);
  return {at::arange(k + 1, at::kDouble) + seed, at::Tensor(),
          (at::arange(3 * (k % 4 + 1), at::kInt) * from).reshape({3, k % 4 + 1}),
          at::full({k % 2 ? 512 : 1, 512}, seed, at::kFloat)};
}

void expect_same(const Payload& got, const Payload& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].defined(), want[i].defined()) << what << " tensor " << i;
    if (want[i].defined()) EXPECT_TRUE(at::equal(got[i], want[i])) << what << " tensor " << i;
  }
}

TEST(ShmMessages, RanksOfOneHostPairUpUnlessTheyAskForGloo) {
  for (const bool shm : {true, false})
    expect_ranks_ok(3, [&](Communicator& comm) {
      for (int q = 0; q < 3; ++q)
        if (q != comm.rank()) EXPECT_EQ(comm.shares_memory_with(q), shm) << "rank " << comm.rank() << ", peer " << q;
    }, small_ring(shm));
}

// Every rank sends 12 messages to each other rank first (each larger than the ring in total, so
// sends must not wait for the receiver), then receives them in reverse order.
TEST(ShmMessages, EveryMessageArrivesIntactWhateverTheOrderOfReceives) {
  for (const bool shm : {true, false})
    expect_ranks_ok(3, [&](Communicator& comm) {
      const int me = comm.rank(), n = 12;
      for (int q = 0; q < 3; ++q)
        if (q != me)
          for (int k = 0; k < n; ++k)
            comm.send(message(k, me), q, wire::Kind::Activation, k, k % 2, 0, Where{me});
      for (int q = 0; q < 3; ++q) {
        if (q == me) continue;
        for (int k = n - 1; k >= 0; --k) {
          auto r = comm.post_recv(q, wire::Kind::Activation, k, k % 2);
          expect_same(comm.wait_recv(*r, Where{me}), message(k, q),
                      (shm ? "shm" : "gloo") + std::string(": mb ") + std::to_string(k) + " from " + std::to_string(q));
        }
      }
      comm.wait_sends();
      EXPECT_TRUE(comm.tensors_in_flight().empty());
    }, small_ring(shm));
}

// Two messages of the same kind and micro-batch from one peer (a later step's) arrive in order.
TEST(ShmMessages, RepeatedMessagesOfOneChannelArriveInTheOrderSent) {
  expect_ranks_ok(2, [&](Communicator& comm) {
    if (comm.rank() == 0) {
      for (int i = 0; i < 5; ++i) comm.send({at::full({4}, i, at::kLong)}, 1, wire::Kind::Gradient, 3, 0, 0, Where{0});
      comm.wait_sends();
      return;
    }
    for (int i = 0; i < 5; ++i) {
      auto r = comm.post_recv(0, wire::Kind::Gradient, 3);
      EXPECT_TRUE(at::equal(comm.wait_recv(*r, Where{1})[0], at::full({4}, i, at::kLong)));
    }
  }, small_ring());
}

// A send that does not fit the ring is held (and counted as held) until the peer has read it.
TEST(ShmMessages, ASendLargerThanTheRingIsHeldUntilThePeerReadsIt) {
  std::atomic<int> stage{0};
  expect_ranks_ok(2, [&](Communicator& comm) {
    const at::Tensor big = at::arange(1 << 18, at::kFloat);  // 1 MiB, 16 x the ring
    if (comm.rank() == 0) {
      comm.send({big}, 1, wire::Kind::Activation, 0, 0, 0, Where{0});
      ASSERT_EQ(comm.tensors_in_flight().size(), 1u);
      EXPECT_EQ(comm.tensors_in_flight()[0].data_ptr(), big.data_ptr());  // held, not copied
      stage = 1;
      comm.wait_sends();
      EXPECT_TRUE(comm.tensors_in_flight().empty());
      return;
    }
    while (stage == 0) std::this_thread::sleep_for(1ms);
    auto r = comm.post_recv(0, wire::Kind::Activation, 0);
    EXPECT_TRUE(at::equal(comm.wait_recv(*r, Where{1})[0], big));
  }, small_ring());
}

// Ranks that poll while they wait (what `tpipe run` sets up for ranks with cores of their own)
// get the same messages.
TEST(ShmMessages, RanksThatPollWhileTheyWaitGetEveryMessage) {
  CommOptions polling = small_ring();
  polling.spin_wait = 1s;
  expect_ranks_ok(2, [&](Communicator& comm) {
    const int me = comm.rank(), peer = 1 - me, n = 6;
    for (int k = 0; k < n; ++k) {
      if ((k + me) % 2 == 0) comm.send(message(k, me), peer, wire::Kind::Activation, k, 0, 0, Where{me});
      auto r = comm.post_recv(peer, wire::Kind::Activation, k);
      if ((k + me) % 2 == 1) std::this_thread::sleep_for(20ms);  // one side waits, polling
      expect_same(comm.wait_recv(*r, Where{me}), message(k, peer), "message " + std::to_string(k));
      if ((k + me) % 2 == 1) comm.send(message(k, me), peer, wire::Kind::Activation, k, 0, 0, Where{me});
    }
    comm.wait_sends();
  }, polling);
}

TEST(ShmMessages, APeerThatLeavesIsAnErrorAtOnceAndASilentOneAtTheTimeout) {
  CommOptions polling = small_ring();
  polling.spin_wait = 10s;
  for (const auto& options : {small_ring(), polling}) {
    const auto t0 = std::chrono::steady_clock::now();
    auto errors = run_ranks(2, [&](Communicator& comm) {
      if (comm.rank() == 1) throw std::runtime_error("rank 1 fails");
      auto r = comm.post_recv(1, wire::Kind::Gradient, 2);
      comm.wait_recv(*r, Where{0, 0, 2, "0B2"});
    }, options);
    EXPECT_THAT(errors[0], HasSubstr("[rank 0 | stage 0 | mb 2 | 0B2] receiving the gradient of mb 2 from rank 1 "
                                     "failed: rank 1 closed the connection (it died or failed)"));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  }

  CommOptions fast = small_ring(), fast_polling = polling;
  fast.timeout = fast_polling.timeout = 500ms;
  for (const auto& options : {fast, fast_polling}) {
    auto errors = run_ranks(2, [&](Communicator& comm) {
      if (comm.rank() == 1) {
        std::this_thread::sleep_for(2s);
        return;
      }
      auto r = comm.post_recv(1, wire::Kind::Activation, 0);
      comm.wait_recv(*r, Where{0});
    }, options);
    EXPECT_THAT(errors[0], HasSubstr("receiving the activation of mb 0 from rank 1 failed: rank 1 sent nothing for 0.5 s"));
    EXPECT_EQ(errors[1], "");
  }
}

}  // namespace
}  // namespace tpipe::testing
