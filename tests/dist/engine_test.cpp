// Engine behaviour beyond fidelity: evaluation, activation memory of GPipe vs 1F1B.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "fidelity_model.h"
#include "ranks.h"

namespace tpipe::testing {
namespace {

EngineOptions options(const std::string& schedule, int m) {
  EngineOptions o;
  o.schedule = schedule;
  o.microbatches = m;
  o.input_chunking = fidelity_input_chunking();
  return o;
}

TEST(Engine, EvalReturnsTheWholeBatchOutputOnTheLastStageAndTheLossEverywhere) {
  // Reference forward in one process.
  Payload x = fidelity_inputs(0, 10);
  {
    torch::NoGradGuard g;
    for (auto& spec : fidelity_layers()) x = spec.factory()->forward(x);
  }
  const double want_loss = fidelity_loss()(x, fidelity_targets(0, 10)).item<double>();
  std::vector<double> losses(3);
  expect_ranks_ok(3, [&](Communicator& comm) {
    PipelineEngine e(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, options("1f1b", 4));
    const auto r = e.eval_batch(e.is_first_stage() ? fidelity_inputs(0, 10) : Payload{},
                                e.is_last_stage() ? fidelity_targets(0, 10) : Payload{});
    losses[comm.rank()] = r.loss;
    if (e.is_last_stage()) {
      ASSERT_EQ(r.outputs.size(), 3u);
      EXPECT_LE((r.outputs[0] - x[0]).abs().max().item<double>(), 1e-13);
      EXPECT_TRUE(torch::equal(r.outputs[1], x[1]));
      EXPECT_FALSE(r.outputs[0].requires_grad());
    } else {
      EXPECT_TRUE(r.outputs.empty());
    }
  });
  for (double l : losses) EXPECT_NEAR(l, want_loss, 1e-13 * want_loss);
}

// A receiver posts its data receives early when it expects the shapes of the channel's last
// message; batches whose sizes change from call to call (and micro-batches of uneven sizes) must
// still arrive intact, whether the prediction holds or not.
TEST(Engine, MessagesArriveWhenShapesChangeFromStepToStep) {
  const std::vector<int> batches = {10, 10, 7, 13, 13, 10, 4};
  std::vector<Payload> want;
  for (int b : batches) {
    Payload x = fidelity_inputs(b, b);
    torch::NoGradGuard g;
    for (auto& spec : fidelity_layers()) x = spec.factory()->forward(x);
    want.push_back(x);
  }
  for (const bool shm : {true, false}) {  // shared memory, and Gloo (whose receives predict shapes)
    CommOptions co;
    co.shared_memory = shm;
    expect_ranks_ok(3, [&](Communicator& comm) {
      PipelineEngine e(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, options("1f1b", 4));
      for (std::size_t i = 0; i < batches.size(); ++i) {
        const int b = batches[i];
        const auto r = e.eval_batch(e.is_first_stage() ? fidelity_inputs(b, b) : Payload{});
        if (!e.is_last_stage()) continue;
        ASSERT_EQ(r.outputs[0].size(0), b) << "call " << i << (shm ? ", shm" : ", gloo");
        EXPECT_LE((r.outputs[0] - want[i][0]).abs().max().item<double>(), 1e-13) << "call " << i << ", batch " << b;
        EXPECT_TRUE(torch::equal(r.outputs[1], want[i][1])) << "call " << i;
      }
    }, co);
  }
}

// With 8 equal micro-batches on 4 stages, stage 0 stashes all 8 under GPipe and 4 under 1F1B.
// The peak counts what sending holds too: 1F1B's bound (stage s keeps p - s micro-batches) holds
// only because a sent gradient is released once the previous stage has it, not at the step's end.
TEST(Engine, OneFOneBHalvesStageZeroActivationsAgainstGPipe) {
  std::map<std::string, std::vector<std::int64_t>> peak;
  std::mutex mu;
  for (const char* s : {"gpipe", "1f1b"}) {
    peak[s].assign(4, 0);
    expect_ranks_ok(4, [&](Communicator& comm) {
      PipelineEngine e(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, options(s, 8));
      const auto r = e.train_batch(e.is_first_stage() ? fidelity_inputs(0, 16) : Payload{},
                                   e.is_last_stage() ? fidelity_targets(0, 16) : Payload{});
      std::lock_guard<std::mutex> lock(mu);
      peak[s][comm.rank()] = r.held_peak_bytes;
    });
  }
  // Stage 0 per micro-batch: input x [2,6] + ids [2] + output h [2,6] = 96+16+96, and the one
  // replicated scale [6] (48 bytes) that every micro-batch shares.
  EXPECT_EQ(peak["gpipe"][0], 8 * 208 + 48);
  EXPECT_EQ(peak["1f1b"][0], 4 * 208 + 48);
  // Stages 1-3 receive h [2,6], ids [2] and their own copy of scale [6] per micro-batch and
  // output h: 256 bytes, and send back gradients of h and scale (96 + 48 bytes). GPipe keeps all 8
  // micro-batches; 1F1B keeps p - s, plus the gradients still in flight: usually one or two (the
  // previous stage posts its receive one action ahead), a few more when the machine is loaded.
  // Were sent gradients held until the end of the step, stage 3 would reach 256 + 7 * 144 and
  // stage 1 768 + 5 * 144.
  for (int s = 1; s < 4; ++s) {
    EXPECT_EQ(peak["gpipe"][s], 8 * 256) << "stage " << s;
    EXPECT_GE(peak["1f1b"][s], (4 - s) * 256) << "stage " << s;
    EXPECT_LE(peak["1f1b"][s], (4 - s) * 256 + 4 * 144) << "stage " << s;
  }
}

}  // namespace
}  // namespace tpipe::testing
