// The B/W split of a backward (see split_backward.h).
#include "split_backward.h"

#include "direct_weights.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace tpipe {

using torch::autograd::Edge;
using torch::autograd::Node;
using torch::autograd::variable_list;

// A node of the activation path that feeds weights, the gradient B saw flowing into it, and the
// weights below it.
struct SplitBackward::Group {
  std::shared_ptr<Node> node;
  std::shared_ptr<variable_list> grads = std::make_shared<variable_list>();
  std::vector<Edge> weights;
};

namespace {

// Records the gradients flowing into a node when autograd runs it.
struct Capture : torch::autograd::FunctionPreHook {
  explicit Capture(std::shared_ptr<variable_list> into) : into_(std::move(into)) {}
  variable_list operator()(const variable_list& grads) override {
    *into_ = grads;
    return grads;
  }
  std::shared_ptr<variable_list> into_;
};

std::shared_ptr<Node> accumulator(const at::Tensor& t) { return torch::autograd::impl::try_get_grad_accumulator(t); }

}  // namespace

SplitBackward::SplitBackward(const std::vector<at::Tensor>& roots, const std::vector<at::Tensor>& seeds,
                             const std::vector<at::Tensor>& inputs, const std::vector<at::Tensor>& params)
    : roots_(roots), seeds_(seeds) {
  if (roots.empty()) return;  // no gradient flows through this micro-batch: nothing to split
  std::vector<at::Tensor> wanted;  // the inputs that are in the graph
  std::unordered_set<Node*> input_nodes;
  for (const auto& t : inputs)
    if (auto acc = accumulator(t)) wanted.push_back(t), input_nodes.insert(acc.get());
  std::unordered_map<Node*, at::Tensor> param_of;
  for (const auto& p : params)
    if (auto acc = accumulator(p)) param_of[acc.get()] = p;

  std::vector<Node*> starts;
  for (const auto& r : roots) starts.push_back(r.grad_fn().get());
  const std::vector<Node*> order = post_order(starts);

  // The activation path: nodes from which an input is reachable.
  std::unordered_set<Node*> path;
  for (Node* n : order) {
    bool reaches = input_nodes.count(n) > 0;
    for (const auto& e : n->next_edges()) reaches = reaches || (e.function && path.count(e.function.get()));
    if (reaches) path.insert(n);
  }
  if (path.empty()) {  // nothing in B: W runs the whole backward
    all_in_w_ = split_ = true;
    return;
  }
  // The Linear layers on the path: B records what flows into them, W accumulates their weights.
  std::vector<Node*> on_path;
  for (Node* n : order)
    if (path.count(n)) on_path.push_back(n);
  direct_ = std::make_unique<DirectWeights>(on_path, DirectWeights::When::Later);
  // The weights below each path node, through nodes off the path.
  std::map<Node*, int> owners;  // weight accumulator -> how many path nodes reach it
  for (Node* n : order) {
    if (!path.count(n) || input_nodes.count(n)) continue;
    std::vector<Node*> off;
    for (const auto& e : n->next_edges())
      if (e.function && !path.count(e.function.get())) off.push_back(e.function.get());
    auto group = std::make_unique<Group>();
    for (Node* below : post_order(off))
      if (auto it = param_of.find(below); it != param_of.end()) {
        group->weights.push_back(torch::autograd::impl::gradient_edge(it->second));
        ++owners[below];
      }
    if (group->weights.empty()) continue;
    group->node = n->shared_from_this();
    groups_.push_back(std::move(group));
  }
  split_ = true;
  for (const auto& [acc, count] : owners) split_ = split_ && count == 1;
  if (!split_) {  // a weight used twice on this stage: no split, B does it all
    groups_.clear();
    direct_->accumulate_immediately();
    direct_.reset();
    backward_direct(roots, seeds);
    return;
  }
  for (auto& g : groups_) g->node->add_pre_hook(std::make_unique<Capture>(g->grads));
  torch::autograd::backward(roots, seeds, /*retain_graph=*/true, /*create_graph=*/false, wanted);
}

SplitBackward::~SplitBackward() = default;

void SplitBackward::weights() {
  if (!split_) return;
  if (all_in_w_) {
    backward_direct(roots_, seeds_);
  } else {
    direct_->accumulate();
    auto& engine = torch::autograd::Engine::get_default_engine();
    for (auto& g : groups_) {
      std::vector<Edge> roots;
      variable_list grads;
      for (std::size_t i = 0; i < g->grads->size(); ++i)
        if ((*g->grads)[i].defined()) {
          roots.emplace_back(g->node, static_cast<uint32_t>(i));
          grads.push_back((*g->grads)[i]);
        }
      if (!roots.empty()) engine.execute(roots, grads, /*keep_graph=*/true, /*create_graph=*/false,
                                         /*accumulate_grad=*/true, g->weights);
    }
  }
  groups_.clear();
  direct_.reset();
  roots_.clear();
  seeds_.clear();
  split_ = false;
}

}  // namespace tpipe
