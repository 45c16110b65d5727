// Private to Stage: a micro-batch's backward in two parts, for zero-bubble schedules.
//
//   B  the gradient of the stage's inputs, which the previous stage waits for;
//   W  the gradient of the weights, which nobody waits for and so can fill idle time.
//
// B walks only the part of the autograd graph that leads to the inputs (the "activation path").
// Where a node of that path also feeds a weight (a Linear's addmm, which takes the activation
// and the weight), B records the gradient flowing into it. W restarts autograd at those nodes
// with the recorded gradients, restricted to the weights below them, so no activation gradient
// is computed twice:
//
//   loss <- lm_head(addmm) <- ... <- block0.mlp(addmm) <- input          (B walks this chain)
//               |                           |
//               +- W^T <- weight            +- W^T <- weight, bias       (W walks these)
//
// A graph where one weight hangs below two such nodes (a weight used twice on the stage) would
// be counted twice that way: it is not split; B then runs the whole backward and W nothing.
// A stage whose inputs need no gradient (the first) does nothing in B and everything in W.
//
// The Linear layers of the path are not restarted in W: B records the gradient flowing into them
// and W accumulates their weights' gradients directly (direct_weights.h), as every backward does.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

namespace tpipe {

class DirectWeights;

class SplitBackward {
 public:
  // Runs B: `roots` seeded by `seeds` (empty seeds: the roots are scalar losses). `inputs` are the
  // stage's input leaves that need a gradient; their .grad holds it afterwards.
  SplitBackward(const std::vector<at::Tensor>& roots, const std::vector<at::Tensor>& seeds,
                const std::vector<at::Tensor>& inputs, const std::vector<at::Tensor>& params);
  ~SplitBackward();
  SplitBackward(const SplitBackward&) = delete;
  SplitBackward& operator=(const SplitBackward&) = delete;

  // Runs W: accumulates the weights' gradients into their .grad. Once.
  void weights();

  bool split() const { return split_; }  // false: B did everything (or W does, for a first stage)

 private:
  struct Group;
  std::vector<at::Tensor> roots_, seeds_;
  std::vector<std::unique_ptr<Group>> groups_;
  std::unique_ptr<DirectWeights> direct_;  // the Linear layers of the activation path
  bool split_ = false;
  bool all_in_w_ = false;
};

}  // namespace tpipe
