// Tied weights never drift: after many Adam steps every copy is bitwise equal, the audit says
// so, and a copy perturbed on purpose makes the audit fail on every rank of the tie, by name.
// Also: a world that is not pp x dp is refused with a message that says what to start.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <mutex>

#include "fidelity_model.h"
#include "ranks.h"

namespace tpipe::testing {
namespace {

using ::testing::HasSubstr;

EngineOptions pp2_dp2() {
  EngineOptions o;
  o.microbatches = 2;
  o.dp = 2;
  o.tie_audit_every = 5;
  return o;
}

TEST(TieAudit, CopiesAreBitwiseEqualAfterTenAdamSteps) {
  std::mutex mu;
  std::vector<at::Tensor> copies;
  expect_ranks_ok(4, [&](Communicator& comm) {
    std::unique_ptr<PipelineEngine> engine;
    pipelined_run(gpt_test_model(), comm, pp2_dp2(), 8, 10, &engine);  // audits at steps 5 and 10
    engine->audit_ties();
    for (auto& [name, t] : engine->named_parameters())
      if (name == "wte.weight") {
        std::lock_guard<std::mutex> lock(mu);
        copies.push_back(t.detach().clone());
      }
  });
  ASSERT_EQ(copies.size(), 4u) << "stage 0 and stage 1 of both replicas hold wte";
  for (std::size_t i = 1; i < copies.size(); ++i) EXPECT_TRUE(torch::equal(copies[i], copies[0])) << i;
  // And they did move: training changed them.
  EXPECT_FALSE(torch::equal(copies[0], gpt_test_model().layers().front().tied->factory()->parameters()[0]));
}

TEST(TieAudit, APerturbedCopyFailsTheAuditOnEveryRankOfTheTie) {
  const auto errors = run_ranks(4, [&](Communicator& comm) {
    std::unique_ptr<PipelineEngine> engine;
    pipelined_run(gpt_test_model(), comm, pp2_dp2(), 8, 2, &engine);
    if (comm.rank() == 2) {  // stage 1, replica 0
      torch::NoGradGuard no_grad;
      for (auto& [name, t] : engine->named_parameters())
        if (name == "wte.weight") t.view(-1)[3] += 1e-12;
    }
    engine->audit_ties();
  });
  for (int r = 0; r < 4; ++r)
    EXPECT_EQ(errors[r], "[rank " + std::to_string(r) + " | stage " + std::to_string(r / 2) +
                             "] tied weight 'wte' has drifted: the copy on stage 1 replica 0 (rank 2) differs from "
                             "the copy on stage 0 replica 0 (rank 0)");
}

TEST(Topology, WorldThatIsNotPpTimesDpIsRefused) {
  auto errors = run_ranks(4, [&](Communicator& comm) {
    EngineOptions o;
    o.pp = 3;
    o.dp = 2;
    PipelineEngine e(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, o);
  });
  EXPECT_EQ(errors[1], "[rank 1] world size 4 does not match pp = 3 x dp = 2 = 6; start pp x dp ranks (tpipe run -n 6)");
  errors = run_ranks(4, [&](Communicator& comm) {
    EngineOptions o;
    o.dp = 3;
    PipelineEngine e(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, o);
  });
  EXPECT_EQ(errors[3], "[rank 3] world size 4 is not a multiple of dp = 3: start pp x dp ranks");
}

// Per-replica batches: each replica passes its own part; the result is the same as the global batch.
TEST(DataParallelInput, PerReplicaBatchesEqualTheGlobalBatch) {
  const Trace ref = reference_run(fidelity_model(), 14, 2);
  std::mutex mu;
  expect_ranks_ok(4, [&](Communicator& comm) {
    EngineOptions o;
    o.microbatches = 3;
    o.dp = 2;
    o.global_batch = false;
    o.input_chunking = fidelity_input_chunking();
    PipelineEngine e(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, o);
    for (int step = 0; step < 2; ++step) {
      const int replica = e.replica();
      auto part = [&](const Payload& p, const std::vector<Chunking>& spec) {
        return split_microbatches(p, 2, spec)[replica];
      };
      const auto r = e.train_batch(e.is_first_stage() ? part(fidelity_inputs(step, 14), fidelity_input_chunking()) : Payload{},
                                   e.is_last_stage() ? part(fidelity_targets(step, 14), {}) : Payload{});
      std::lock_guard<std::mutex> lock(mu);
      EXPECT_NEAR(r.loss, ref.losses[step], 1e-12 * ref.losses[step]);
    }
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [name, t] : e.named_parameters())
      EXPECT_LE((t - ref.weights.at(name)).abs().max().item<double>(), 1e-10 * ref.weights.at(name).abs().max().item<double>())
          << name;
  });
}

}  // namespace
}  // namespace tpipe::testing
