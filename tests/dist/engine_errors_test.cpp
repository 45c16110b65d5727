// Failures become clear errors on every rank, never hangs: bad input, a rank that fails
// mid-step, a rank that goes silent.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>

#include "fidelity_model.h"
#include "ranks.h"

namespace tpipe::testing {
namespace {

using ::testing::HasSubstr;

EngineOptions options(int m) {
  EngineOptions o;
  o.microbatches = m;
  o.input_chunking = fidelity_input_chunking();
  return o;
}

void train_once(PipelineEngine& e, int batch) {
  e.train_batch(e.is_first_stage() ? fidelity_inputs(0, batch) : Payload{},
                e.is_last_stage() ? fidelity_targets(0, batch) : Payload{});
}

TEST(EngineErrors, BatchSmallerThanMicroBatchesNamesRankAndStage) {
  const auto errors = run_ranks(2, [](Communicator& comm) {
    PipelineEngine e(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, options(4));
    train_once(e, 3);
  });
  EXPECT_EQ(errors[0],
            "[rank 0 | stage 0] a batch of 3 cannot be split into 4 micro-batches; use at most 3 micro-batches or a "
            "larger batch");
  // The last stage checks its targets the same way, before anything is sent.
  EXPECT_EQ(errors[1],
            "[rank 1 | stage 1] a batch of 3 cannot be split into 4 micro-batches; use at most 3 micro-batches or a "
            "larger batch");
}

TEST(EngineErrors, ATieKeyThatIsALayerNameIsRefused) {
  const auto errors = run_ranks(1, [](Communicator& comm) {
    auto layers = tied_toy_model().layers();
    layers[1].name = "a";  // block0 renamed to the key of a tie
    PipelineEngine e(layers, fidelity_loss(), fidelity_optimizer(), comm, options(2));
  });
  EXPECT_EQ(errors[0], "[rank 0] the tied weight 'a' has the name of a layer; give the tie another key");
}

TEST(EngineErrors, LossThatIsNotANumberIsAShapeErrorAtTheAction) {
  const auto errors = run_ranks(2, [](Communicator& comm) {
    LossFn bad = [](const Payload& out, const Payload& tgt) { return (out[0] - tgt[0]).pow(2); };
    PipelineEngine e(fidelity_layers(), bad, fidelity_optimizer(), comm, options(2));
    train_once(e, 4);
  });
  EXPECT_EQ(errors[1], "[rank 1 | stage 1 | mb 0 | 1F0] the loss function must return one number, got [2,6] double");
  EXPECT_THAT(errors[0], HasSubstr("[rank 0 | stage 0 | mb 0 | 0B0] receiving the gradient of mb 0 from rank 1"));
}

TEST(EngineErrors, LayerErrorNamesTheActionAndPeersFailFast) {
  std::vector<LayerSpec> layers = fidelity_layers();
  layers[6].factory = [] {
    return function_layer([](const Payload& in) -> Payload { return {in[0].matmul(torch::zeros({5, 5})), in[1], in[2]}; });
  };
  const auto start = std::chrono::steady_clock::now();
  CommOptions slow;
  slow.timeout = std::chrono::seconds(60);
  const auto errors = run_ranks(
      3,
      [&](Communicator& comm) {
        PipelineEngine e(layers, fidelity_loss(), fidelity_optimizer(), comm, options(2));
        train_once(e, 4);
      },
      slow);
  EXPECT_THAT(errors[2], HasSubstr("[rank 2 | stage 2 | mb 0 | 2F0] mat1 and mat2 shapes cannot be multiplied"));
  EXPECT_THAT(errors[1], HasSubstr("rank 2 closed the connection"));
  EXPECT_NE(errors[0], "");
  // A dead peer is noticed at once, not after the 60 s timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

TEST(EngineErrors, SilentPeerBecomesATimeoutErrorNamingIt) {
  CommOptions fast;
  fast.timeout = std::chrono::milliseconds(1500);
  const auto errors = run_ranks(
      2,
      [&](Communicator& comm) {
        LossFn slow_loss = [](const Payload& out, const Payload& tgt) {
          std::this_thread::sleep_for(std::chrono::seconds(4));
          return fidelity_loss()(out, tgt);
        };
        PipelineEngine e(fidelity_layers(), comm.rank() == 1 ? slow_loss : fidelity_loss(), fidelity_optimizer(),
                         comm, options(2));
        train_once(e, 4);
      },
      fast);
  EXPECT_THAT(errors[0], HasSubstr("[rank 0 | stage 0 | mb 0 | 0B0] receiving the gradient of mb 0 from rank 1 failed: "
                                   "rank 1 sent nothing for 1.5 s"));
  EXPECT_NE(errors[1], "");
}

// A rank that never reaches a collective (hung in its own work): the members that waited name it.
TEST(EngineErrors, AHungRankIsNamedByTheCollectiveItNeverJoined) {
  CommOptions fast;
  fast.timeout = std::chrono::milliseconds(2500);
  const auto errors = run_ranks(
      3,
      [&](Communicator& comm) {
        std::vector<at::Tensor> one{torch::ones({1})};
        comm.world().all_reduce_sum(one, "a first sum");  // every rank joins this one
        if (comm.rank() == 2) {
          std::this_thread::sleep_for(std::chrono::seconds(4));  // hung past the timeout
          return;
        }
        comm.world().all_reduce_sum(one, "sharing the loss");
      },
      fast);
  for (int r : {0, 1})
    EXPECT_EQ(errors[r], "[rank " + std::to_string(r) +
                             "] sharing the loss in group world failed: rank 2 did not arrive within 2.5 s (hung "
                             "before it, or its schedule does not match this one); the timeout is set by "
                             "CommOptions::timeout");
  EXPECT_EQ(errors[2], "");
}

}  // namespace
}  // namespace tpipe::testing

namespace tpipe::testing {
namespace {

// After a failed step the ranks are out of step: the engine says so instead of mixing messages
// of two steps, and names the first failure.
TEST(EngineErrors, AFailedEngineRefusesFurtherSteps) {
  const auto errors = run_ranks(2, [](Communicator& comm) {
    PipelineEngine e(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, options(4));
    try {
      train_once(e, 3);  // a batch of 3 cannot make 4 micro-batches
    } catch (const ConfigError&) {
    }
    train_once(e, 8);
  });
  for (int r = 0; r < 2; ++r)
    EXPECT_THAT(errors[r], HasSubstr("this engine failed in an earlier step and cannot continue")) << r;
  EXPECT_THAT(errors[0], HasSubstr("The failure was: [rank 0 | stage 0] a batch of 3 cannot be split"));
}

// A second engine on the same Communicator gets groups of its own (names are not reused).
// (Reused names made the second engine's group rendezvous hang: a short timeout fails it fast.)
TEST(EngineErrors, TwoEnginesOnOneCommunicator) {
  CommOptions quick;
  quick.timeout = std::chrono::seconds(20);
  expect_ranks_ok(
      4,
      [](Communicator& comm) {
        EngineOptions o = options(2);
        o.dp = 2;
        for (int i = 0; i < 2; ++i) {
          PipelineEngine e(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, o);
          train_once(e, 8);
        }
      },
      quick);
}

}  // namespace
}  // namespace tpipe::testing
