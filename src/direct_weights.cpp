// Linear weight gradients accumulated by one GEMM each (see direct_weights.h).
#include "direct_weights.h"

#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/functions/accumulate_grad.h>
#include <torch/csrc/autograd/generated/Functions.h>

#include <unordered_set>

namespace tpipe {

using torch::autograd::AccumulateGrad;
using torch::autograd::Edge;
using torch::autograd::Node;
using torch::autograd::variable_list;
namespace generated = torch::autograd::generated;

std::vector<Node*> post_order(const std::vector<Node*>& starts) {
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, std::size_t>> stack;
  for (Node* s : starts) {
    if (!s || !seen.insert(s).second) continue;
    stack.emplace_back(s, 0);
    while (!stack.empty()) {
      auto& [n, i] = stack.back();
      if (i < n->next_edges().size()) {
        Node* child = n->next_edges()[i++].function.get();
        if (child && seen.insert(child).second) stack.emplace_back(child, 0);
        continue;
      }
      order.push_back(n);
      stack.pop_back();
    }
  }
  return order;
}

struct DirectWeights::Linear {
  Node* node = nullptr;     // the addmm or mm (which owns the hook that owns this)
  at::Tensor weight, bias;  // the leaves taken over (bias undefined: none, or left to autograd)
  bool immediate = true;
  at::Tensor grad;          // Later: the gradient that flowed into the node

  // The activation the node multiplied by W^T.
  at::Tensor input() const {
    if (auto* a = dynamic_cast<generated::AddmmBackward0*>(node)) return a->mat1_.unpack();
    return dynamic_cast<generated::MmBackward0*>(node)->self_.unpack();
  }

  void take(const at::Tensor& g) {
    if (!g.defined()) return;
    if (immediate) return run(g);
    grad = g;
  }

  void run(const at::Tensor& g) const {
    at::NoGradGuard no_grad;
    const at::Tensor x = input();
    at::Tensor& wg = weight.mutable_grad();
    if (wg.defined()) {
      wg.addmm_(g.t(), x);
    } else {
      wg = at::mm(g.t(), x);
    }
    if (!bias.defined()) return;
    at::Tensor& bg = bias.mutable_grad();
    const at::Tensor sum = at::sum_to(g, bias.sizes());
    if (bg.defined()) {
      bg.add_(sum);
    } else {
      bg = sum.is_same(g) ? sum.clone() : sum;  // never the gradient autograd passed on
    }
  }
};

namespace {

struct Hook : torch::autograd::FunctionPreHook {
  explicit Hook(std::shared_ptr<DirectWeights::Linear> l) : linear(std::move(l)) {}
  variable_list operator()(const variable_list& grads) override {
    if (!grads.empty()) linear->take(grads[0]);
    return grads;
  }
  std::shared_ptr<DirectWeights::Linear> linear;
};

// The leaf a gradient edge accumulates into, when no hook watches it.
at::Tensor plain_leaf(const Edge& e) {
  auto* acc = dynamic_cast<AccumulateGrad*>(e.function.get());
  if (!acc || !acc->pre_hooks().empty() || !acc->post_hooks().empty()) return {};
  const at::Tensor& v = acc->variable;
  if (!v.defined() || !v.requires_grad() || v.layout() != at::kStrided || !v.is_contiguous()) return {};
  if (!torch::autograd::impl::hooks(v).empty()) return {};  // the leaf's own hooks run in AccumulateGrad
  return v;
}

// The weight W of an edge into W^T (TBackward0 straight into W's accumulator), a 2-D leaf.
at::Tensor transposed_leaf(const Edge& e) {
  auto* t = dynamic_cast<generated::TBackward0*>(e.function.get());
  if (!t || t->next_edges().size() != 1 || !t->pre_hooks().empty() || !t->post_hooks().empty()) return {};
  at::Tensor w = plain_leaf(t->next_edge(0));
  return w.defined() && w.dim() == 2 ? w : at::Tensor();
}

}  // namespace

DirectWeights::DirectWeights(const std::vector<Node*>& nodes, When when) {
  for (Node* n : nodes) {
    int weight_edge = -1, bias_edge = -1;
    if (auto* a = dynamic_cast<generated::AddmmBackward0*>(n)) {
      if (!a->alpha.equal(1) || !a->beta.equal(1) || n->next_edges().size() != 3) continue;
      weight_edge = 2;
      bias_edge = 0;
    } else if (dynamic_cast<generated::MmBackward0*>(n)) {
      if (n->next_edges().size() != 2) continue;
      weight_edge = 1;
    } else {
      continue;
    }
    auto l = std::make_shared<Linear>();
    l->weight = transposed_leaf(n->next_edge(weight_edge));
    if (!l->weight.defined()) continue;
    if (bias_edge >= 0) l->bias = plain_leaf(n->next_edge(bias_edge));
    l->node = n;  // it kept x: the weight edge exists only where the weight needed a gradient
    l->immediate = when == When::Immediately;
    // Emptied in place: set_next_edge refuses a node that has parents (removing a child keeps
    // the node's topological number valid).
    n->next_edges()[weight_edge] = Edge();
    if (l->bias.defined()) n->next_edges()[bias_edge] = Edge();
    n->add_pre_hook(std::make_unique<Hook>(l));
    linears_.push_back(std::move(l));
    if (when == When::Later) nodes_.push_back(n->shared_from_this());
  }
}

DirectWeights::~DirectWeights() = default;

void DirectWeights::accumulate() {
  for (auto& l : linears_) {
    if (l->grad.defined()) l->run(l->grad);
    l->grad.reset();
  }
  linears_.clear();
  nodes_.clear();
}

void DirectWeights::accumulate_immediately() {
  for (auto& l : linears_) l->immediate = true;
  linears_.clear();
  nodes_.clear();
}

void backward_direct(const std::vector<at::Tensor>& roots, const std::vector<at::Tensor>& seeds) {
  std::vector<Node*> starts;
  for (const auto& r : roots) starts.push_back(r.grad_fn().get());
  DirectWeights direct(post_order(starts), DirectWeights::When::Immediately);
  torch::autograd::backward(roots, seeds);
}

}  // namespace tpipe
