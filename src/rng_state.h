// Private to Stage: the random state a checkpointed micro-batch's forward started from, so its
// recomputation before the backward draws the same numbers (dropout masks) as the forward did.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <vector>

namespace tpipe {

struct RngStates {
  std::vector<at::Generator> generators;
  std::vector<at::Tensor> states;  // one per generator
};

// The current states of `generators`.
RngStates capture_rng(const std::vector<at::Generator>& generators);

// Puts the saved states into their generators for its lifetime, then gives each generator back
// the state it had, so replaying a forward leaves the random streams where they were.
class RngReplay {
 public:
  explicit RngReplay(const RngStates& saved);
  ~RngReplay();
  RngReplay(const RngReplay&) = delete;
  RngReplay& operator=(const RngReplay&) = delete;

 private:
  RngStates current_;
};

}  // namespace tpipe
