// Measured memory (the counting allocator behind StepResult::activation_peak_bytes) on a model
// whose activations are known by construction: a chain of 128 maps x <- x W (W [64,64], float64),
// 64 per stage on 2 stages, micro-batches of 64 rows. Each map keeps exactly one new tensor for
// its backward, its output (u = 64 x 64 x 8 bytes), so a micro-batch in flight holds 64u on a
// stage (the last stage also its received input, 1u). What else is counted is a few u at a time:
// the gradient being passed down a backward and the one it came from, a forward's output not
// yet kept, and gradient messages that arrived before their backward (at most one per
// micro-batch).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <mutex>
#include <string>

#include "ranks.h"
#include "tpipe/engine.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/simulator.h"

namespace tpipe::testing {
namespace {

constexpr int kDim = 64, kRows = 64, kPerStage = 64, kMicrobatches = 8;
constexpr double kUnit = kDim * kRows * 8.0;  // bytes of one activation [64,64] float64

struct MapImpl : torch::nn::Module {
  MapImpl() { w = register_parameter("w", torch::eye(kDim, torch::kDouble) * 0.99); }
  at::Tensor w;
};

std::vector<LayerSpec> chain() {
  std::vector<LayerSpec> specs;
  for (int i = 0; i < 2 * kPerStage; ++i)
    specs.push_back({"map" + std::to_string(i), [] {
                       auto m = std::make_shared<MapImpl>();
                       return tensor_layer(m, [m](const at::Tensor& x) { return x.mm(m->w); },
                                           std::vector<at::Generator>{});
                     }});
  return specs;
}

// Measured (activation peak, memory peak) per rank of one training step.
std::vector<std::pair<double, double>> measure(const std::string& schedule, const std::string& checkpoint) {
  std::vector<std::pair<double, double>> out(2);
  std::mutex mu;
  expect_ranks_ok(2, [&](Communicator& comm) {
    EngineOptions o;
    o.schedule = schedule;
    o.microbatches = kMicrobatches;
    o.checkpoint = checkpoint;
    PipelineEngine e(chain(), [](const Payload& y, const Payload& t) { return at::mse_loss(y[0], t[0]); },
                     [](std::vector<at::Tensor> p) { return std::make_unique<torch::optim::SGD>(p, 0.01); }, comm, o);
    const auto x = torch::ones({kRows * kMicrobatches, kDim}, torch::kDouble);
    const auto r = e.train_batch({x}, {x});
    std::lock_guard<std::mutex> lock(mu);
    out[comm.rank()] = {r.activation_peak_bytes / kUnit, r.memory_peak_bytes / kUnit};
  });
  return out;
}

// Measured `units` against what the model keeps: all of it counted, and no more than the few
// units above besides.
void expect_kept(double units, double kept, const std::string& what) {
  EXPECT_GE(units, kept) << what;
  EXPECT_LE(units, kept + kMicrobatches + 4) << what;
}

// The same, and within 10 %.
void expect_about(double units, double kept, const std::string& what) {
  expect_kept(units, kept, what);
  EXPECT_LE(units, kept * 1.10) << what;
}

TEST(MeasuredMemory, ActivationPeaksAreWhatTheModelKeeps) {
  const auto gpipe = measure("gpipe", "never");
  expect_about(gpipe[0].first, kMicrobatches * kPerStage, "gpipe stage 0");
  expect_about(gpipe[1].first, kMicrobatches * (kPerStage + 1), "gpipe stage 1");
  const auto one_f = measure("1f1b", "never");
  expect_about(one_f[0].first, 2 * kPerStage, "1f1b stage 0: p = 2 micro-batches in flight");
  expect_about(one_f[1].first, kPerStage + 1, "1f1b stage 1: one in flight");
  // Everything counted: the weights (32 maps, u each) besides the activations (at the activation
  // peak, the start of the first backward, no gradient exists yet).
  for (const auto& run : {gpipe, one_f})
    for (const auto& [activations, memory] : run) EXPECT_GE(memory, activations + kPerStage);
}

// The simulator's peak in-flight micro-batches of stage 0 (8 under GPipe, 2 under 1F1B) predict
// the ratio of the measured peaks.
TEST(MeasuredMemory, OneFOneBAgainstGPipeInTheRatioTheSimulatorPredicts) {
  const double predicted = static_cast<double>(simulate(make_schedule("gpipe", 2, kMicrobatches)).peak_inflight_per_rank[0]) /
                           simulate(make_schedule("1f1b", 2, kMicrobatches)).peak_inflight_per_rank[0];
  EXPECT_EQ(predicted, 4.0);
  const double measured = measure("gpipe", "never")[0].first / measure("1f1b", "never")[0].first;
  EXPECT_NEAR(measured, predicted, 0.1 * predicted);
}

// Checkpointed micro-batches keep only their stage input: stage 1 holds the 8 received inputs and,
// during a backward, one micro-batch recomputed; stage 0's inputs are the caller's (not counted).
// except_last under GPipe keeps the last micro-batch whole besides.
TEST(MeasuredMemory, CheckpointingKeepsOnlyTheStageInputs) {
  const auto always = measure("gpipe", "always");
  expect_kept(always[0].first, kPerStage, "always, stage 0: one recomputed micro-batch");
  expect_kept(always[1].first, kMicrobatches + kPerStage, "always, stage 1: inputs and one recomputed");
  const auto except_last = measure("gpipe", "except_last");
  expect_kept(except_last[0].first, 2 * kPerStage, "except_last, stage 0");
  expect_kept(except_last[1].first, kMicrobatches + 2 * kPerStage, "except_last, stage 1");
}

}  // namespace
}  // namespace tpipe::testing
