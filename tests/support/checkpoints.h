// Reading a checkpoint back in tests.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace tpipe::testing {

// Every tensor of the checkpoint in `dir` except the generator states, as "<file>:<name>".
std::map<std::string, at::Tensor> checkpoint_tensors(const std::string& dir);

}  // namespace tpipe::testing
