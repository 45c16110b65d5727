// Data and loss for models trained from Python files (the TorchScript front door). The data is
// what a PyTorch user already has: a file written by Python's `torch.save` (the zip format, the
// default since PyTorch 1.6) of
//   (inputs, targets)                       or   {"inputs": inputs, "targets": targets}
// where inputs is a tensor or a tuple/list of tensors (a model taking several) and targets a
// tensor or a tuple/list of tensors. Every tensor's first dimension is the batch (`rows`). The
// loss is one of PyTorch's by name, or a scripted function in a TorchScript file, so the same
// data and loss drive both tpipe and the plain PyTorch loop it is checked against.
#pragma once

#include <cstdint>
#include <string>

#include "tpipe/engine.h"
#include "tpipe/microbatch.h"

namespace tpipe {

struct ScriptData {
  Payload inputs;
  Payload targets;
  std::int64_t rows = 0;  // dim 0 of every tensor above
};

// Reads a torch.save file. Throws ConfigError, one line naming the file and what was expected and
// found: a missing file, not a torch.save zip file, a top level that is neither a pair nor a dict
// with "inputs" and "targets", an entry that is not a tensor, no tensors, 0 rows, or tensors whose
// first dimensions differ (naming both, e.g. "targets" and "inputs[1]").
ScriptData load_script_data(const std::string& path);

// Batch k of size b: rows [k*b, (k+1)*b) modulo rows, wrapping around the end, so consecutive
// steps walk through the data as a plain PyTorch loop over slices would. b == 0 or b == rows
// gives the whole data (shared, not copied). Throws ConfigError for b < 0, k < 0 or b > rows.
ScriptData data_batch(const ScriptData& d, std::int64_t batch_size, std::int64_t k);

// The data with its floating-point tensors converted to `dtype` (integer ones, such as class
// targets or token ids, stay as they are).
ScriptData with_dtype(const ScriptData& d, at::ScalarType dtype);

// A loss of PyTorch by name, with PyTorch's mean reduction, over one output and one target tensor:
//   "cross_entropy"  logits [N,C] or [N,C,d...] with class targets [N] or [N,d...] (integers), or
//                    class probabilities of the logits' shape; logits [B,T,V] with targets [B,T]
//                    are flattened to [B*T,V] as a language model's (this reading wins when
//                    [B,T,V] could also be [N,C,d] with T == V)
//   "mse"            outputs and targets of the same shape (no silent broadcasting of [N,1]
//                    against [N]); targets converted to the outputs' dtype
//   "nll"            log-probabilities, shaped as for cross_entropy with class targets
// Every row of a micro-batch carries the same number of elements, so these means are means over
// rows, as the engine's weighting by rows requires. Throws ConfigError for an unknown name; the
// loss throws ShapeError naming itself and the shapes when they do not fit, or a class target
// outside [0, C) (PyTorch's ignore_index -100 is refused too: it would break the row weighting).
LossFn loss_by_name(const std::string& name);

// A loss scripted in a TorchScript module file: `method(outputs, targets)` returning a scalar
// tensor. Each of its two arguments is typed Tensor (one tensor), or a tuple or List[Tensor] (all
// of them). Throws ConfigError when the file is missing or not TorchScript, or has no such method
// or one with other arguments; the loss throws ShapeError when the method returns no scalar tensor.
LossFn loss_from_torchscript(const std::string& path, const std::string& method = "loss");

}  // namespace tpipe
