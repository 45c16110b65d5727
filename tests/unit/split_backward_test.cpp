// The B/W split of a stage's backward: B gives the input gradient and leaves the weights
// untouched; W then gives exactly the gradients one whole backward gives (bitwise: the same
// autograd nodes run on the same tensors). A weight used twice on the stage is not split, unless
// it is a Linear's (those W accumulates directly, direct_weights.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tpipe/stage.h"

namespace tpipe {
namespace {

std::vector<LayerPtr> layers(std::shared_ptr<torch::nn::Module> shared = nullptr) {
  torch::manual_seed(5);
  std::vector<LayerPtr> out;
  for (int i = 0; i < 3; ++i) {
    auto lin = (i == 2 && shared) ? std::dynamic_pointer_cast<torch::nn::LinearImpl>(shared)
                                  : torch::nn::Linear(6, 6).ptr();
    lin->to(torch::kDouble);
    out.push_back(tensor_layer(lin, [lin](const at::Tensor& x) { return torch::tanh(lin->forward(x)); }));
  }
  return out;
}

struct Outcome {
  Payload input_grads;
  std::vector<at::Tensor> grads_after_b, grads;
};

// A middle stage (its input needs a gradient): forward, backward (split or not), W.
Outcome run(std::vector<LayerPtr> ls, bool split) {
  Stage st(1, 3, std::move(ls), {"l0", "l1", "l2"});
  for (auto& p : st.parameters()) p.mutable_grad().reset();
  torch::manual_seed(9);
  const at::Tensor x = torch::randn({4, 6}, torch::kDouble), g = torch::randn({4, 6}, torch::kDouble);
  st.forward(0, {x}, true, {});
  Outcome r;
  r.input_grads = st.backward(0, {g}, {}, split);
  for (auto& p : st.parameters()) r.grads_after_b.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
  if (split) st.backward_weight(0, {});
  for (auto& p : st.parameters()) r.grads.push_back(p.grad().clone());
  EXPECT_EQ(st.stashed_bytes(), 0);
  return r;
}

TEST(SplitBackward, BGivesTheInputGradientAndWTheWeightGradientsOfOneBackward) {
  const Outcome whole = run(layers(), false), split = run(layers(), true);
  ASSERT_EQ(split.input_grads.size(), 1u);
  EXPECT_TRUE(torch::equal(split.input_grads[0], whole.input_grads[0]));
  for (const auto& g : split.grads_after_b) EXPECT_FALSE(g.defined()) << "B computed a weight gradient";
  ASSERT_EQ(split.grads.size(), whole.grads.size());
  for (std::size_t i = 0; i < whole.grads.size(); ++i) EXPECT_TRUE(torch::equal(split.grads[i], whole.grads[i])) << i;
}

// A Linear used twice on the stage splits: W accumulates its weights directly from both uses.
TEST(SplitBackward, ALinearUsedTwiceOnTheStageSplits) {
  torch::manual_seed(5);
  auto shared = torch::nn::Linear(6, 6).ptr();
  auto ls = layers(shared);
  ls[0] = ls[2];  // the same Linear first and last
  const Outcome twice_whole = run(ls, false);
  auto ls2 = layers(shared);
  ls2[0] = ls2[2];
  const Outcome twice_split = run(ls2, true);
  for (std::size_t i = 0; i < twice_whole.grads.size(); ++i) {
    EXPECT_FALSE(twice_split.grads_after_b[i].defined()) << "B computed a weight gradient";
    EXPECT_TRUE(torch::allclose(twice_split.grads[i], twice_whole.grads[i], 1e-13, 1e-15)) << i;
  }
  EXPECT_TRUE(torch::equal(twice_split.input_grads[0], twice_whole.input_grads[0]));
}

// Any other weight used twice would be counted twice by restarting autograd below each use: it is
// not split, B does everything.
TEST(SplitBackward, AnotherWeightUsedTwiceOnTheStageIsNotSplit) {
  auto make = [] {
    torch::manual_seed(5);
    auto scale = std::make_shared<torch::nn::Module>();
    const at::Tensor w = scale->register_parameter("w", torch::randn({6}, torch::kDouble));
    auto times = [w](const at::Tensor& x) { return torch::tanh(x * w); };
    auto ls = layers();
    ls[0] = tensor_layer(scale, times);
    ls[2] = ls[0];
    return ls;
  };
  const Outcome whole = run(make(), false), split = run(make(), true);
  ASSERT_EQ(split.grads.size(), whole.grads.size());
  for (std::size_t i = 0; i < whole.grads.size(); ++i) {
    EXPECT_TRUE(split.grads_after_b[i].defined()) << "not split: B did all";
    EXPECT_TRUE(torch::equal(split.grads[i], whole.grads[i])) << i;
  }
  EXPECT_TRUE(torch::equal(split.input_grads[0], whole.input_grads[0]));
}

TEST(SplitBackward, AFirstStageDoesEverythingInW) {
  Stage st(0, 2, layers(), {"l0", "l1", "l2"});
  const at::Tensor x = torch::randn({4, 6}, torch::kDouble), g = torch::randn({4, 6}, torch::kDouble);
  st.forward(0, {x}, true, {});
  const Payload in = st.backward(0, {g}, {}, true);
  EXPECT_FALSE(in[0].defined());
  for (auto& p : st.parameters()) EXPECT_FALSE(p.grad().defined());
  st.backward_weight(0, {});
  for (auto& p : st.parameters()) EXPECT_TRUE(p.grad().defined());
}

}  // namespace
}  // namespace tpipe

namespace tpipe {
namespace {

// No gradient flows through the micro-batch (its output does not need one): B and W do nothing.
TEST(SplitBackward, NothingToSplitIsFine) {
  std::vector<LayerPtr> ls{function_layer([](const Payload& in) { return Payload{in[0].detach() * 2}; })};
  Stage st(1, 3, std::move(ls), {"cut"});
  const at::Tensor x = torch::randn({4, 6}, torch::kDouble);
  st.forward(0, {x}, true, {});
  const Payload in = st.backward(0, {torch::ones({4, 6}, torch::kDouble)}, {}, true);
  EXPECT_FALSE(in[0].defined() && in[0].abs().sum().item<double>() != 0);
  st.backward_weight(0, {});
  EXPECT_EQ(st.stashed_bytes(), 0);
}

}  // namespace
}  // namespace tpipe
