// Private to the checkpoint code: a parameter's optimizer state as named tensors and back, for
// LibTorch's optimizers (SGD, Adam, AdamW, Adagrad, RMSprop). LibTorch keys state by the
// parameter's TensorImpl address and saves it by position; here it is keyed by the parameter's
// name, so it moves with the parameter to whichever rank holds it after a reshard.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "tpipe/checkpoint/tensor_file.h"

namespace torch::optim {
class Optimizer;
}

namespace tpipe::checkpoint {

// "SGD", "Adam", "AdamW", "Adagrad", "RMSprop"; "" without an optimizer. Throws ConfigError for
// another optimizer (its state cannot be saved by name).
std::string optimizer_kind(const torch::optim::Optimizer* opt);

// The state of `param` as ("<prefix><field>", tensor) pairs (the step count as a 0-dim int64
// tensor); empty when the optimizer holds none for it yet.
NamedTensors optimizer_state(const torch::optim::Optimizer& opt, const at::Tensor& param, const std::string& prefix);

// Checks that `fields` (field name -> tensor) is a complete state of `kind` for `param`; returns
// "" or what is wrong ("exp_avg is Float [3], the parameter Float [4]").
std::string check_optimizer_state(const std::string& kind, const at::Tensor& param,
                                  const std::map<std::string, at::Tensor>& fields);

// Replaces the state of `param` by `fields` (copied), or removes it when `fields` is empty.
void set_optimizer_state(torch::optim::Optimizer& opt, const at::Tensor& param,
                         const std::map<std::string, at::Tensor>& fields);

}  // namespace tpipe::checkpoint
