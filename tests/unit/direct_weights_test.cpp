// Linear weight gradients accumulated by one GEMM (src/direct_weights.h): the gradients equal
// autograd's (float64, to rounding) over several micro-batches, for every shape of Linear the
// models use; what autograd must see (hooks, unusual addmm) is left to it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "direct_weights.h"

namespace tpipe {
namespace {

using torch::autograd::Node;

struct Net {
  torch::nn::Linear a{nullptr}, b{nullptr};
  Net(bool bias, int seed) {
    torch::manual_seed(seed);
    a = torch::nn::Linear(torch::nn::LinearOptions(5, 7).bias(bias));
    b = torch::nn::Linear(torch::nn::LinearOptions(7, 3).bias(bias));
    a->to(torch::kDouble);
    b->to(torch::kDouble);
  }
  std::vector<at::Tensor> params() const {
    auto p = a->parameters();
    for (auto& t : b->parameters()) p.push_back(t);
    return p;
  }
  at::Tensor operator()(const at::Tensor& x) { return b->forward(torch::tanh(a->forward(x))); }
};

std::vector<Node*> graph_of(const at::Tensor& root) { return post_order({root.grad_fn().get()}); }

// Three micro-batches through two copies of one net: autograd on one, backward_direct on the
// other; the first micro-batch starts from undefined gradients, the others accumulate.
void expect_same_as_autograd(bool bias, std::vector<int64_t> shape, bool input_grad) {
  Net plain(bias, 3), direct(bias, 3);
  for (int mb = 0; mb < 3; ++mb) {
    torch::manual_seed(10 + mb);
    const at::Tensor x = torch::randn(shape, torch::kDouble);
    auto out_shape = shape;
    out_shape.back() = 3;
    const at::Tensor g = torch::randn(out_shape, torch::kDouble);
    const at::Tensor x1 = x.clone().requires_grad_(input_grad), x2 = x.clone().requires_grad_(input_grad);
    torch::autograd::backward({plain(x1)}, {g});
    const at::Tensor y = direct(x2);
    EXPECT_EQ(DirectWeights(graph_of(y), DirectWeights::When::Later).size(), 2u) << "both Linears taken over";
    const at::Tensor y2 = direct(x2);  // the graph above had its weight edges cut: a fresh one
    backward_direct({y2}, {g});
    if (input_grad) EXPECT_TRUE(torch::allclose(x1.grad(), x2.grad(), 1e-12, 0));
    const auto p1 = plain.params(), p2 = direct.params();
    ASSERT_EQ(p1.size(), p2.size());
    for (std::size_t i = 0; i < p1.size(); ++i) {
      ASSERT_TRUE(p2[i].grad().defined()) << i;
      EXPECT_TRUE(torch::allclose(p1[i].grad(), p2[i].grad(), 1e-12, 1e-14)) << "parameter " << i << ", mb " << mb;
      EXPECT_EQ(p1[i].grad().strides(), p2[i].grad().strides());
    }
  }
}

TEST(DirectWeights, LinearWithBiasMatchesAutograd) { expect_same_as_autograd(true, {4, 5}, true); }
TEST(DirectWeights, LinearWithoutBiasMatchesAutograd) { expect_same_as_autograd(false, {4, 5}, true); }
TEST(DirectWeights, LinearOnASequenceMatchesAutograd) { expect_same_as_autograd(true, {2, 3, 5}, true); }
TEST(DirectWeights, AFirstStageWhoseInputNeedsNoGradientMatchesAutograd) {
  expect_same_as_autograd(true, {4, 5}, false);
}

TEST(DirectWeights, AWeightUsedTwiceGetsBothContributions) {
  auto run = [](bool direct) {
    torch::manual_seed(4);
    torch::nn::Linear l(6, 6);
    l->to(torch::kDouble);
    const at::Tensor x = torch::randn({3, 6}, torch::kDouble);
    const at::Tensor y = l->forward(torch::relu(l->forward(x))).sum();
    if (direct) {
      backward_direct({y}, {});
    } else {
      y.backward();
    }
    return std::make_pair(l->weight.grad(), l->bias.grad());
  };
  const auto a = run(false), b = run(true);
  EXPECT_TRUE(torch::allclose(a.first, b.first, 1e-12, 1e-14));
  EXPECT_TRUE(torch::allclose(a.second, b.second, 1e-12, 1e-14));
}

TEST(DirectWeights, WhatAutogradMustSeeIsLeftToIt) {
  torch::manual_seed(6);
  torch::nn::Linear hooked(4, 4), plain(4, 4);
  hooked->to(torch::kDouble);
  plain->to(torch::kDouble);
  int calls = 0;
  hooked->weight.register_hook([&](const at::Tensor& g) {
    ++calls;
    return g * 2;
  });
  const at::Tensor x = torch::randn({2, 4}, torch::kDouble);
  const at::Tensor y = plain->forward(hooked->forward(x)).sum();
  // The hooked weight stays with autograd; its bias and the plain Linear are taken over.
  EXPECT_EQ(DirectWeights(graph_of(plain->forward(hooked->forward(x)).sum()), DirectWeights::When::Later).size(), 1u);
  backward_direct({y}, {});
  EXPECT_EQ(calls, 1);
  const at::Tensor gy = plain->weight.sum(0);  // d sum(plain(h)) / dh, per row of h
  EXPECT_TRUE(torch::allclose(hooked->weight.grad(), 2 * gy.unsqueeze(1) * x.sum(0).unsqueeze(0), 1e-12, 1e-14));

  // An addmm with alpha 2 is not a Linear: autograd keeps it.
  const at::Tensor w = torch::randn({4, 4}, torch::kDouble).requires_grad_();
  const at::Tensor z = at::addmm(torch::zeros({2, 4}, torch::kDouble), x, w.t(), 1, 2).sum();
  EXPECT_EQ(DirectWeights(graph_of(z), DirectWeights::When::Later).size(), 0u);
}

TEST(DirectWeights, LaterAccumulatesOnlyWhenAsked) {
  Net plain(true, 8), direct(true, 8);
  torch::manual_seed(2);
  const at::Tensor x = torch::randn({4, 5}, torch::kDouble);
  plain(x).sum().backward();
  const at::Tensor y = direct(x).sum();
  DirectWeights d(graph_of(y), DirectWeights::When::Later);
  torch::autograd::backward({y}, {}, /*keep_graph=*/true);
  for (const auto& p : direct.params()) EXPECT_FALSE(p.grad().defined()) << "accumulated before W";
  d.accumulate();
  const auto p1 = plain.params(), p2 = direct.params();
  for (std::size_t i = 0; i < p1.size(); ++i) EXPECT_TRUE(torch::allclose(p1[i].grad(), p2[i].grad(), 1e-12, 1e-14)) << i;
}

}  // namespace
}  // namespace tpipe
