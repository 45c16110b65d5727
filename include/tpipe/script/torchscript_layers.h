// Layers from a TorchScript file: a model written in PyTorch and saved with
// torch.jit.script(model).save(path) (or torch.jit.trace) becomes tpipe layers, one per top-level
// child, so a model nobody rewrote in C++ trains pipelined.
//
// Supported: a module whose forward does nothing but apply its direct children one after another,
// each exactly once, in attribute order (the order of assignment in __init__), each on the
// previous child's output -- an nn.Sequential, or for instance
//     def forward(self, x):
//         h, y = self.pair(self.norm(self.embed(x)))   # a child may return a tuple ...
//         return self.head(h, y)                       # ... that the next one takes unpacked
// This is checked on the saved forward graph; anything else there (arithmetic, a child called twice
// or out of order, a value skipping a child, control flow) is rejected. A traced module whose
// child returned its own input unchanged fails this check: tracing drops such outputs.
//
// Between children the payload is the flat list of tensors: a child's Tensor or tuple of tensors
// (nested tuples flattened) becomes the payload, and the next child's forward takes the payload's
// tensors as its arguments in order -- Tensor and Optional[Tensor] arguments take one tensor each,
// a Tuple argument (an nn.Sequential child taking a tuple) takes as many as its elements; trailing
// arguments with defaults may be left out. A child taking anything else (an int, a list, a dict)
// without a default, or returning anything but a tensor or a tuple of them, is rejected at load,
// and so is a weight shared by two children (tied weights): two layers would train it apart.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tpipe/layer.h"

namespace tpipe {

// The file's top-level children, in order, as layer specs named by their attribute names ("0",
// "1", ... for an nn.Sequential). A layer's parameters and buffers have names local to its child
// ("weight", "ln.bias") and are trained in place by autograd; train() switches the child's
// training flag (dropout, batch norm), and dropout draws from the process's CPU generator, as in
// PyTorch. The specs share the loaded file: each factory call deep-copies its child out of it, so
// every call gets parameters of its own; the file's weights stay in memory while any spec lives.
// Throws ConfigError: "cannot load TorchScript file PATH: <reason>" (missing, not TorchScript) or
// "cannot use TorchScript file PATH: <what is unsupported>" (naming the module type or the child).
// With `dtype`, each layer's floating-point parameters and buffers are converted to it (integer
// buffers, such as batch norm's counter, stay as they are).
std::vector<LayerSpec> layers_from_torchscript(const std::string& path,
                                               std::optional<at::ScalarType> dtype = std::nullopt);

// Writes the TorchScript file `path` again to `out` with the given parameters and buffers copied
// in (named "<child>.<local name>", i.e. a layer's name, a dot and its local name; values are
// converted to the file's dtype, or with `dtype` the floating-point ones are converted to it first,
// as layers_from_torchscript does). Entries not named keep the file's values. The file is written
// to a temporary next to `out` and renamed, so `out` is never half-written. Throws ConfigError
// naming a name the module lacks or a shape that differs, and the load errors above.
void export_torchscript(const std::string& path, const std::map<std::string, at::Tensor>& weights,
                        const std::string& out, std::optional<at::ScalarType> dtype = std::nullopt);

}  // namespace tpipe
