// The "profile" partition: rank 0 measures every layer on a sample micro-batch and every rank cuts
// the same way. On a model with two heavy layers among light ones, the measured cut puts them on
// different stages and its slowest stage is never slower than the uniform cut's; the step
// computes the same thing.
#include <gtest/gtest.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <mutex>

#include "ranks.h"
#include "tpipe/engine.h"
#include "tpipe/profile.h"

namespace tpipe::testing {
namespace {

constexpr int kDim = 32, kRows = 256;

// Weights from a generator of the layer's own (ranks are threads sharing the global one).
struct MlpImpl : torch::nn::Module {
  MlpImpl(int hidden, int seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    up = register_parameter("up", torch::randn({kDim, hidden}, gen, torch::kDouble) / std::sqrt(kDim));
    down = register_parameter("down", torch::randn({hidden, kDim}, gen, torch::kDouble) / std::sqrt(hidden));
  }
  at::Tensor up, down;
};

// 8 layers x <- tanh(x Up) Down; layers 1 and 2 are 64 times wider inside than the others, so
// that each costs far more than the rest (on 256 rows the narrow ones are mostly fixed cost):
// uniform's first stage holds both, a measured cut puts them apart and halves the slowest stage,
// a margin no timing noise closes.
std::vector<LayerSpec> unbalanced() {
  std::vector<LayerSpec> specs;
  for (int i = 0; i < 8; ++i) {
    const int hidden = i == 1 || i == 2 ? 64 * kDim : kDim;
    specs.push_back({"mlp" + std::to_string(i), [hidden, i] {
                       auto m = std::make_shared<MlpImpl>(hidden, i);
                       return tensor_layer(m, [m](const at::Tensor& x) { return torch::tanh(x.mm(m->up)).mm(m->down); },
                                           std::vector<at::Generator>{});
                     }});
  }
  return specs;
}

struct Outcome {
  std::vector<int> sizes;
  double loss = 0;
};

Outcome train(const std::string& partition, int ranks) {
  Outcome run;
  std::vector<std::vector<int>> cuts(ranks);
  std::mutex mu;
  const auto x = torch::randn({4 * kRows, kDim}, at::detail::createCPUGenerator(99), torch::kDouble);
  expect_ranks_ok(ranks, [&](Communicator& comm) {
    EngineOptions o;
    o.schedule = "1f1b";
    o.microbatches = 4;
    o.partition = partition;
    if (comm.rank() == 0) o.profile_sample = {x.narrow(0, 0, kRows)};
    PipelineEngine e(unbalanced(), [](const Payload& y, const Payload& t) { return at::mse_loss(y[0], t[0]); },
                     [](std::vector<at::Tensor> p) { return std::make_unique<torch::optim::SGD>(p, 0.1); }, comm, o);
    const auto r = e.train_batch({x}, {x});
    std::lock_guard<std::mutex> lock(mu);
    for (int s = 0; s < e.num_stages(); ++s) cuts[comm.rank()].push_back(e.partition().size(s));
    run.loss = r.loss;
  });
  for (int r = 1; r < ranks; ++r) EXPECT_EQ(cuts[r], cuts[0]) << "every rank cuts alike";
  run.sizes = cuts[0];
  return run;
}

TEST(ProfilePartition, PutsTheHeavyLayersApartAndNeverLosesToUniform) {
  const Outcome uniform = train("uniform", 2);
  const Outcome profiled = train("profile", 2);
  EXPECT_EQ(uniform.sizes, (std::vector<int>{4, 4}));
  EXPECT_EQ(profiled.sizes, (std::vector<int>{2, 6})) << "the heavy layers 1 and 2 on different stages";
  EXPECT_NEAR(profiled.loss, uniform.loss, 1e-12 * uniform.loss) << "a cut changes no arithmetic";

  const auto facts = profile_layers(unbalanced(), {torch::randn({kRows, kDim}, torch::kDouble)});
  std::vector<double> cost;
  for (const auto& f : facts) cost.push_back(f.forward_s + f.backward_s);
  auto slowest = [&](const std::vector<int>& sizes) {
    const auto c = stage_costs(partition_explicit(sizes, 8), cost);
    return *std::max_element(c.begin(), c.end());
  };
  EXPECT_LE(slowest(profiled.sizes), slowest(uniform.sizes));
}

TEST(ProfilePartition, WithoutASampleEveryRankSaysSo) {
  const auto errors = run_ranks(2, [&](Communicator& comm) {
    EngineOptions o;
    o.partition = "profile";
    PipelineEngine e(unbalanced(), [](const Payload& y, const Payload& t) { return at::mse_loss(y[0], t[0]); },
                     [](std::vector<at::Tensor> p) { return std::make_unique<torch::optim::SGD>(p, 0.1); }, comm, o);
  });
  for (const auto& e : errors)
    EXPECT_NE(e.find("rank 0 could not profile the model: partition 'profile' needs a sample micro-batch"),
              std::string::npos)
        << e;
}

}  // namespace
}  // namespace tpipe::testing
