// Private to Stage: a Linear layer's weight gradient accumulated into .grad by one GEMM.
//
// Autograd computes a Linear's weight gradient as a new tensor, g^T x, and then adds it to the
// weight's .grad: with micro-batches every backward after the first pays for a fresh 4 MiB result
// (for a 1024 x 1024 weight) and a second pass over it. Here the gradient is accumulated where it
// is computed, .grad += g^T x as one GEMM with beta = 1 (addmm_): on W1's layers (128 rows,
// 1024 x 1024) that is 1.4 ms instead of 2.0.
//
// How: in the autograd graph of a micro-batch, a Linear is an addmm (with bias) or an mm (without)
// whose weight operand is W^T of a leaf:
//
//   addmm(bias, x, W^T) <- g          edges: bias -> AccumulateGrad,  x -> (activation path),
//                                             W^T -> TBackward -> AccumulateGrad(W)
//
// The bias and weight edges of such a node are cut, so autograd computes only the gradient of x;
// a hook on the node receives g, and the weight and bias gradients are accumulated from g and the
// x the node saved. A leaf with hooks of its own, a non-contiguous weight, or an addmm with
// alpha or beta other than 1 is left to autograd. The sums are the same; only the rounding of
// the float additions may differ.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

namespace torch::autograd {
struct Node;
}

namespace tpipe {

class DirectWeights {
 public:
  enum class When {
    Immediately,  // the hook accumulates as autograd runs the node (a backward that does it all)
    Later,        // the hook records g; accumulate() does the work (W of a split backward)
  };
  // Takes over the weight gradients of the Linear nodes among `nodes` (cuts their weight edges).
  DirectWeights(const std::vector<torch::autograd::Node*>& nodes, When when);
  ~DirectWeights();
  DirectWeights(const DirectWeights&) = delete;
  DirectWeights& operator=(const DirectWeights&) = delete;

  // Later: once autograd has run the nodes (the graph still held), accumulates their gradients.
  void accumulate();
  // Later turned into Immediately, before autograd runs the nodes (the hooks stay in the graph).
  void accumulate_immediately();

  std::size_t size() const { return linears_.size(); }

  struct Linear;

 private:
  std::vector<std::shared_ptr<Linear>> linears_;
  std::vector<std::shared_ptr<torch::autograd::Node>> nodes_;  // Later: held until accumulate()
};

// torch::autograd::backward(roots, seeds) with the Linear layers' weight gradients accumulated
// directly (empty seeds: the roots are scalar losses).
void backward_direct(const std::vector<at::Tensor>& roots, const std::vector<at::Tensor>& seeds);

// Every node reachable from `starts`, children before parents.
std::vector<torch::autograd::Node*> post_order(const std::vector<torch::autograd::Node*>& starts);

}  // namespace tpipe
